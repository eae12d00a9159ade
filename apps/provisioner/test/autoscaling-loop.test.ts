import { randomUUID } from "node:crypto";
import { type ControlJob, deploymentConfig, type JobQueue, redisKeys } from "@tessera/core";
import {
  applications,
  clusters,
  type DeploymentState,
  deployments,
  organisations,
  revisions,
  scalingEvents,
} from "@tessera/db";
import { createTestDatabase, type TestDatabase, testRedisPrefix } from "@tessera/db/testing";
import { asc, eq, inArray } from "drizzle-orm";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AutoscalerHandle, policyStateKey, startAutoscaler } from "../src/autoscaling/index.js";

/** What the provisioner's BullMQ queue would receive. */
class RecordingQueue implements JobQueue {
  readonly jobs: { job: ControlJob; orgId: string | null | undefined }[] = [];
  async enqueue(job: ControlJob, opts?: { dedupeKey?: string; orgId?: string | null }) {
    this.jobs.push({ job, orgId: opts?.orgId });
    return { jobId: randomUUID() };
  }
  scaleJobsFor(deploymentId: string) {
    return this.jobs.filter((j) => j.job.kind === "scaleDeployment" && j.job.deploymentId === deploymentId);
  }
}

/** Writes ongoing-request samples the way gateways do, every 50 ms, per gateway. */
class GatewaySimulator {
  private readonly load = new Map<string, Map<string, number>>();
  private readonly timer: NodeJS.Timeout;
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {
    this.timer = setInterval(() => void this.write(), 50);
  }
  set(deploymentId: string, perGateway: Record<string, number>) {
    this.load.set(deploymentId, new Map(Object.entries(perGateway)));
  }
  private async write() {
    const now = Date.now();
    const p = this.redis.pipeline();
    for (const [id, gateways] of this.load)
      for (const [gw, ongoing] of gateways)
        p.zadd(redisKeys(this.prefix).ongoing(id), now, `${gw}:${now}:${ongoing}`);
    await p.exec().catch(() => {});
  }
  stop() {
    clearInterval(this.timer);
  }
}

