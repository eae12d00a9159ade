import { redisKeys, verifyHandleToken } from "@tessera/core";
import {
  clusters,
  deployments,
  environmentLogs,
  jobs,
  replicas,
  revisions,
  scalingEvents,
  usageEvents,
} from "@tessera/db";
import { and, eq, inArray } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Provisioner } from "../src/index.js";
import { createTestPlatform, type TestPlatform, waitFor } from "./support/platform.js";
import { ScriptedDriver } from "./support/scripted-driver.js";

/**
 * The controller and job handlers against a scripted driver, driven through the tRPC API with the
 * real BullMQ queue, Postgres and Redis.
 */
let platform: TestPlatform;
let driver: ScriptedDriver;
let provisioner: Provisioner;
let api: Awaited<ReturnType<TestPlatform["user"]>>["api"];
let orgId: string;
let clusterId: string;
let applicationId: string;

const config = (extra: Record<string, unknown> = {}) => ({
  runtime: "python",
  entry: "handler:Echo",
  environment: { kind: "pip", requirements: ["numpy==1.26.4"] },
  resources: { cpus: 0.5, gpus: 0, memoryMb: 256 },
  numReplicas: 2,
  ...extra,
});
const code = (body = "return body") => ({
  files: { "handler.py": `class Echo:\n    def __call__(self, body):\n        ${body}\n` },
});

const HANDLES = { secret: "handle-secret-for-tests", gatewayUrl: "http://gateway.test:8080/" };

const deploy = (name: string, cfg: unknown, bundle: unknown, prevVersion: number) =>
  api.deployments.deploy({ orgId, applicationId, name, config: cfg, code: bundle, prevVersion });

beforeAll(async () => {
  driver = new ScriptedDriver();
  platform = await createTestPlatform("ctrl", driver);
  provisioner = platform.startProvisioner({ handles: HANDLES });
  await provisioner.ready;
  const u = await platform.user("ops@example.com");
  api = u.api;
  orgId = u.orgId;
  const c = await api.clusters.create({ orgId, name: "main" });
  clusterId = c.cluster.id;
  applicationId = (await api.applications.create({ orgId, clusterId, name: "app" })).id;
});

afterAll(async () => {
  await platform?.close();
});

const db = () => platform.tdb.db;

async function jobRow(jobId: string) {
  const [row] = await db().select().from(jobs).where(eq(jobs.id, jobId));
  return row!;
}

async function jobDone(jobId: string) {
  return waitFor(`job ${jobId} to finish`, async () => {
    const row = await jobRow(jobId);
    return row.state === "succeeded" || row.state === "failed" ? row : undefined;
  });
}

async function activeReplicas(deploymentId: string) {
  return db()
    .select()
    .from(replicas)
    .where(
      and(
        eq(replicas.deploymentId, deploymentId),
        inArray(replicas.state, ["starting", "ready", "draining"]),
      ),
    );
}

async function readyReplicas(deploymentId: string, revisionId?: string) {
  const rows = await activeReplicas(deploymentId);
  return rows.filter((r) => r.state === "ready" && (!revisionId || r.revisionId === revisionId));
}

async function deploymentRow(id: string) {
  const [row] = await db().select().from(deployments).where(eq(deployments.id, id));
  return row!;
}

async function revisionRow(id: string) {
  const [row] = await db().select().from(revisions).where(eq(revisions.id, id));
  return row!;
}

