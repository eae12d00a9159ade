import type { UsageEvent } from "@tessera/core";
import { billingCursors, uptimeProbes, usageHourly } from "@tessera/db";
import { createTestDatabase, type TestDatabase } from "@tessera/db/testing";
import { asc, eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  histogramPercentile,
  mergeHistograms,
  pruneHistory,
  recordUsageEvents,
  rollupHour,
  rollupUsage,
} from "../src/index.js";
import { seedOrg, seedReplica } from "./fixtures.js";

let tdb: TestDatabase;
beforeAll(async () => {
  tdb = await createTestDatabase("metering");
});
afterAll(async () => {
  await tdb?.drop();
});

const H = (iso: string) => new Date(`2026-03-01T${iso}Z`);

function requests(orgId: string, deploymentId: string, prefix: string, times: string[], status = 200) {
  return times.map(
    (t, i): UsageEvent => ({
      id: `${prefix}-${i}`,
      orgId,
      deploymentId,
      kind: "request",
      quantity: 1,
      status,
      latencyMs: 20 + i,
      bytesOut: 100,
      at: H(t),
    }),
  );
}

async function hourRows(orgId: string) {
  return tdb.db
    .select()
    .from(usageHourly)
    .where(eq(usageHourly.orgId, orgId))
    .orderBy(asc(usageHourly.hour), asc(usageHourly.deploymentId));
}

