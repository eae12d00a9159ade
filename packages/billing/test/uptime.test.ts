import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { RUNTIME_PATHS } from "@tessera/core";
import { deployments, uptimeIncidents, uptimeProbes, usageEvents, usageHourly } from "@tessera/db";
import { createTestDatabase, type TestDatabase, testRedisPrefix } from "@tessera/db/testing";
import { eq, inArray } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
// The real gateway, as the provisioner's prober reaches it in production.
import { createGateway } from "../../../apps/gateway/src/gateway.js";
import { deploymentSlo, HOUR_MS, LATENCY_BUCKETS_MS, orgSloSummary, probeDeployments } from "../src/index.js";
import { seedOrg, seedReplica } from "./fixtures.js";

let tdb: TestDatabase;
let server: Server;
let replicaUrl: string;
/** A "replica" that accepts and drops every connection. */
let dropper: Server;
let dropperUrl: string;
/** What the fake replica's readiness route answers. */
let readiness = 200;
let readinessHits = 0;

beforeAll(async () => {
  tdb = await createTestDatabase("uptime");
  server = createServer((req, res) => {
    if (req.url === RUNTIME_PATHS.ready) {
      readinessHits++;
      res.writeHead(readiness, { "content-type": "application/json" }).end("{}");
    } else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  replicaUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  dropper = createServer();
  dropper.on("connection", (socket) => socket.destroy());
  await new Promise<void>((r) => dropper.listen(0, "127.0.0.1", r));
  dropperUrl = `http://127.0.0.1:${(dropper.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise<void>((r) => dropper?.close(() => r()) ?? r());
  server?.closeAllConnections();
  await new Promise<void>((r) => server?.close(() => r()) ?? r());
  await tdb?.drop();
});

describe("uptime prober", () => {
  it("probes replicas' readiness, opens an incident after consecutive failures and closes it on recovery", async () => {
    const a = await seedOrg(tdb.db, "probe-a");
    await seedReplica(tdb.db, a, { startedAt: new Date(), address: replicaUrl });
    // A deployment scaled to zero is not probed (it is not down, it is asleep).
    const parked = await seedOrg(tdb.db, "probe-parked");
    await tdb.db
      .update(deployments)
      .set({ targetReplicas: 0 })
      .where(eq(deployments.id, parked.deployment.id));
    // A ready deployment whose only replica drops every connection is down.
    const dead = await seedOrg(tdb.db, "probe-dead");
    await seedReplica(tdb.db, dead, { startedAt: new Date(), address: dropperUrl });

    let t = Date.parse("2026-07-01T10:00:00Z");
    // One probe round every 30 s (fixed clock per round).
    const round = () => {
      t += 30_000;
      return probeDeployments(tdb.db, { timeoutMs: 2000, failureThreshold: 3, now: () => new Date(t) });
    };

    const first = await round();
    const byId = new Map(first.results.map((r) => [r.deploymentId, r]));
    expect(byId.has(parked.deployment.id)).toBe(false);
    expect(byId.get(a.deployment.id)).toMatchObject({ ok: true, status: 200 });
    expect(byId.get(dead.deployment.id)).toMatchObject({ ok: false, status: null });
    expect(byId.get(dead.deployment.id)!.error).toMatch(/unreachable/);
    expect(readinessHits).toBe(1);

    readiness = 503;
    expect((await round()).opened).toBe(0);
    expect((await round()).opened).toBe(1); // dead: 3 in a row
    const third = await round(); // a: 3 in a row
    expect(third.opened).toBe(1);
    expect(third.results.find((r) => r.deploymentId === a.deployment.id)).toMatchObject({
      ok: false,
      status: 503,
      error: "readiness answered 503",
    });
    // Still failing: the same incident stays open, counting probes.
    await round();
    const open = await tdb.db
      .select()
      .from(uptimeIncidents)
      .where(eq(uptimeIncidents.deploymentId, a.deployment.id));
    expect(open).toHaveLength(1);
    expect(open[0]).toMatchObject({ closedAt: null, failedProbes: 4, reason: "readiness answered 503" });
    // Opened at the first probe of the failing streak.
    expect(open[0]!.openedAt.toISOString()).toBe(
      new Date(Date.parse("2026-07-01T10:00:00Z") + 2 * 30_000).toISOString(),
    );

    readiness = 200;
    expect((await round()).closed).toBe(1);
    const [done] = await tdb.db
      .select()
      .from(uptimeIncidents)
      .where(eq(uptimeIncidents.deploymentId, a.deployment.id));
    expect(done!.closedAt!.toISOString()).toBe(new Date(t).toISOString());
    const probes = await tdb.db
      .select()
      .from(uptimeProbes)
      .where(eq(uptimeProbes.deploymentId, a.deployment.id));
    expect(probes.map((p) => p.ok)).toEqual([true, false, false, false, false, true]);
  });
});

describe("uptime prober through the gateway", () => {
  it("probes via the gateway's probe ingress: up, down, asleep (not woken, not recorded), incidents, no usage", async () => {
    const gdb = await createTestDatabase("uptime-gateway");
    const secret = "uptime-probe-secret";
    const gateway = await createGateway({
      db: gdb.db,
      redisUrl: process.env.REDIS_URL ?? "redis://127.0.0.1:6379",
      redisPrefix: testRedisPrefix("uptime-gw"),
      handleSecret: secret,
      usageFlushMs: 100,
      log: () => {},
    });
    try {
      const up = await seedOrg(gdb.db, "gw-up");
      await seedReplica(gdb.db, up, { startedAt: new Date(), address: replicaUrl });
      // Scaled to zero on purpose: asleep, neither up nor down.
      const asleep = await seedOrg(gdb.db, "gw-asleep");
      await gdb.db
        .update(deployments)
        .set({ targetReplicas: 0 })
        .where(eq(deployments.id, asleep.deployment.id));
      // Replicas wanted but none ready (crashed): the gateway routes to none, which is down.
      const crashed = await seedOrg(gdb.db, "gw-crashed");
      const dead = await seedOrg(gdb.db, "gw-dead");
      await seedReplica(gdb.db, dead, { startedAt: new Date(), address: dropperUrl });
      expect(await gateway.refresh()).toBe(true);

      let t = Date.parse("2026-07-02T10:00:00Z");
      const round = () => {
        t += 30_000;
        return probeDeployments(gdb.db, {
          gateway: { url: gateway.url, secret },
          timeoutMs: 5000,
          failureThreshold: 2,
          now: () => new Date(t),
        });
      };
      readiness = 200;
      const hitsBefore = readinessHits;
      const first = await round();
      const byId = new Map(first.results.map((r) => [r.deploymentId, r]));
      expect(byId.get(up.deployment.id)).toMatchObject({ ok: true, asleep: false, status: 200 });
      expect(byId.get(asleep.deployment.id)).toMatchObject({ ok: false, asleep: true, status: 503 });
      expect(byId.get(crashed.deployment.id)).toMatchObject({ ok: false, asleep: false, status: 503 });
      expect(byId.get(crashed.deployment.id)!.error).toMatch(/no ready replica/);
      expect(byId.get(dead.deployment.id)).toMatchObject({ ok: false, asleep: false, status: 502 });
      expect(byId.get(dead.deployment.id)!.error).toMatch(/UPSTREAM_ERROR/);
      expect(readinessHits).toBe(hitsBefore + 1);

      // The gateway saw the probes (its metrics count them per deployment).
      const metrics = await fetch(`${gateway.url}/metrics`).then((r) => r.text());
      expect(metrics).toContain(
        `tessera_gateway_probes_total{deployment="${up.deployment.id}",status="200"} 1`,
      );
      expect(metrics).toContain(
        `tessera_gateway_probes_total{deployment="${asleep.deployment.id}",status="503"} 1`,
      );

      readiness = 503;
      await round();
      await round();
      const open = await gdb.db
        .select()
        .from(uptimeIncidents)
        .where(eq(uptimeIncidents.deploymentId, up.deployment.id));
      expect(open).toHaveLength(1);
      expect(open[0]!.reason).toBe("readiness answered 503");
      readiness = 200;
      await round();
      const [closed] = await gdb.db
        .select()
        .from(uptimeIncidents)
        .where(eq(uptimeIncidents.deploymentId, up.deployment.id));
      expect(closed!.closedAt!.toISOString()).toBe(new Date(t).toISOString());

      const probes = await gdb.db
        .select({ deploymentId: uptimeProbes.deploymentId, ok: uptimeProbes.ok })
        .from(uptimeProbes)
        .where(inArray(uptimeProbes.deploymentId, [up.deployment.id, asleep.deployment.id]));
      expect(probes.filter((p) => p.deploymentId === up.deployment.id).map((p) => p.ok)).toEqual([
        true,
        false,
        false,
        true,
      ]);
      expect(probes.filter((p) => p.deploymentId === asleep.deployment.id)).toHaveLength(0);
      const asleepIncidents = await gdb.db
        .select()
        .from(uptimeIncidents)
        .where(eq(uptimeIncidents.deploymentId, asleep.deployment.id));
      expect(asleepIncidents).toHaveLength(0);
      // The asleep deployment stayed asleep: the gateway routed nothing to it and asked for no replica.
      expect(gateway.router.lanes.get(asleep.deployment.id)?.waiters.length ?? 0).toBe(0);

      // Probes are platform traffic: nothing metered (usage flushes every 100 ms; close() flushes the rest).
      await gateway.close();
      expect(await gdb.db.select().from(usageEvents)).toHaveLength(0);
    } finally {
      await gateway.close();
      await gdb.drop();
    }
  });

  it("falls back to direct replica probes without a gateway", async () => {
    const direct = await seedOrg(tdb.db, "probe-direct");
    await seedReplica(tdb.db, direct, { startedAt: new Date(), address: replicaUrl });
    readiness = 200;
    const hitsBefore = readinessHits;
    const { results } = await probeDeployments(tdb.db, { timeoutMs: 2000 });
    expect(results.find((r) => r.deploymentId === direct.deployment.id)).toMatchObject({
      ok: true,
      asleep: false,
      status: 200,
    });
    expect(readinessHits).toBeGreaterThan(hitsBefore);
  });
});

describe("SLO computation", () => {
  it("computes availability, error budget, bars and percentiles from a recorded history", async () => {
    const a = await seedOrg(tdb.db, "slo-a");
    const now = new Date("2026-08-02T12:30:00Z");
    const at = (iso: string) => new Date(`2026-08-02T${iso}Z`);
    const probe = (iso: string, ok: boolean) => ({
      orgId: a.org.id,
      deploymentId: a.deployment.id,
      ok,
      at: at(iso),
    });
    // 11:00 hour: 4 probes, 1 failed. 12:00 hour: 2 probes, both fine. Yesterday (outside 24 h): failures.
    await tdb.db
      .insert(uptimeProbes)
      .values([
        probe("11:00:00", true),
        probe("11:15:00", false),
        probe("11:30:00", true),
        probe("11:45:00", true),
        probe("12:00:00", true),
        probe("12:15:00", true),
        { ...probe("00:00:00", false), at: new Date("2026-08-01T09:00:00Z") },
      ]);
    const hist = (bucketIndex: number, n: number) => {
      const h = new Array(LATENCY_BUCKETS_MS.length + 1).fill(0);
      h[bucketIndex] = n;
      return h;
    };
    await tdb.db.insert(usageHourly).values([
      {
        orgId: a.org.id,
        deploymentId: a.deployment.id,
        hour: at("11:00:00"),
        requests: 90,
        errors: 4,
        latencyHistogram: hist(3, 90),
      },
      {
        orgId: a.org.id,
        deploymentId: a.deployment.id,
        hour: at("12:00:00"),
        requests: 10,
        errors: 0,
        latencyHistogram: hist(9, 10),
      },
    ]);

    const s = await deploymentSlo(tdb.db, a.deployment.id, "24h", now);
    expect(s.probes).toEqual({ total: 6, ok: 5, uptime: 5 / 6 });
    expect(s.requests).toEqual({ total: 100, errors: 4, successRate: 0.96 });
    // (5 good probes + 96 good requests) / (6 probes + 100 requests)
    expect(s.availability).toBeCloseTo(101 / 106, 12);
    expect(s.errorBudgetRemaining).toBeCloseTo(1 - (1 - 101 / 106) / 0.001, 9);
    // 90 requests in [25, 50) ms, 10 in [400, 600) ms.
    expect(s.latencyMs).toEqual({ p50: 50, p95: 600, p99: 600 });
    expect(s.bars).toHaveLength(24);
    expect(s.to.toISOString()).toBe("2026-08-02T13:00:00.000Z");
    const bar11 = s.bars.find((b) => b.start.getTime() === at("11:00:00").getTime())!;
    expect(bar11).toMatchObject({ probes: 4, okProbes: 3, requests: 90, errors: 4 });
    expect(bar11.availability).toBeCloseTo(89 / 94, 12);
    expect(s.bars.filter((b) => b.availability !== null)).toHaveLength(2);

    const month = await deploymentSlo(tdb.db, a.deployment.id, "30d", now);
    expect(month.bars).toHaveLength(30);
    expect(month.probes.total).toBe(7);
    expect(month.bars.find((b) => b.start.toISOString() === "2026-08-01T00:00:00.000Z")).toMatchObject({
      probes: 1,
      okProbes: 0,
      availability: 0,
    });

    const summary = await orgSloSummary(tdb.db, a.org.id, "24h", now);
    expect(summary).toEqual([
      expect.objectContaining({ deploymentId: a.deployment.id, requests: 100, openIncidents: 0 }),
    ]);
    expect(HOUR_MS).toBe(3_600_000);
  });
});
