import { describe, expect, it } from "vitest";
import { chooseRevision, splitReplicas, trafficSplit } from "../src/traffic.js";

const live = { id: "11111111-1111-4111-8111-111111111111", version: 4 };
const canary = { id: "22222222-2222-4222-8222-222222222222", version: 5 };

/** A seeded generator (mulberry32): the split test is exact and repeatable, not probabilistic. */
function seeded(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("chooseRevision", () => {
  it("sends everything to the live revision without a canary", () => {
    for (let i = 0; i < 100; i++)
      expect(chooseRevision(live, null)).toEqual({ revision: live, pinned: false, canary: false });
  });

  it("splits by weight within statistical bounds over a few thousand requests", () => {
    const random = seeded(7);
    let toCanary = 0;
    const n = 4000;
    for (let i = 0; i < n; i++) {
      const c = chooseRevision(live, { revision: canary, percent: 10 }, undefined, random);
      if ("revision" in c && c.canary) toCanary++;
    }
    // 10% of 4000 = 400, standard deviation ~19: 5 sigma either side.
    expect(toCanary).toBeGreaterThan(400 - 95);
    expect(toCanary).toBeLessThan(400 + 95);
  });

  it("honours the boundaries: 0% never, 100% always", () => {
    expect(chooseRevision(live, { revision: canary, percent: 0 }, null, () => 0)).toMatchObject({
      canary: false,
    });
    expect(chooseRevision(live, { revision: canary, percent: 100 }, null, () => 0.9999)).toMatchObject({
      canary: true,
    });
    expect(chooseRevision(live, { revision: canary, percent: 10 }, null, () => 0.1)).toMatchObject({
      canary: false,
    });
    expect(chooseRevision(live, { revision: canary, percent: 10 }, null, () => 0.0999)).toMatchObject({
      canary: true,
    });
  });

  it("pins by version (with or without 'v') or by id, whatever the weights", () => {
    const split = { revision: canary, percent: 0 };
    expect(chooseRevision(live, split, "5")).toEqual({ revision: canary, pinned: true, canary: true });
    expect(chooseRevision(live, split, "v5")).toEqual({ revision: canary, pinned: true, canary: true });
    expect(chooseRevision(live, { revision: canary, percent: 100 }, live.id)).toEqual({
      revision: live,
      pinned: true,
      canary: false,
    });
    expect(chooseRevision(live, split, " ")).toMatchObject({ pinned: false });
  });

  it("refuses a pin to a revision that is not serving instead of falling back", () => {
    const c = chooseRevision(live, null, "5");
    expect(c).toMatchObject({ error: "NOT_SERVING" });
    expect("message" in c && c.message).toContain("serving: 4");
    expect(chooseRevision(live, { revision: canary, percent: 50 }, "3")).toMatchObject({
      error: "NOT_SERVING",
    });
  });
});

describe("splitReplicas", () => {
  it("gives the canary its share and keeps at least one replica on each side", () => {
    expect(splitReplicas(10, 10)).toEqual({ live: 9, canary: 1 });
    expect(splitReplicas(10, 50)).toEqual({ live: 5, canary: 5 });
    expect(splitReplicas(4, 1)).toEqual({ live: 4, canary: 1 });
    expect(splitReplicas(1, 10)).toEqual({ live: 1, canary: 1 });
    expect(splitReplicas(3, 0)).toEqual({ live: 3, canary: 1 });
    expect(splitReplicas(3, 100)).toEqual({ live: 1, canary: 3 });
    expect(splitReplicas(0, 50)).toEqual({ live: 0, canary: 0 });
  });
});

describe("trafficSplit schema", () => {
  it("accepts a canary between 0 and 100 with at most one decimal", () => {
    const ok = { canaryRevisionId: canary.id, canaryPercent: 12.5, startedAt: new Date().toISOString() };
    expect(trafficSplit.parse(ok)).toEqual(ok);
    for (const canaryPercent of [-1, 101, 1.25])
      expect(trafficSplit.safeParse({ ...ok, canaryPercent }).success).toBe(false);
    expect(trafficSplit.safeParse({ ...ok, extra: 1 }).success).toBe(false);
  });
});