describe("metering", () => {
  it("counts replayed events once and splits them at hour boundaries", async () => {
    const a = await seedOrg(tdb.db, "meter-a");
    const batch = [
      ...requests(a.org.id, a.deployment.id, "r", ["10:15:00", "10:59:59.999", "11:00:00", "11:30:00"]),
      ...requests(a.org.id, a.deployment.id, "e", ["10:20:00"], 503),
      { id: "b-1", orgId: a.org.id, kind: "build_seconds", quantity: 90, at: H("10:05:00") } as UsageEvent,
    ];
    expect(await recordUsageEvents(tdb.db, batch)).toEqual({ inserted: 6 });
    // The gateway replays its buffer after an outage: nothing is new.
    expect(await recordUsageEvents(tdb.db, batch)).toEqual({ inserted: 0 });
    await rollupHour(tdb.db, H("10:00:00"), H("12:00:00"));
    await rollupHour(tdb.db, H("11:00:00"), H("12:00:00"));
    // Recomputing is idempotent as well.
    await rollupHour(tdb.db, H("10:00:00"), H("12:00:00"));

    const rows = await hourRows(a.org.id);
    const ten = rows.filter((r) => r.hour.getTime() === H("10:00:00").getTime());
    const eleven = rows.filter((r) => r.hour.getTime() === H("11:00:00").getTime());
    const tenDep = ten.find((r) => r.deploymentId === a.deployment.id)!;
    expect(tenDep).toMatchObject({ requests: 3, errors: 1, egressBytes: 300 });
    expect(ten.find((r) => r.deploymentId === null)).toMatchObject({ buildSeconds: 90, requests: 0 });
    expect(eleven).toHaveLength(1);
    expect(eleven[0]).toMatchObject({ requests: 2, errors: 0, egressBytes: 200 });
    expect(tenDep.latencyHistogram.reduce((x, y) => x + y, 0)).toBe(3);
  });

  it("rejects an invalid event with VALIDATION_FAILED and records nothing of its batch", async () => {
    const a = await seedOrg(tdb.db, "meter-bad");
    const good = requests(a.org.id, a.deployment.id, "bad-good", ["10:00:00"]);
    await expect(
      recordUsageEvents(tdb.db, [...good, { ...good[0]!, id: "bad-1", quantity: -1 }]),
    ).rejects.toMatchObject({ code: "VALIDATION_FAILED" });
    const n = await tdb.db.execute(
      sql`select count(*)::int as n from usage_events where org_id = ${a.org.id}`,
    );
    expect(n.rows[0]).toEqual({ n: 0 });
  });

  it("derives replica-seconds per resource class from start/stop records, clipped to each hour", async () => {
    const a = await seedOrg(tdb.db, "meter-replicas");
    // 10:30 -> 11:15, 2 cpus, half a GPU, 2 GiB.
    await seedReplica(tdb.db, a, {
      startedAt: H("10:30:00"),
      stoppedAt: H("11:15:00"),
      resources: { cpus: 2, gpus: 0.5, memoryMb: 2048 },
    });
    // Still running at "now" = 11:10: counts up to now.
    await seedReplica(tdb.db, a, {
      startedAt: H("11:00:00"),
      resources: { cpus: 1, gpus: 0, memoryMb: 1024 },
    });
    // Failed without a stop time: never billed.
    await seedReplica(tdb.db, a, { startedAt: H("10:00:00"), state: "failed" });
    const now = H("11:10:00");
    await rollupHour(tdb.db, H("10:00:00"), now);
    await rollupHour(tdb.db, H("11:00:00"), now);
    const rows = await hourRows(a.org.id);
    expect(
      rows.map((r) => [
        r.hour.toISOString(),
        r.replicaSeconds,
        r.cpuSeconds,
        r.gpuSeconds,
        r.memoryGibSeconds,
      ]),
    ).toEqual([
      [H("10:00:00").toISOString(), 1800, 3600, 900, 3600],
      // both replicas 10 min so far: a stop time after `now` is not billed ahead
      [H("11:00:00").toISOString(), 1200, 1800, 300, 1800],
    ]);
  });

  it("counts late events in the hour they happened, on the next rollup run", async () => {
    const a = await seedOrg(tdb.db, "meter-late");
    await recordUsageEvents(tdb.db, requests(a.org.id, a.deployment.id, "late-a", ["09:10:00", "09:20:00"]));
    await rollupUsage(tdb.db, H("12:00:00"));
    // An event for 09:xx arrives long after that hour was rolled up (a gateway flushing its buffer).
    await recordUsageEvents(tdb.db, requests(a.org.id, a.deployment.id, "late-b", ["09:45:00"]));
    const { hours } = await rollupUsage(tdb.db, H("13:00:00"));
    expect(hours.map((h) => h.toISOString())).toContain(H("09:00:00").toISOString());
    const nine = (await hourRows(a.org.id)).filter((r) => r.hour.getTime() === H("09:00:00").getTime());
    expect(nine.map((r) => r.requests)).toEqual([3]);
  });

  it("reads percentiles from merged histograms as bucket upper bounds", () => {
    const h1 = new Array(20).fill(0);
    const h2 = new Array(20).fill(0);
    h1[2] = 90; // [10, 25)
    h2[6] = 9; // [100, 150)
    h2[19] = 1; // >= 60 s
    const merged = mergeHistograms([h1, h2]);
    expect(histogramPercentile(merged, 0.5)).toBe(25);
    expect(histogramPercentile(merged, 0.95)).toBe(150);
    expect(histogramPercentile(merged, 0.999)).toBe(60_000);
    expect(histogramPercentile(new Array(20).fill(0), 0.5)).toBeNull();
  });

  it("prunes raw history past retention and keeps the frozen hours' totals", async () => {
    const a = await seedOrg(tdb.db, "meter-prune");
    const now = new Date("2026-06-01T12:00:00Z");
    const old = new Date("2026-03-15T10:00:00Z"); // 78 days before
    const recent = new Date("2026-05-30T10:00:00Z");
    await recordUsageEvents(tdb.db, [
      ...requests(a.org.id, a.deployment.id, "prune-old", [old.toISOString().slice(11, 19)]).map((e) => ({
        ...e,
        at: old,
      })),
      ...requests(a.org.id, a.deployment.id, "prune-new", ["10:00:00"]).map((e) => ({ ...e, at: recent })),
    ]);
    await rollupHour(tdb.db, old, now);
    await tdb.db.insert(uptimeProbes).values([
      { orgId: a.org.id, deploymentId: a.deployment.id, ok: true, at: new Date("2026-04-20T00:00:00Z") },
      { orgId: a.org.id, deploymentId: a.deployment.id, ok: true, at: recent },
    ]);
    const pruned = await pruneHistory(tdb.db, now);
    expect(pruned.usageEvents).toBeGreaterThanOrEqual(1);
    expect(pruned.probes).toBe(1);
    const left = await tdb.db.execute(sql`select id from usage_events where org_id = ${a.org.id}`);
    expect(left.rows).toEqual([{ id: "prune-new-0" }]);
    // A late event for the frozen hour does not make the rollup recompute it from pruned events.
    // (The rollup last ran an hour ago, so this run only covers the recent hours and late ones.)
    await tdb.db
      .insert(billingCursors)
      .values({ name: "usage_rollup", at: new Date(now.getTime() - 3_600_000) })
      .onConflictDoUpdate({ target: billingCursors.name, set: { at: new Date(now.getTime() - 3_600_000) } });
    await recordUsageEvents(
      tdb.db,
      requests(a.org.id, a.deployment.id, "prune-late", ["10:30:00"]).map((e) => ({ ...e, at: old })),
    );
    const { hours } = await rollupUsage(tdb.db, now);
    expect(hours.map((h) => h.getTime())).not.toContain(old.getTime());
    const frozen = (await hourRows(a.org.id)).find((r) => r.hour.getTime() === old.getTime());
    expect(frozen?.requests).toBe(1);
  });
});
