import { deployments, replicas, revisions, scalingEvents, usageEvents } from "@tessera/db";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bucketSecondsFor } from "../src/routers/metrics.js";
import { createTestEnv, failure, sampleCode, sampleConfig, type TestEnv, type TestUser } from "./helpers.js";

let env: TestEnv;
let owner: TestUser;
let deploymentId: string;

beforeAll(async () => {
  env = await createTestEnv("metrics");
  owner = await env.user("metrics-owner@example.com");
  const { cluster } = await owner.api.clusters.create({ orgId: owner.orgId, name: "main" });
  const app = await owner.api.applications.create({
    orgId: owner.orgId,
    clusterId: cluster.id,
    name: "demo",
  });
  const { deployment } = await owner.api.deployments.deploy({
    orgId: owner.orgId,
    applicationId: app.id,
    name: "echo",
    config: sampleConfig,
    code: sampleCode,
    prevVersion: 0,
  });
  deploymentId = deployment.id;
});

afterAll(async () => {
  await env?.tdb.drop();
});

function requestEvent(
  id: string,
  at: Date,
  status: number,
  latencyMs: number,
  dep = deploymentId,
  orgId = owner.orgId,
) {
  return { id, orgId, deploymentId: dep, kind: "request", quantity: 1, status, latencyMs, at };
}

describe("metrics.deployment", () => {
  it("buckets request events into rps, error rate and latency percentiles", async () => {
    const minuteAgo = new Date(Date.now() - 60_000);
    const latencies = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
    await env.db.insert(usageEvents).values([
      ...latencies.map((l, i) => requestEvent(`ok-${i}`, minuteAgo, 200, l)),
      requestEvent("err-1", minuteAgo, 502, 5),
      requestEvent("client-err", minuteAgo, 404, 5),
      // Not a request, and too old: neither is counted.
      { ...requestEvent("replica-s", minuteAgo, 200, 1), kind: "replica_seconds" },
      requestEvent("old", new Date(Date.now() - 3 * 3600_000), 200, 1),
    ]);
    const m = await owner.api.metrics.deployment({ orgId: owner.orgId, deploymentId, windowMinutes: 60 });
    expect(m.bucketSeconds).toBe(30);
    expect(m.traffic.length).toBe(120);
    expect(m.totals).toEqual({ requests: 12, errors: 1 });
    const busy = m.traffic.filter((p) => p.requests > 0);
    expect(busy).toHaveLength(1);
    const p = busy[0]!;
    expect(p.requests).toBe(12);
    expect(p.errors).toBe(1);
    expect(p.errorRate).toBeCloseTo(1 / 12);
    expect(p.rps).toBeCloseTo(12 / 30);
    // percentile_cont over [5, 5, 10..100]: the median lies between 40 and 50.
    expect(p.p50).toBe(45);
    expect(p.p99).toBeGreaterThan(p.p95!);
    expect(p.p99).toBeLessThanOrEqual(100);
  });

  it("reports the replica count over time from scaling events, ending at the current target", async () => {
    await env.db.insert(scalingEvents).values({
      orgId: owner.orgId,
      deploymentId,
      fromReplicas: 2,
      toReplicas: 2,
      reason: "autoscaler",
      metrics: {},
      at: new Date(Date.now() - 120_000),
    });
    await owner.api.deployments.updateScaling({ orgId: owner.orgId, deploymentId, numReplicas: 3 });
    const m = await owner.api.metrics.deployment({ orgId: owner.orgId, deploymentId, windowMinutes: 60 });
    expect(m.replicas[0]!.replicas).toBe(2);
    expect(m.replicas.at(-1)!.replicas).toBe(3);
    expect(m.replicas.map((r) => r.replicas)).toEqual([2, 2, 3, 3]);
  });

  it("is NOT_FOUND for another organisation's deployment and for members of nothing", async () => {
    const other = await env.user("metrics-other@example.com");
    expect((await failure(other.api.metrics.deployment({ orgId: other.orgId, deploymentId }))).code).toBe(
      "NOT_FOUND",
    );
    expect((await failure(other.api.metrics.deployment({ orgId: owner.orgId, deploymentId }))).code).toBe(
      "NOT_FOUND",
    );
  });

  it("chooses buckets that keep charts within 120 points", () => {
    expect(bucketSecondsFor(5 * 60)).toBe(10);
    expect(bucketSecondsFor(3600)).toBe(30);
    expect(bucketSecondsFor(24 * 3600)).toBe(900);
    expect(bucketSecondsFor(7 * 24 * 3600)).toBe(4 * 3600);
  });
});

describe("metrics.clusterUsage", () => {
  it("sums the resources of live replicas per cluster and counts deployments", async () => {
    const [dep] = await env.db.select().from(deployments).where(eq(deployments.id, deploymentId));
    const [rev] = await env.db
      .select({ id: revisions.id })
      .from(revisions)
      .where(eq(revisions.deploymentId, deploymentId));
    const replica = (state: "ready" | "starting" | "stopped") => ({
      orgId: owner.orgId,
      clusterId: dep!.clusterId,
      deploymentId,
      revisionId: rev!.id,
      state,
      resources: { cpus: 0.5, gpus: 0, memoryMb: 256 },
    });
    await env.db.insert(replicas).values([replica("ready"), replica("starting"), replica("stopped")]);
    const usage = await owner.api.metrics.clusterUsage({ orgId: owner.orgId });
    expect(usage).toEqual([
      { clusterId: dep!.clusterId, deployments: 1, replicas: 2, cpus: 1, memoryMb: 512, gpus: 0 },
    ]);
    const other = await env.user("usage-other@example.com");
    expect(await other.api.metrics.clusterUsage({ orgId: other.orgId })).toEqual([]);
  });
});

describe("metrics.adminDeployments", () => {
  it("lists every org's deployments with replica and traffic counts, for platform admins only", async () => {
    const admin = await env.user("metrics-admin@example.com", { adminEmails: ["metrics-admin@example.com"] });
    const rows = await admin.api.metrics.adminDeployments({ windowMinutes: 60 });
    const row = rows.find((r) => r.id === deploymentId);
    expect(row).toMatchObject({
      name: "echo",
      applicationName: "demo",
      requests: 12,
      errors: 1,
      runningReplicas: 2,
      readyReplicas: 1,
    });
    expect(await admin.api.metrics.adminDeployments({ search: "no-such-thing" })).toEqual([]);
    expect((await failure(owner.api.metrics.adminDeployments({}))).code).toBe("FORBIDDEN");
  });
});