async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  while (Date.now() < deadline) {
    last = await probe();
    if (last !== undefined) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

let t: TestDatabase;
let redis: Redis;
let prefix: string;
let queue: RecordingQueue;
let gateways: GatewaySimulator;
let autoscaler: AutoscalerHandle;
let orgId: string;

/** Loop timings scaled down from the production defaults (1 s tick, 30 s look-back). */
const fastLoop = {
  intervalMs: 100,
  lookbackMs: 500,
  bucketMs: 100,
  staleMs: 300,
  wakeDebounceMs: 1000,
  log: () => {},
};

const fast = { targetOngoingRequests: 2, upscaleDelayS: 0.3, downscaleDelayS: 0.4 };

interface Setup {
  scaling?: Record<string, unknown>;
  revisionScaling?: { numReplicas?: number; autoscaling?: Record<string, unknown> };
  targetReplicas: number;
  state?: DeploymentState;
  quota?: { cpus: number; memoryMb: number; gpus: number; maxReplicas: number };
  clusterId?: string;
}

async function createCluster(quota = { cpus: 64, memoryMb: 65_536, gpus: 0, maxReplicas: 100 }) {
  const [c] = await t.db
    .insert(clusters)
    .values({ orgId, name: `c-${randomUUID().slice(0, 8)}`, quota, state: "ready" })
    .returning();
  const [app] = await t.db
    .insert(applications)
    .values({ orgId, clusterId: c!.id, name: `app-${randomUUID().slice(0, 8)}` })
    .returning();
  return { clusterId: c!.id, applicationId: app!.id };
}

async function createDeployment(s: Setup): Promise<string> {
  const cluster = s.clusterId
    ? {
        clusterId: s.clusterId,
        applicationId: (
          await t.db.select().from(applications).where(eq(applications.clusterId, s.clusterId))
        )[0]!.id,
      }
    : await createCluster(s.quota);
  const [d] = await t.db
    .insert(deployments)
    .values({
      orgId,
      ...cluster,
      name: `d-${randomUUID().slice(0, 8)}`,
      scaling: s.scaling ?? {},
      targetReplicas: s.targetReplicas,
      state: s.state ?? "ready",
      version: 1,
    })
    .returning();
  const config = deploymentConfig.parse({
    runtime: "python",
    entry: "handler:Model",
    resources: { cpus: 1, memoryMb: 256 },
    ...(s.revisionScaling ?? { numReplicas: 1 }),
  });
  const [rev] = await t.db
    .insert(revisions)
    .values({
      orgId,
      deploymentId: d!.id,
      version: 1,
      config,
      code: { files: { "handler.py": "class Model: pass\n" }, encoding: "utf8" },
      envHash: "none",
      state: "live",
    })
    .returning();
  await t.db
    .update(deployments)
    .set({ liveRevisionId: rev!.id, desiredRevisionId: rev!.id })
    .where(eq(deployments.id, d!.id));
  return d!.id;
}

async function targetOf(id: string): Promise<number> {
  const [d] = await t.db
    .select({ n: deployments.targetReplicas })
    .from(deployments)
    .where(eq(deployments.id, id));
  return d!.n;
}

async function eventsOf(id: string) {
  return t.db
    .select()
    .from(scalingEvents)
    .where(eq(scalingEvents.deploymentId, id))
    .orderBy(asc(scalingEvents.id));
}

async function waitForTarget(id: string, n: number) {
  await waitFor(`target_replicas = ${n}`, async () => ((await targetOf(id)) === n ? true : undefined));
}

/** Lets the loop run `n` more full ticks: proof that it had the chance to act. */
async function waitTicks(n: number) {
  const start = autoscaler.stats().ticks;
  await waitFor(`${n} ticks`, () => (autoscaler.stats().ticks >= start + n ? true : undefined));
}

beforeAll(async () => {
  t = await createTestDatabase("autoscaler");
  redis = new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379", { maxRetriesPerRequest: 2 });
  prefix = testRedisPrefix("autoscaler");
  queue = new RecordingQueue();
  gateways = new GatewaySimulator(redis, prefix);
  const [org] = await t.db.insert(organisations).values({ slug: "acme", name: "Acme" }).returning();
  orgId = org!.id;
  autoscaler = startAutoscaler({
    db: t.db,
    redis,
    prefix,
    queue,
    ...fastLoop,
  });
  await autoscaler.ready;
});

afterAll(async () => {
  gateways?.stop();
  await autoscaler?.stop();
  if (redis) {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  }
  await t?.drop();
});

describe("autoscaler loop", () => {
  it("scales up towards ceil(load / target) after the upscale delay, recording events and jobs", async () => {
    const id = await createDeployment({
      scaling: { autoscaling: { minReplicas: 1, maxReplicas: 10, ...fast, downscaleDelayS: 60 } },
      targetReplicas: 1,
    });
    gateways.set(id, { "gw-a": 6, "gw-b": 4 });
    await waitForTarget(id, 5);

    const events = await eventsOf(id);
    expect(events.length).toBeGreaterThan(0);
    for (const e of events) {
      expect(e.reason).toBe("upscale");
      expect(e.toReplicas).toBeGreaterThan(e.fromReplicas);
      expect(e.orgId).toBe(orgId);
      expect(e.metrics).toMatchObject({
        targetOngoingRequests: 2,
        minReplicas: 1,
        maxReplicas: 10,
        gateways: 2,
      });
      expect((e.metrics as { avgOngoing: number }).avgOngoing).toBeGreaterThan(0);
    }
    expect(events[0]!.fromReplicas).toBe(1);
    expect(events.at(-1)!.toReplicas).toBe(5);
    // Chained: each event starts where the previous one ended.
    for (let i = 1; i < events.length; i++) expect(events[i]!.fromReplicas).toBe(events[i - 1]!.toReplicas);
    expect(queue.scaleJobsFor(id).length).toBe(events.length);
    expect(queue.scaleJobsFor(id)[0]!.orgId).toBe(orgId);

    // Load of 10 / target 2 never asks for more than 5.
    await waitTicks(5);
    expect(await targetOf(id)).toBe(5);
    const stored = await redis.get(policyStateKey(redisKeys(prefix).prefix, id));
    expect(JSON.parse(stored!)).toMatchObject({ forReplicas: 5 });
  });

  it("zero traffic: scales down to minReplicas and stays there", async () => {
    const id = await createDeployment({
      scaling: { autoscaling: { minReplicas: 2, maxReplicas: 10, ...fast } },
      targetReplicas: 6,
    });
    await waitForTarget(id, 2);
    await waitTicks(5);
    expect(await targetOf(id)).toBe(2);
    const events = await eventsOf(id);
    expect(events.map((e) => [e.fromReplicas, e.toReplicas, e.reason])).toEqual([[6, 2, "downscale"]]);
    expect(events[0]!.metrics).toMatchObject({ avgOngoing: 0 });
    expect(queue.scaleJobsFor(id)).toHaveLength(1);
  });

  it("minReplicas 0 and zero traffic: scales to zero", async () => {
    const id = await createDeployment({
      scaling: { autoscaling: { minReplicas: 0, maxReplicas: 4, ...fast } },
      targetReplicas: 3,
    });
    await waitForTarget(id, 0);
    const events = await eventsOf(id);
    expect(events.at(-1)).toMatchObject({ toReplicas: 0, reason: "scale_to_zero" });
  });

  it("traffic for a deployment at zero: cold start to at least one replica", async () => {
    const id = await createDeployment({
      scaling: { autoscaling: { minReplicas: 0, maxReplicas: 4, ...fast, downscaleDelayS: 60 } },
      targetReplicas: 0,
    });
    await waitTicks(3);
    expect(await targetOf(id)).toBe(0);
    gateways.set(id, { "gw-a": 1 });
    await waitFor("a cold start", async () => ((await targetOf(id)) >= 1 ? true : undefined));
    expect((await eventsOf(id))[0]).toMatchObject({ fromReplicas: 0, reason: "cold_start" });
  });

  it("a wake message sets a scaled-to-zero deployment to one replica at once, once", async () => {
    const id = await createDeployment({
      scaling: { autoscaling: { minReplicas: 0, maxReplicas: 4, ...fast, downscaleDelayS: 60 } },
      targetReplicas: 0,
    });
    // Bad messages are ignored without disturbing the loop.
    await redis.publish(redisKeys(prefix).wake, "not-a-deployment-id");
    await redis.publish(redisKeys(prefix).wake, randomUUID());
    for (let i = 0; i < 5; i++) await redis.publish(redisKeys(prefix).wake, id);
    await waitForTarget(id, 1);
    await waitTicks(3);
    const events = await eventsOf(id);
    expect(events.map((e) => [e.fromReplicas, e.toReplicas, e.reason])).toEqual([[0, 1, "wake"]]);
    expect(queue.scaleJobsFor(id)).toHaveLength(1);
    expect(autoscaler.stats().lastError).toBeNull();
  });

  it("leaves fixed numReplicas and parked deployments alone, even under load or a wake", async () => {
    const fixed = await createDeployment({ scaling: { numReplicas: 3 }, targetReplicas: 3 });
    const parked = await createDeployment({
      scaling: { numReplicas: 0 },
      revisionScaling: { autoscaling: { minReplicas: 0, maxReplicas: 4, ...fast } },
      targetReplicas: 0,
      state: "parked",
    });
    const fromRevision = await createDeployment({
      scaling: {},
      revisionScaling: { numReplicas: 2 },
      targetReplicas: 2,
    });
    for (const id of [fixed, parked, fromRevision]) gateways.set(id, { "gw-a": 50 });
    await redis.publish(redisKeys(prefix).wake, parked);
    // Barrier: a deployment created after them scales, so the loop has seen them all.
    const witness = await createDeployment({
      scaling: { autoscaling: { minReplicas: 1, maxReplicas: 3, ...fast, upscaleDelayS: 0 } },
      targetReplicas: 1,
    });
    gateways.set(witness, { "gw-a": 50 });
    await waitForTarget(witness, 3);
    await waitTicks(5);
    expect([await targetOf(fixed), await targetOf(parked), await targetOf(fromRevision)]).toEqual([3, 0, 2]);
    for (const id of [fixed, parked, fromRevision]) {
      expect(await eventsOf(id)).toEqual([]);
      expect(queue.scaleJobsFor(id)).toEqual([]);
    }
  });

  it("a scaling change takes effect without a redeploy (revision config as fallback)", async () => {
    const id = await createDeployment({
      scaling: { numReplicas: 1 },
      revisionScaling: { autoscaling: { minReplicas: 1, maxReplicas: 8, ...fast, downscaleDelayS: 60 } },
      targetReplicas: 1,
    });
    gateways.set(id, { "gw-a": 8 });
    await waitTicks(5);
    expect(await targetOf(id)).toBe(1);
    // Clearing the row's scaling hands control to the revision's autoscaling config.
    await t.db.update(deployments).set({ scaling: {} }).where(eq(deployments.id, id));
    await waitForTarget(id, 4);
    // Lowering maxReplicas in the row applies at once.
    await t.db
      .update(deployments)
      .set({ scaling: { autoscaling: { minReplicas: 1, maxReplicas: 2, ...fast, downscaleDelayS: 60 } } })
      .where(eq(deployments.id, id));
    await waitForTarget(id, 2);
    expect((await eventsOf(id)).at(-1)).toMatchObject({ fromReplicas: 4, toReplicas: 2, reason: "bounds" });
  });

  it("respects the cluster quota", async () => {
    const { clusterId } = await createCluster({ cpus: 64, memoryMb: 65_536, gpus: 0, maxReplicas: 4 });
    const neighbour = await createDeployment({ clusterId, scaling: { numReplicas: 1 }, targetReplicas: 1 });
    const id = await createDeployment({
      clusterId,
      scaling: { autoscaling: { minReplicas: 1, maxReplicas: 10, ...fast, downscaleDelayS: 60 } },
      targetReplicas: 1,
    });
    gateways.set(id, { "gw-a": 30, "gw-b": 10 });
    await waitForTarget(id, 3);
    await waitTicks(5);
    expect(await targetOf(id)).toBe(3);
    expect(await targetOf(neighbour)).toBe(1);
    for (const e of await eventsOf(id)) expect(e.metrics).toMatchObject({ quotaMaxReplicas: 3 });
  });

  it("hysteresis state persisted in Redis survives a restart, and is dropped when the count moved", async () => {
    const slow = {
      minReplicas: 1,
      maxReplicas: 10,
      targetOngoingRequests: 2,
      upscaleDelayS: 600,
      downscaleDelayS: 600,
    };
    // Parked while the state is seeded, so the running loop cannot write its own over it.
    const restored = await createDeployment({
      scaling: { autoscaling: slow },
      targetReplicas: 3,
      state: "parked",
    });
    const stale = await createDeployment({
      scaling: { autoscaling: slow },
      targetReplicas: 3,
      state: "parked",
    });
    const hourAgo = Date.now() - 3600_000;
    // What a previous provisioner left behind: load has been low for an hour.
    const state = (forReplicas: number) =>
      JSON.stringify({ forReplicas, upSince: null, downSince: hourAgo, zeroSince: hourAgo });
    await redis.set(policyStateKey(prefix, restored), state(3));
    // Computed for another replica count (the operator or a wake changed it since): not applicable.
    await redis.set(policyStateKey(prefix, stale), state(5));
    await t.db
      .update(deployments)
      .set({ state: "ready" })
      .where(inArray(deployments.id, [restored, stale]));
    await waitForTarget(restored, 1);
    await waitTicks(5);
    expect(await targetOf(stale)).toBe(3);
    expect((await eventsOf(restored)).map((e) => e.reason)).toEqual(["downscale"]);
  });

  // Last: it stops the file's main instance.
  it("several instances: one leader acts, another takes over when it stops", async () => {
    const second = startAutoscaler({ db: t.db, redis, prefix, queue, ...fastLoop });
    try {
      await second.ready;
      await waitFor("the second instance to tick", () => (second.stats().ticks >= 3 ? true : undefined));
      expect(autoscaler.stats().leader).toBe(true);
      expect(second.stats().leader).toBe(false);
      await autoscaler.stop();
      await waitFor("a new leader", () => (second.stats().leader ? true : undefined));
      // The new leader does the work: a deployment created now still gets scaled.
      const id = await createDeployment({
        scaling: { autoscaling: { minReplicas: 1, maxReplicas: 2, ...fast, upscaleDelayS: 0 } },
        targetReplicas: 1,
      });
      gateways.set(id, { "gw-a": 10 });
      await waitForTarget(id, 2);
    } finally {
      await second.stop();
    }
  });
});
