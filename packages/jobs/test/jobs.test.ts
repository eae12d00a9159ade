import { type ControlJob, redisKeys } from "@tessera/core";
import { jobLogs, jobs } from "@tessera/db";
import { createTestDatabase, type TestDatabase, testRedisPrefix } from "@tessera/db/testing";
import { asc, eq } from "drizzle-orm";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BullJobQueue,
  type ControlJobHandler,
  type ControlWorker,
  createControlWorker,
  createRedisNotifier,
  permanentFailure,
} from "../src/index.js";

let tdb: TestDatabase;
let redis: Redis;
let prefix: string;
let queue: BullJobQueue;
const workers: ControlWorker[] = [];

beforeAll(async () => {
  tdb = await createTestDatabase("jobs");
  redis = new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
  prefix = testRedisPrefix("jobs");
  queue = new BullJobQueue({ db: tdb.db, redis, prefix, attempts: 3, backoffMs: 20 });
});

afterAll(async () => {
  for (const w of workers) await w.close({ force: true });
  await queue.queue.obliterate({ force: true }).catch(() => {});
  await queue.close();
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
  await tdb.drop();
});

async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | null | false>,
  ms = 15_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function row(jobId: string) {
  const [r] = await tdb.db.select().from(jobs).where(eq(jobs.id, jobId));
  return r!;
}

function startWorker(handler: ControlJobHandler) {
  const w = createControlWorker({ db: tdb.db, redis, prefix, handler, concurrency: 2 });
  workers.push(w);
  return w;
}

describe("BullJobQueue + control worker", () => {
  it("collapses duplicate enqueues of a queued job into one row and one BullMQ job", async () => {
    const job: ControlJob = { kind: "provisionCluster", clusterId: "00000000-0000-4000-8000-000000000001" };
    const a = await queue.enqueue(job);
    const b = await queue.enqueue(job);
    expect(b.jobId).toBe(a.jobId);
    const counts = await queue.queue.getJobCounts("waiting", "delayed", "active");
    expect((counts.waiting ?? 0) + (counts.delayed ?? 0) + (counts.active ?? 0)).toBe(1);
    const r = await row(a.jobId);
    expect(r).toMatchObject({
      kind: "provisionCluster",
      state: "queued",
      dedupeKey: `provisionCluster:${job.clusterId}`,
    });

    const seen: ControlJob[] = [];
    const w = startWorker(async (j, ctx) => {
      seen.push(j);
      await ctx.log(`handled ${j.kind}`);
    });
    await w.ready;
    await waitFor("job succeeded", async () => (await row(a.jobId)).state === "succeeded");
    expect(seen).toEqual([job]);
    const done = await row(a.jobId);
    expect(done.attempts).toBe(1);
    expect(done.finishedAt).not.toBeNull();
    const lines = await tdb.db.select().from(jobLogs).where(eq(jobLogs.jobId, a.jobId));
    expect(lines.map((l) => l.line)).toEqual(["handled provisionCluster"]);

    // The same key after the job finished is new work: it runs again.
    await queue.enqueue(job);
    await waitFor("second run", async () => seen.length === 2 && (await row(a.jobId)).state === "succeeded");
    await w.close();
  });

  it("retries with backoff, then marks the row failed with the error and attempts", async () => {
    let tries = 0;
    const w = startWorker(async () => {
      tries++;
      throw new Error(`boom ${tries}`);
    });
    const { jobId } = await queue.enqueue({ kind: "scaleDeployment", deploymentId: "d-retry" });
    const failed = await waitFor("job failed", async () => {
      const r = await row(jobId);
      return r.state === "failed" ? r : undefined;
    });
    expect(tries).toBe(3);
    expect(failed.attempts).toBe(3);
    expect(failed.error).toBe("boom 3");
    const lines = await tdb.db
      .select()
      .from(jobLogs)
      .where(eq(jobLogs.jobId, jobId))
      .orderBy(asc(jobLogs.id));
    expect(lines.map((l) => l.line)).toEqual([
      "attempt 1 failed, retrying: boom 1",
      "attempt 2 failed, retrying: boom 2",
      "failed: boom 3",
    ]);
    await w.close();
  });

  it("does not retry a permanent failure", async () => {
    let tries = 0;
    const w = startWorker(async () => {
      tries++;
      throw permanentFailure("revision not found");
    });
    const { jobId } = await queue.enqueue({ kind: "deployRevision", revisionId: "r-perm" });
    await waitFor("job failed", async () => (await row(jobId)).state === "failed");
    expect(tries).toBe(1);
    expect((await row(jobId)).error).toBe("revision not found");
    await w.close();
  });

  it("runs a key again when it is enqueued while its job is running", async () => {
    let runs = 0;
    let release!: () => void;
    const firstRunBlocked = new Promise<void>((r) => {
      release = r;
    });
    const w = startWorker(async () => {
      runs++;
      if (runs === 1) await firstRunBlocked;
    });
    const job: ControlJob = { kind: "deleteDeployment", deploymentId: "d-rerun" };
    const { jobId } = await queue.enqueue(job);
    await waitFor("first run started", async () => (await row(jobId)).state === "running");
    await queue.enqueue(job);
    // The re-armed row is not finished by the older run.
    release();
    await waitFor("second run", async () => runs === 2 && (await row(jobId)).state === "succeeded");
    expect((await row(jobId)).payload).toMatchObject({ generation: 1 });
    await w.close();
  });

  it("publishes platform notices on the shared channels", async () => {
    const keys = redisKeys(prefix);
    const sub = redis.duplicate();
    const got: [string, string][] = [];
    sub.on("message", (channel: string, message: string) => got.push([channel, message]));
    await sub.subscribe(keys.routingChanged, keys.apiKeysChanged);
    const notify = createRedisNotifier(redis, prefix);
    await notify({ kind: "routingChanged", deploymentId: "dep-1" });
    await notify({ kind: "apiKeyRevoked", prefix: "tk_abc" });
    await waitFor("notices", async () => got.length === 2);
    expect(got).toEqual([
      [keys.routingChanged, "dep-1"],
      [keys.apiKeysChanged, "tk_abc"],
    ]);
    await sub.quit();
  });
});
