import { CONTROL_QUEUE, type ControlJob, type JobQueue, jobSubjectId, redisKeys } from "@tessera/core";
import { type Database, jobs } from "@tessera/db";
import { Queue } from "bullmq";
import { sql } from "drizzle-orm";
import type { Redis } from "ioredis";

/** What travels in a BullMQ job: the control job plus the `jobs` row and generation it runs for. */
export interface QueuedControlJob {
  rowId: string;
  generation: number;
  job: ControlJob;
}

export interface BullJobQueueOptions {
  db: Database;
  redis: Redis;
  /** Redis key prefix (`REDIS_PREFIX`); BullMQ keys live under `redisKeys(prefix).bullPrefix`. */
  prefix?: string;
  /** Tries per job before it is marked failed. Default 5. */
  attempts?: number;
  /** First retry delay; doubles on every further try. Default 1000 ms. */
  backoffMs?: number;
}

export function defaultDedupeKey(job: ControlJob): string {
  return `${job.kind}:${jobSubjectId(job)}`;
}

/** BullMQ ids may not contain ':'; the row id and generation make one deterministic per enqueue round. */
export function bullJobId(rowId: string, generation: number): string {
  return `${rowId}-g${generation}`;
}

export function controlQueue(redis: Redis, prefix?: string): Queue<QueuedControlJob> {
  return new Queue<QueuedControlJob>(CONTROL_QUEUE, {
    connection: redis,
    prefix: redisKeys(prefix).bullPrefix,
  });
}

/**
 * The JobQueue the API uses in production. One `jobs` row per dedupe key; its `payload.generation`
 * names the BullMQ job that does the work. Enqueueing a key whose job is still queued adds the
 * same BullMQ id again, which BullMQ ignores (duplicates collapse); enqueueing a key whose job is
 * running or finished starts a new generation, because the desired state may have changed since
 * that job read it. Workers re-read state anyway, so an extra run converges instead of acting twice.
 */
export class BullJobQueue implements JobQueue {
  readonly queue: Queue<QueuedControlJob>;
  private readonly attempts: number;
  private readonly backoffMs: number;

  constructor(private readonly options: BullJobQueueOptions) {
    this.queue = controlQueue(options.redis, options.prefix);
    this.attempts = options.attempts ?? 5;
    this.backoffMs = options.backoffMs ?? 1000;
  }

  async enqueue(
    job: ControlJob,
    opts: { dedupeKey?: string; orgId?: string | null } = {},
  ): Promise<{ jobId: string }> {
    const dedupeKey = opts.dedupeKey ?? defaultDedupeKey(job);
    const rearm = sql.raw(`"jobs"."state" <> 'queued'`);
    const [row] = await this.options.db
      .insert(jobs)
      .values({
        orgId: opts.orgId ?? null,
        kind: job.kind,
        dedupeKey,
        subjectId: jobSubjectId(job),
        payload: { ...job, generation: 0 },
      })
      .onConflictDoUpdate({
        target: jobs.dedupeKey,
        set: {
          payload: sql`case when ${rearm}
            then jsonb_set(excluded.payload, '{generation}', to_jsonb(coalesce(("jobs"."payload"->>'generation')::int, 0) + 1))
            else "jobs"."payload" end`,
          state: "queued",
          attempts: sql`case when ${rearm} then 0 else "jobs"."attempts" end`,
          error: sql`case when ${rearm} then null else "jobs"."error" end`,
          startedAt: sql`case when ${rearm} then null else "jobs"."started_at" end`,
          finishedAt: sql`case when ${rearm} then null else "jobs"."finished_at" end`,
        },
      })
      .returning({ id: jobs.id, payload: jobs.payload });
    const generation = Number(row!.payload.generation ?? 0);
    await this.queue.add(
      job.kind,
      { rowId: row!.id, generation, job },
      {
        jobId: bullJobId(row!.id, generation),
        attempts: this.attempts,
        backoff: { type: "exponential", delay: this.backoffMs },
        removeOnComplete: { age: 3600, count: 1000 },
        removeOnFail: { age: 24 * 3600, count: 1000 },
      },
    );
    return { jobId: row!.id };
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}