describe("controller", () => {
  let depId: string;
  let v1: string;

  it("provisions the cluster from the create job", async () => {
    const [row] = await waitFor("cluster ready", async () => {
      const rows = await db().select().from(clusters).where(eq(clusters.id, clusterId));
      return rows[0]?.state === "ready" ? rows : undefined;
    });
    expect(row!.driverState).toEqual({ workDir: `/clusters/${clusterId}` });
    expect(driver.provisioned.has(clusterId)).toBe(true);
  });

  it("deploys: builds the environment with logs, starts replicas, makes the revision live", async () => {
    const r = await deploy("echo", config(), code(), 0);
    depId = r.deployment.id;
    v1 = r.revision.id;
    const job = await jobDone(r.jobId);
    expect(job).toMatchObject({ state: "succeeded", kind: "deployRevision" });
    expect(await revisionRow(v1)).toMatchObject({ state: "live", failureReason: null });
    expect(await deploymentRow(depId)).toMatchObject({
      liveRevisionId: v1,
      desiredRevisionId: v1,
      state: "ready",
    });
    const ready = await readyReplicas(depId, v1);
    expect(ready).toHaveLength(2);
    for (const rep of ready) expect(rep.address).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const logs = await db()
      .select()
      .from(environmentLogs)
      .where(eq(environmentLogs.envHash, r.revision.envHash));
    expect(logs.map((l) => l.line)).toContain("done");
    // The build's time (as the driver reports it) is metered to the organisation, deployment and
    // revision whose deploy needed it.
    const builds = await db().select().from(usageEvents).where(eq(usageEvents.kind, "build_seconds"));
    expect(builds.map((b) => [b.orgId, b.quantity, b.deploymentId, b.revisionId])).toEqual([
      [orgId, 1.5, depId, v1],
    ]);
    expect(platform.routingNotices).toContain(depId);
    const spec = driver.startedSpecs.find((s) => s.deploymentId === depId)!;
    expect(spec).toMatchObject({ deploymentName: "echo", applicationName: "app", revisionVersion: 1, orgId });
    // Composition: the replica reaches its siblings through the gateway with an app-scoped token.
    const org = await api.orgs.get({ orgId });
    expect(spec.extraEnv?.TESSERA_HANDLE_URL).toBe(`http://gateway.test:8080/-/handles/${org.slug}/app`);
    expect(verifyHandleToken(HANDLES.secret, spec.extraEnv!.TESSERA_HANDLE_TOKEN!)).toEqual({
      orgId,
      applicationId,
    });
    expect(JSON.stringify(spec.extraEnv)).not.toContain(HANDLES.secret);
  });

  it("rolls out an update replica by replica without dropping below the target", async () => {
    const before = driver.readyTimeline.get(depId)?.length ?? 0;
    const r = await deploy("echo", config(), code("return {'v': 2}"), 1);
    expect((await jobDone(r.jobId)).state).toBe("succeeded");
    expect(await revisionRow(r.revision.id)).toMatchObject({ state: "live" });
    expect((await revisionRow(v1)).state).toBe("superseded");
    await waitFor("old replicas gone", async () => {
      const rows = await activeReplicas(depId);
      return rows.length === 2 && rows.every((x) => x.revisionId === r.revision.id && x.state === "ready");
    });
    // maxUnavailable 0: at no point during the rollout were fewer than 2 replicas ready.
    const during = driver.readyTimeline.get(depId)!.slice(before);
    expect(during.length).toBeGreaterThanOrEqual(4);
    expect(Math.min(...during)).toBeGreaterThanOrEqual(2);
    // maxSurge 1: never more than 3 at once.
    expect(Math.max(...during)).toBeLessThanOrEqual(3);
    v1 = r.revision.id;
  });

  it("keeps the live revision serving when new code crashes, and shows why", async () => {
    const r = await deploy("echo", config(), code("raise CRASH_ON_START"), 2);
    const job = await jobDone(r.jobId);
    expect(job.state).toBe("failed");
    expect(job.error).toContain("SyntaxError");
    const failed = await revisionRow(r.revision.id);
    expect(failed.state).toBe("failed");
    expect(failed.failureReason).toContain("a replica failed: exited with code 1: SyntaxError");
    const dep = await deploymentRow(depId);
    expect(dep).toMatchObject({ liveRevisionId: v1, desiredRevisionId: v1, version: 2 });
    expect(dep.stateReason).toContain("revision v3 failed");
    await waitFor("failed replicas cleaned up", async () => {
      const rows = await activeReplicas(depId);
      return rows.length === 2 && rows.every((x) => x.revisionId === v1 && x.state === "ready");
    });
    // The next deploy names the live version again.
    const again = await deploy("echo", config(), code("return {'v': 4}"), 2);
    expect(again.revision.version).toBe(4);
    expect((await jobDone(again.jobId)).state).toBe("succeeded");
    v1 = again.revision.id;
  });

  it("fails a deploy whose environment cannot be built, with the build log", async () => {
    const r = await deploy(
      "echo",
      config({ environment: { kind: "pip", requirements: ["does-not-exist==1.0"] } }),
      code(),
      4,
    );
    const job = await jobDone(r.jobId);
    expect(job.state).toBe("failed");
    const rev = await revisionRow(r.revision.id);
    expect(rev.state).toBe("failed");
    expect(rev.failureReason).toBe("environment build failed: pip install exited with status 1");
    const logs = await db().select().from(environmentLogs).where(eq(environmentLogs.envHash, rev.envHash));
    expect(logs.map((l) => l.line)).toContain("ERROR: No matching distribution found for does-not-exist");
    expect((await deploymentRow(depId)).liveRevisionId).toBe(v1);
    expect(await readyReplicas(depId, v1)).toHaveLength(2);
  });

  it("rolls back a revision that never becomes ready within its startup timeout", async () => {
    const r = await deploy("echo", config({ healthCheck: { startupTimeoutS: 1 } }), code("NEVER_READY"), 4);
    const job = await jobDone(r.jobId);
    expect(job.state).toBe("failed");
    expect((await revisionRow(r.revision.id)).failureReason).toBe("never became ready within 1s");
    await waitFor("stuck replicas stopped", async () => {
      const rows = await activeReplicas(depId);
      return rows.every((x) => x.revisionId === v1) && rows.length === 2;
    });
  });

  it("lets exactly one of several concurrent deploys with the same prevVersion through", async () => {
    const attempts = await Promise.allSettled(
      [1, 2, 3, 4].map((i) => deploy("echo", config(), code(`return {'racer': ${i}}`), 4)),
    );
    const won = attempts.filter((a) => a.status === "fulfilled");
    expect(won).toHaveLength(1);
    for (const a of attempts.filter((x) => x.status === "rejected"))
      expect((a as PromiseRejectedResult).reason.message).toContain("someone else deployed");
    const winner = (won[0] as PromiseFulfilledResult<{ jobId: string; revision: { id: string } }>).value;
    expect((await jobDone(winner.jobId)).state).toBe("succeeded");
    expect((await deploymentRow(depId)).liveRevisionId).toBe(winner.revision.id);
    v1 = winner.revision.id;
  });

  it("replaces a replica that dies", async () => {
    await waitFor("settled", async () => (await activeReplicas(depId)).length === 2);
    const [victim] = await readyReplicas(depId, v1);
    driver.kill(victim!.id);
    await waitFor("replacement ready", async () => {
      const ready = await readyReplicas(depId, v1);
      return ready.length === 2 && !ready.some((x) => x.id === victim!.id);
    });
    const [dead] = await db().select().from(replicas).where(eq(replicas.id, victim!.id));
    expect(dead).toMatchObject({ state: "failed", stateReason: "killed by signal SIGKILL" });
    expect(dead!.stoppedAt).not.toBeNull();
  });

  it("runs a canary on its share of the replicas, aborts it, and promotes the next one", async () => {
    const version = async () => (await deploymentRow(depId)).version;
    const startCanary = async (body: string) =>
      api.traffic.deployCanary({
        orgId,
        deploymentId: depId,
        config: config(),
        code: code(body),
        prevVersion: await version(),
        percent: 50,
      });
    const split = async (canaryId: string) => {
      const ready = await readyReplicas(depId);
      return {
        live: ready.filter((r) => r.revisionId === v1).length,
        canary: ready.filter((r) => r.revisionId === canaryId).length,
        total: (await activeReplicas(depId)).length,
      };
    };

    const first = await startCanary("return {'canary': 1}");
    await waitFor("1 live + 1 canary", async () => {
      const s = await split(first.revision.id);
      return s.live === 1 && s.canary === 1 && s.total === 2;
    });
    expect((await revisionRow(first.revision.id)).state).toBe("starting");
    await api.traffic.abort({ orgId, deploymentId: depId });
    await waitFor("canary gone, live back to 2", async () => {
      const s = await split(first.revision.id);
      return s.live === 2 && s.canary === 0 && s.total === 2;
    });
    expect((await revisionRow(first.revision.id)).state).toBe("rolled_back");

    const second = await startCanary("return {'canary': 2}");
    await waitFor("second canary serving", async () => (await split(second.revision.id)).canary === 1);
    const [canaryReplica] = await readyReplicas(depId, second.revision.id);
    const promoted = await api.traffic.promote({ orgId, deploymentId: depId, prevVersion: await version() });
    expect((await jobDone(promoted.jobId)).state).toBe("succeeded");
    expect(await revisionRow(second.revision.id)).toMatchObject({ state: "live" });
    await waitFor("2 replicas of the promoted revision", async () => {
      const rows = await activeReplicas(depId);
      return (
        rows.length === 2 && rows.every((r) => r.revisionId === second.revision.id && r.state === "ready")
      );
    });
    // The canary's replica went on serving as one of the promoted revision's replicas.
    expect((await readyReplicas(depId)).map((r) => r.id)).toContain(canaryReplica!.id);
    v1 = second.revision.id;
  });

  it("applies operator scaling without a redeploy, parking at zero", async () => {
    await api.deployments.updateScaling({ orgId, deploymentId: depId, numReplicas: 3 });
    await waitFor("3 ready", async () => (await readyReplicas(depId, v1)).length === 3);
    await waitFor("deployment ready", async () => (await deploymentRow(depId)).state === "ready");
    await api.deployments.updateScaling({ orgId, deploymentId: depId, numReplicas: 0 });
    await waitFor("parked", async () => {
      const dep = await deploymentRow(depId);
      return dep.state === "parked" && (await activeReplicas(depId)).length === 0;
    });
    const events = await db().select().from(scalingEvents).where(eq(scalingEvents.deploymentId, depId));
    expect(events.map((e) => [e.fromReplicas, e.toReplicas, e.reason])).toEqual([
      [2, 3, "operator"],
      [3, 0, "operator"],
    ]);
    await api.deployments.updateScaling({ orgId, deploymentId: depId, numReplicas: 1 });
    await waitFor("unparked", async () => (await readyReplicas(depId, v1)).length === 1);
  });

  it("scales an idle autoscaled deployment to zero and wakes it on the gateway's signal", async () => {
    const r = await deploy(
      "sleepy",
      config({
        numReplicas: undefined,
        autoscaling: {
          minReplicas: 0,
          maxReplicas: 2,
          initialReplicas: 1,
          upscaleDelayS: 0,
          downscaleDelayS: 0,
        },
      }),
      code(),
      0,
    );
    expect((await jobDone(r.jobId)).state).toBe("succeeded");
    const id = r.deployment.id;
    await waitFor("scaled to zero", async () => {
      const dep = await deploymentRow(id);
      return dep.targetReplicas === 0 && (await activeReplicas(id)).length === 0;
    });
    // What a gateway does when a request arrives: it reports the held request and asks for a wake.
    const keys = redisKeys(platform.prefix);
    const now = Date.now();
    await platform.redis.zadd(keys.ongoing(id), now, `gw-test:${now}:1`);
    await platform.redis.publish(keys.wake, id);
    await waitFor("woken", async () => (await readyReplicas(id)).length === 1);
    const events = await db().select().from(scalingEvents).where(eq(scalingEvents.deploymentId, id));
    // Once the reported request is stale the deployment may go back to zero: only the start matters.
    // Whichever sees the held request first wakes it: the wake message, or the autoscaler's tick
    // reading the reported request (a cold start); either is one step from 0 to 1.
    const [down, up] = events.slice(0, 2).map((e) => [e.fromReplicas, e.toReplicas, e.reason]);
    expect(down).toEqual([1, 0, "scale_to_zero"]);
    expect(up?.slice(0, 2)).toEqual([0, 1]);
    expect(["wake", "cold_start"]).toContain(up?.[2]);
  });

  it("stops a deleted deployment's replicas", async () => {
    const r = await api.deployments.delete({ orgId, deploymentId: depId });
    expect((await jobDone(r.jobId)).state).toBe("succeeded");
    expect(await activeReplicas(depId)).toHaveLength(0);
    expect((await deploymentRow(depId)).state).toBe("deleted");
    expect([...driver.replicas.values()].filter((x) => x.deploymentId === depId)).toHaveLength(0);
  });

  it("never starts a replica twice when two provisioners share the platform", async () => {
    const second = platform.startProvisioner();
    await second.ready;
    try {
      const r = await deploy("pair", config({ numReplicas: 3 }), code(), 0);
      // Both reconcile the new deployment at once, over and over, while it rolls out.
      for (let i = 0; i < 10; i++) {
        await Promise.all([
          provisioner.controller.reconcileDeployment(r.deployment.id),
          second.controller.reconcileDeployment(r.deployment.id),
        ]);
      }
      expect((await jobDone(r.jobId)).state).toBe("succeeded");
      expect(driver.startedSpecs.filter((x) => x.deploymentId === r.deployment.id)).toHaveLength(3);
      expect(await readyReplicas(r.deployment.id)).toHaveLength(3);
    } finally {
      await second.close();
    }
  });

  it("provisions and destroys a second cluster", async () => {
    const { cluster, jobId } = await api.clusters.create({ orgId, name: "spare" });
    expect((await jobDone(jobId)).state).toBe("succeeded");
    expect(driver.provisioned.has(cluster.id)).toBe(true);
    const del = await api.clusters.delete({ orgId, clusterId: cluster.id });
    expect((await jobDone(del.jobId)).state).toBe("succeeded");
    const [row] = await db().select().from(clusters).where(eq(clusters.id, cluster.id));
    expect(row!.state).toBe("deleted");
    expect(driver.provisioned.has(cluster.id)).toBe(false);
  });

  it("ends the rollout of a deployment deleted while it deploys", async () => {
    const release = driver.gateEnvironments();
    let r: Awaited<ReturnType<typeof deploy>>;
    try {
      r = await deploy(
        "doomed",
        config({ numReplicas: 1, environment: { kind: "pip", requirements: ["scipy==1.13.0"] } }),
        code(),
        0,
      );
      await waitFor("building", async () => (await revisionRow(r.revision.id)).state === "building");
      await api.deployments.delete({ orgId, deploymentId: r.deployment.id });
      expect((await jobDone(r.jobId)).state).toBe("succeeded");
      expect((await revisionRow(r.revision.id)).state).toBe("superseded");
    } finally {
      release();
    }
    await waitFor("deleted", async () => (await deploymentRow(r.deployment.id)).state === "deleted");
    await provisioner.controller.builds.settled();
    await provisioner.controller.reconcileDeployment(r.deployment.id);
    expect(driver.startedSpecs.filter((x) => x.deploymentId === r.deployment.id)).toHaveLength(0);
  });

  it("finishes a deploy that a stopped provisioner left half done", async () => {
    const release = driver.gateEnvironments();
    const r = await deploy(
      "resume",
      config({ numReplicas: 1, environment: { kind: "pip", requirements: ["pandas==2.2.2"] } }),
      code(),
      0,
    );
    await waitFor("building", async () => (await revisionRow(r.revision.id)).state === "building");
    await provisioner.close({ force: true });
    release();
    provisioner = platform.startProvisioner();
    await provisioner.ready;
    await waitFor("live after restart", async () => (await revisionRow(r.revision.id)).state === "live");
    expect(await readyReplicas(r.deployment.id, r.revision.id)).toHaveLength(1);
    // The abandoned job is picked up again once its claim lapses, and sees the work done.
    expect((await jobDone(r.jobId)).state).toBe("succeeded");
  });

  it("re-adopts running replicas after a restart instead of starting new ones", async () => {
    const [dep] = await db().select().from(deployments).where(eq(deployments.name, "resume"));
    const before = (await readyReplicas(dep!.id)).map((x) => x.id);
    const started = driver.startedSpecs.length;
    await provisioner.close();
    provisioner = platform.startProvisioner();
    await provisioner.ready;
    await provisioner.controller.reconcileAll();
    expect((await readyReplicas(dep!.id)).map((x) => x.id)).toEqual(before);
    expect(driver.startedSpecs.length).toBe(started);
  });
});
