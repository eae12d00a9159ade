import { redisKeys } from "@tessera/core";
import { connect, plans, usageHourly } from "@tessera/db";
import { createTestDatabase, type TestDatabase, testRedisPrefix } from "@tessera/db/testing";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { OrgAdmission, requestsThisMinute } from "../src/index.js";
import { seedOrg } from "./fixtures.js";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";

let tdb: TestDatabase;
let redis: Redis;
beforeAll(async () => {
  redis = new Redis(REDIS_URL, {
    disableClientInfo: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
  });
  tdb = await createTestDatabase("admission");
  // A tight free plan so the limits are reached in a few requests.
  await tdb.db
    .insert(plans)
    .values({ id: "free", name: "Free", limits: { requestsPerMinute: 3, monthlyRequests: 10 }, prices: {} });
});
afterAll(async () => {
  await tdb?.drop();
  redis?.disconnect();
});

/** An injected time at second 10 of the current minute, so no test straddles a minute boundary. */
function minuteStart(): Date {
  const t = new Date();
  t.setUTCSeconds(10, 0);
  return t;
}

describe("gateway admission over cached billing state", () => {
  it("admits until the per-minute rate, then RATE_LIMITED until the next minute", async () => {
    const a = await seedOrg(tdb.db, "adm-rate");
    const gate = new OrgAdmission(tdb.db, { refreshMs: 3_600_000 });
    const t0 = new Date();
    t0.setUTCSeconds(10, 0);
    // Not loaded yet: admitted while the state loads (the data plane never waits on Postgres).
    expect(gate.admit(a.org.id, t0)).toEqual({ ok: true });
    await gate.settled();
    expect(gate.admit(a.org.id, t0)).toEqual({ ok: true });
    expect(gate.admit(a.org.id, t0)).toEqual({ ok: true });
    expect(gate.admit(a.org.id, t0)).toMatchObject({ ok: false, code: "RATE_LIMITED", retryAfterS: 50 });
    expect(gate.admit(a.org.id, new Date(t0.getTime() + 60_000))).toEqual({ ok: true });
  });

  it("answers PAYMENT_REQUIRED once the month's requests, rolled up plus admitted since, reach the plan", async () => {
    const a = await seedOrg(tdb.db, "adm-month");
    await tdb.db
      .insert(usageHourly)
      .values({ orgId: a.org.id, deploymentId: a.deployment.id, hour: new Date(), requests: 8 });
    const gate = new OrgAdmission(tdb.db, { refreshMs: 3_600_000 });
    const t0 = new Date();
    gate.admit(a.org.id, t0);
    await gate.settled();
    // 8 rolled up; 1 admitted before the load finished does not count (it reset), 2 more fit.
    expect(gate.admit(a.org.id, t0)).toEqual({ ok: true });
    expect(gate.admit(a.org.id, new Date(t0.getTime() + 60_000))).toEqual({ ok: true });
    expect(gate.admit(a.org.id, new Date(t0.getTime() + 120_000))).toMatchObject({
      ok: false,
      code: "PAYMENT_REQUIRED",
    });
  });

  it("keeps admitting when Postgres is unreachable, logging why", async () => {
    const down = connect("postgres://postgres@127.0.0.1:1/nowhere", 1);
    const warnings: string[] = [];
    const gate = new OrgAdmission(down.db, { log: (_l, msg) => warnings.push(msg) });
    expect(gate.admit("00000000-0000-4000-8000-000000000001")).toEqual({ ok: true });
    await gate.settled();
    expect(gate.admit("00000000-0000-4000-8000-000000000001")).toEqual({ ok: true });
    expect(warnings).toEqual(["billing state not loaded; admitting on the last known state"]);
    await down.close();
  });
});

