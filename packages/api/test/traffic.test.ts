import { deployments, revisions, usageEvents } from "@tessera/db";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestEnv, failure, sampleCode, sampleConfig, type TestEnv, type TestUser } from "./helpers.js";

let env: TestEnv;
let u: TestUser;
let orgId: string;
let applicationId: string;

beforeAll(async () => {
  env = await createTestEnv("apitraffic");
  u = await env.user("canary@example.com");
  orgId = u.orgId;
  const { cluster } = await u.api.clusters.create({
    orgId,
    name: "main",
    quota: { cpus: 4, memoryMb: 8192, gpus: 1, maxReplicas: 10 },
  });
  applicationId = (await u.api.applications.create({ orgId, clusterId: cluster.id, name: "app" })).id;
});
afterAll(async () => {
  await env?.tdb.drop();
});

/** A deployment whose first revision the controller has made live (as the provisioner would). */
async function liveDeployment(name: string) {
  const { deployment, revision } = await u.api.deployments.deploy({
    orgId,
    applicationId,
    name,
    config: sampleConfig,
    code: sampleCode,
    prevVersion: 0,
  });
  await env.db
    .update(deployments)
    .set({ liveRevisionId: revision.id, state: "ready" })
    .where(eq(deployments.id, deployment.id));
  await env.db.update(revisions).set({ state: "live" }).where(eq(revisions.id, revision.id));
  return { deploymentId: deployment.id, live: revision };
}

const canaryConfig = { ...sampleConfig, userConfig: { variant: "b" } };

/** A canary of the live deployment (version 1) with `percent` of the traffic. */
const startCanary = (deploymentId: string, percent: number) =>
  u.api.traffic.deployCanary({
    orgId,
    deploymentId,
    config: canaryConfig,
    code: sampleCode,
    prevVersion: 1,
    percent,
  });