describe("per-minute counts shared by every gateway through Redis", () => {
  it("counts the shared total read back, never less than this process's own flushed part, plus what is unflushed", () => {
    expect(requestsThisMinute({ inMinute: 0, flushed: 0, shared: 0 })).toBe(0);
    // Other gateways admitted 5 of the 7 read back; this one admitted 2 more since.
    expect(requestsThisMinute({ inMinute: 4, flushed: 2, shared: 7 })).toBe(9);
    // The key vanished (Redis restarted): this process's own flushed requests still count.
    expect(requestsThisMinute({ inMinute: 4, flushed: 3, shared: 0 })).toBe(4);
  });

  it("keeps two gateways' admissions together within the plan's rate once their counts are flushed", async () => {
    const a = await seedOrg(tdb.db, "adm-shared");
    const prefix = testRedisPrefix("admission");
    // Long flush intervals: this test flushes by hand, so each step sees exactly the counts it expects.
    const shared = { redis, prefix, flushMs: 3_600_000 };
    const one = new OrgAdmission(tdb.db, { refreshMs: 3_600_000, shared });
    const two = new OrgAdmission(tdb.db, { refreshMs: 3_600_000, shared });
    const t0 = minuteStart();
    const flushBoth = async () => {
      await one.flush(t0);
      await two.flush(t0);
      await one.flush(t0);
    };
    try {
      expect(one.admit(a.org.id, t0)).toEqual({ ok: true });
      expect(two.admit(a.org.id, t0)).toEqual({ ok: true });
      await Promise.all([one.settled(), two.settled()]);
      await flushBoth();
      // 2 of 3 used across both: one more fits, on either gateway.
      expect(one.admit(a.org.id, t0)).toEqual({ ok: true });
      await flushBoth();
      expect(two.admit(a.org.id, t0)).toMatchObject({ ok: false, code: "RATE_LIMITED" });
      expect(one.admit(a.org.id, t0)).toMatchObject({ ok: false, code: "RATE_LIMITED" });
      const key = redisKeys(prefix).requestsInMinute(a.org.id, Math.floor(t0.getTime() / 60_000));
      expect(await redis.get(key)).toBe("3");
      const ttl = await redis.pttl(key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(120_000);
      // A new minute has a new key: both admit again.
      const t1 = new Date(t0.getTime() + 60_000);
      expect(two.admit(a.org.id, t1)).toEqual({ ok: true });
      expect(one.admit(a.org.id, t1)).toEqual({ ok: true });
    } finally {
      await Promise.all([one.close(), two.close()]);
    }
  });

  it("flushes on its own timer", async () => {
    const a = await seedOrg(tdb.db, "adm-timer");
    const prefix = testRedisPrefix("admission");
    const gate = new OrgAdmission(tdb.db, { refreshMs: 3_600_000, shared: { redis, prefix, flushMs: 20 } });
    try {
      const now = new Date();
      gate.admit(a.org.id, now);
      gate.admit(a.org.id, now);
      const key = redisKeys(prefix).requestsInMinute(a.org.id, Math.floor(now.getTime() / 60_000));
      await vi.waitFor(async () => expect(await redis.get(key)).toBe("2"), { timeout: 10_000, interval: 20 });
    } finally {
      await gate.close();
    }
  });

  it("decides on the local count, without throwing, while Redis is unreachable, warning once", async () => {
    const a = await seedOrg(tdb.db, "adm-redis-down");
    const down = new Redis("redis://127.0.0.1:1", {
      disableClientInfo: true,
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      retryStrategy: () => null,
    });
    down.on("error", () => {});
    const warnings: string[] = [];
    const gate = new OrgAdmission(tdb.db, {
      refreshMs: 3_600_000,
      shared: { redis: down, prefix: testRedisPrefix("admission"), flushMs: 3_600_000 },
      log: (_l, msg) => warnings.push(msg),
    });
    const t0 = minuteStart();
    try {
      expect(gate.admit(a.org.id, t0)).toEqual({ ok: true });
      await gate.settled();
      await gate.flush(t0);
      expect(gate.admit(a.org.id, t0)).toEqual({ ok: true });
      await gate.flush(t0);
      expect(gate.admit(a.org.id, t0)).toEqual({ ok: true });
      expect(gate.admit(a.org.id, t0)).toMatchObject({ ok: false, code: "RATE_LIMITED" });
      expect(warnings).toEqual(["rate-limit counts not shared through redis; counting per gateway"]);
    } finally {
      await gate.close();
      down.disconnect();
    }
  });

  it("sends the counts of an outage once Redis is back, and says so", async () => {
    const a = await seedOrg(tdb.db, "adm-redis-back");
    const prefix = testRedisPrefix("admission");
    // Not connected until asked: the first flush meets a Redis the gateway cannot write to.
    const late = new Redis(REDIS_URL, {
      disableClientInfo: true,
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
    });
    const logs: string[] = [];
    const gate = new OrgAdmission(tdb.db, {
      refreshMs: 3_600_000,
      shared: { redis: late, prefix, flushMs: 3_600_000 },
      log: (level, msg) => logs.push(`${level}: ${msg}`),
    });
    const t0 = minuteStart();
    const key = redisKeys(prefix).requestsInMinute(a.org.id, Math.floor(t0.getTime() / 60_000));
    try {
      gate.admit(a.org.id, t0);
      await gate.settled();
      await gate.flush(t0);
      gate.admit(a.org.id, t0);
      await late.connect().catch(() => {});
      await vi.waitFor(() => expect(late.status).toBe("ready"), { timeout: 10_000, interval: 20 });
      await gate.flush(t0);
      expect(await redis.get(key)).toBe("2");
      expect(logs).toEqual([
        "warn: rate-limit counts not shared through redis; counting per gateway",
        "info: sharing rate-limit counts through redis again",
      ]);
    } finally {
      await gate.close();
      late.disconnect();
    }
  });
});