describe("traffic splitting", () => {
  it("deploys a canary next to the live revision, shifts its weight, and promotes it", async () => {
    const { deploymentId, live } = await liveDeployment("promoted");
    env.jobs.clear();
    const notices = env.notices.length;
    const started = await startCanary(deploymentId, 10);
    expect(started.revision.version).toBe(2);
    // The live revision keeps serving: the deployment's desired revision and version stay.
    expect(started.deployment).toMatchObject({
      liveRevisionId: live.id,
      desiredRevisionId: live.id,
      version: 1,
    });
    expect(started.deployment.traffic).toMatchObject({
      canaryRevisionId: started.revision.id,
      canaryPercent: 10,
    });
    expect(env.jobs.enqueued.map((e) => e.job)).toEqual([{ kind: "scaleDeployment", deploymentId }]);
    expect(env.notices.slice(notices)).toEqual([{ kind: "routingChanged", deploymentId }]);

    const view = await u.api.traffic.get({ orgId, deploymentId });
    expect(view.live?.id).toBe(live.id);
    expect(view.canary).toMatchObject({ percent: 10, revision: { id: started.revision.id, version: 2 } });

    const shifted = await u.api.traffic.setWeight({ orgId, deploymentId, percent: 50 });
    expect(shifted.deployment.traffic?.canaryPercent).toBe(50);

    expect(await failure(u.api.traffic.promote({ orgId, deploymentId, prevVersion: 0 }))).toMatchObject({
      code: "CONFLICT",
    });
    env.jobs.clear();
    const promoted = await u.api.traffic.promote({ orgId, deploymentId, prevVersion: 1 });
    expect(promoted.deployment).toMatchObject({
      desiredRevisionId: started.revision.id,
      version: 2,
      state: "deploying",
      traffic: null,
    });
    expect(env.jobs.enqueued.map((e) => e.job)).toEqual([
      { kind: "deployRevision", revisionId: started.revision.id },
    ]);
    // The next deploy names the promoted version.
    const next = await u.api.deployments.deploy({
      orgId,
      applicationId,
      name: "promoted",
      config: sampleConfig,
      code: sampleCode,
      prevVersion: 2,
    });
    expect(next.revision.version).toBe(3);
  });

  it("aborts a canary: traffic back to live, the canary revision rolled back", async () => {
    const { deploymentId, live } = await liveDeployment("aborted");
    const { revision } = await startCanary(deploymentId, 5);
    const aborted = await u.api.traffic.abort({ orgId, deploymentId });
    expect(aborted.deployment).toMatchObject({ traffic: null, liveRevisionId: live.id, version: 1 });
    const [row] = await env.db.select().from(revisions).where(eq(revisions.id, revision.id));
    expect(row!.state).toBe("rolled_back");
    expect((await u.api.traffic.get({ orgId, deploymentId })).canary).toBeNull();
    for (const call of [
      () => u.api.traffic.abort({ orgId, deploymentId }),
      () => u.api.traffic.setWeight({ orgId, deploymentId, percent: 20 }),
      () => u.api.traffic.promote({ orgId, deploymentId, prevVersion: 1 }),
    ])
      expect(await failure(call())).toMatchObject({
        code: "CONFLICT",
        message: expect.stringContaining("no canary"),
      });
  });

  it("validates the weight and the canary's config field by field", async () => {
    const { deploymentId } = await liveDeployment("validated");
    const ok = { orgId, deploymentId, config: canaryConfig, code: sampleCode, prevVersion: 1, percent: 0.5 };
    const refused = (overrides: Record<string, unknown>) =>
      failure(u.api.traffic.deployCanary({ ...ok, ...overrides }));
    for (const percent of [-1, 101, 12.25, "ten"])
      expect(await refused({ percent })).toMatchObject({
        code: "VALIDATION_FAILED",
        fieldErrors: { percent: expect.any(String) },
      });
    expect(await refused({ config: { ...sampleConfig, runtime: "ruby" } })).toMatchObject({
      code: "VALIDATION_FAILED",
      fieldErrors: { "config.runtime": expect.any(String) },
    });
    expect(await refused({ config: { ...sampleConfig, resources: { cpus: 64 } } })).toMatchObject({
      code: "VALIDATION_FAILED",
      fieldErrors: { "config.resources.cpus": expect.any(String) },
    });
    await u.api.traffic.deployCanary(ok);
    expect(await failure(u.api.traffic.setWeight({ orgId, deploymentId, percent: 250 }))).toMatchObject({
      code: "VALIDATION_FAILED",
    });
  });

  it("refuses a canary without a live revision, during a rollout, beside another canary, or on a stale version", async () => {
    const { deployment } = await u.api.deployments.deploy({
      orgId,
      applicationId,
      name: "fresh",
      config: sampleConfig,
      code: sampleCode,
      prevVersion: 0,
    });
    const args = { orgId, deploymentId: deployment.id, config: canaryConfig, code: sampleCode, percent: 10 };
    expect(await failure(u.api.traffic.deployCanary({ ...args, prevVersion: 1 }))).toMatchObject({
      code: "CONFLICT",
      message: expect.stringContaining("nothing is live"),
    });
    const { deploymentId } = await liveDeployment("busy");
    const live = { ...args, deploymentId };
    expect(await failure(u.api.traffic.deployCanary({ ...live, prevVersion: 0 }))).toMatchObject({
      code: "CONFLICT",
    });
    await u.api.traffic.deployCanary({ ...live, prevVersion: 1 });
    expect(await failure(u.api.traffic.deployCanary({ ...live, prevVersion: 1 }))).toMatchObject({
      code: "CONFLICT",
      message: expect.stringContaining("already running"),
    });
    // A normal deploy supersedes the canary; the rollout then blocks a new one until it settles.
    await u.api.deployments.deploy({
      orgId,
      applicationId,
      name: "busy",
      config: sampleConfig,
      code: sampleCode,
      prevVersion: 1,
    });
    expect((await u.api.traffic.get({ orgId, deploymentId })).canary).toBeNull();
    expect(await failure(u.api.traffic.deployCanary({ ...live, prevVersion: 3 }))).toMatchObject({
      code: "CONFLICT",
      message: expect.stringContaining("rollout is in progress"),
    });
  });

  it("reports requests, errors and latency per revision since the canary started", async () => {
    const { deploymentId, live } = await liveDeployment("measured");
    const { revision } = await startCanary(deploymentId, 20);
    const at = new Date(Date.now() + 1000);
    const event = (revisionId: string, i: number, status: number, latencyMs: number) => ({
      id: `${revisionId}-${i}`,
      orgId,
      deploymentId,
      revisionId,
      kind: "request",
      quantity: 1,
      status,
      latencyMs,
      at,
    });
    await env.db.insert(usageEvents).values([
      ...[10, 20, 30, 40].map((ms, i) => event(live.id, i, 200, ms)),
      event(revision.id, 0, 200, 100),
      event(revision.id, 1, 502, 300),
      // Before the canary started: not counted.
      { ...event(live.id, 9, 500, 999), at: new Date(Date.now() - 3600_000) },
    ]);
    const view = await u.api.traffic.get({ orgId, deploymentId });
    expect(view.stats).toEqual([
      { revisionId: live.id, requests: 4, errors: 0, p50Ms: 25, p95Ms: 38.5 },
      { revisionId: revision.id, requests: 2, errors: 1, p50Ms: 200, p95Ms: 290 },
    ]);
  });

  it("refuses to promote a canary whose revision failed", async () => {
    const { deploymentId } = await liveDeployment("failing");
    const { revision } = await startCanary(deploymentId, 10);
    // What the controller records when the canary's replicas crash.
    await env.db
      .update(revisions)
      .set({ state: "failed", failureReason: "a replica failed: boom" })
      .where(eq(revisions.id, revision.id));
    expect(await failure(u.api.traffic.promote({ orgId, deploymentId, prevVersion: 1 }))).toMatchObject({
      code: "CONFLICT",
      message: expect.stringContaining("a replica failed: boom"),
    });
    await u.api.traffic.abort({ orgId, deploymentId });
  });

  it("is for admins: members read, cannot change", async () => {
    const { deploymentId } = await liveDeployment("roles");
    const member = await env.user("member-of-canary@example.com");
    const inv = await u.api.invitations.create({
      orgId,
      email: "member-of-canary@example.com",
      role: "member",
    });
    await member.api.invitations.accept({ token: inv.token });
    expect((await member.api.traffic.get({ orgId, deploymentId })).canary).toBeNull();
    expect(
      await failure(
        member.api.traffic.deployCanary({
          orgId,
          deploymentId,
          config: canaryConfig,
          code: sampleCode,
          prevVersion: 1,
          percent: 10,
        }),
      ),
    ).toMatchObject({ code: "FORBIDDEN" });
  });
});
