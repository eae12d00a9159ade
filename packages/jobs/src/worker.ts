import { CONTROL_QUEUE, type ControlJob, redisKeys, TesseraError } from "@tessera/core";
import { type Database, jobs } from "@tessera/db";
import { type Job, UnrecoverableError, Worker } from "bullmq";
import { and, eq, sql } from "drizzle-orm";
import type { Redis } from "ioredis";
import { type JobLogger, jobLogger } from "./job-log.js";
import type { QueuedControlJob } from "./queue.js";

export interface ControlJobContext {
  /** The `jobs` row id (what the API returned as `jobId`). */
  jobId: string;
  /** 1 for the first try. */
  attempt: number;
  /** Appends a line to the job's `job_logs`. */
  log: JobLogger;
}

export type ControlJobHandler = (job: ControlJob, ctx: ControlJobContext) => Promise<void>;

export interface ControlWorkerOptions {
  db: Database;
  /** A connection the worker duplicates (BullMQ workers need their own blocking connections). */
  redis: Redis;
  prefix?: string;
  handler: ControlJobHandler;
  /** Jobs run at once by this worker. Default 4. */
  concurrency?: number;
  /**
   * How long a job stays claimed without its worker renewing the claim; a provisioner that died
   * mid-job has its jobs handed to another worker after about this long. Default 30 s.
   */
  lockDurationMs?: number;
  /** How often workers look for such abandoned jobs. Default 30 s. */
  stalledIntervalMs?: number;
  log?: (level: "info" | "warn" | "error", msg: string, fields?: Record<string, unknown>) => void;
}

export interface ControlWorker {
  worker: Worker<QueuedControlJob>;
  /** Resolves once the worker is connected and taking jobs. */
  ready: Promise<void>;
  /** `force` abandons running jobs (they are retried elsewhere once their lock lapses). */
  close(opts?: { force?: boolean }): Promise<void>;
}

/** An error that retrying cannot fix (bad input, missing configuration): the job fails at once. */
export function permanentFailure(message: string): UnrecoverableError {
  return new UnrecoverableError(message);
}

function errorText(err: unknown): string {
  if (err instanceof TesseraError) return `${err.code}: ${err.message}`;
  if (err instanceof Error) return err.message;
  return String(err);
}

function defaultLog(level: "info" | "warn" | "error", msg: string, fields?: Record<string, unknown>) {
  const line = JSON.stringify({ level, component: "control-worker", msg, ...fields });
  if (level === "info") console.log(line);
  else console.error(line);
}

/**
 * Runs control jobs and keeps their `jobs` rows current: `running` (attempts counted) while a try
 * runs, `queued` with the error between tries, then `succeeded` or `failed`. A row whose
 * generation moved on while a try ran (someone enqueued the same key again) is left to the newer
 * generation's job.
 */
export function createControlWorker(options: ControlWorkerOptions): ControlWorker {
  const { db, handler } = options;
  const log = options.log ?? defaultLog;
  const sameGeneration = (rowId: string, generation: number) =>
    and(eq(jobs.id, rowId), sql`coalesce((${jobs.payload}->>'generation')::int, 0) = ${generation}`);

  async function process(bull: Job<QueuedControlJob>): Promise<void> {
    const { rowId, generation, job } = bull.data;
    const claimed = await db
      .update(jobs)
      .set({ state: "running", attempts: sql`${jobs.attempts} + 1`, startedAt: new Date(), error: null })
      .where(sameGeneration(rowId, generation))
      .returning({ id: jobs.id });
    if (claimed.length === 0) return;
    const attempt = bull.attemptsMade + 1;
    const jobLog = jobLogger(db, rowId);
    try {
      await handler(job, { jobId: rowId, attempt, log: jobLog });
      await db
        .update(jobs)
        .set({ state: "succeeded", error: null, finishedAt: new Date() })
        .where(sameGeneration(rowId, generation));
    } catch (err) {
      const final = err instanceof UnrecoverableError || attempt >= (bull.opts.attempts ?? 1);
      const message = errorText(err);
      await jobLog(final ? `failed: ${message}` : `attempt ${attempt} failed, retrying: ${message}`);
      await db
        .update(jobs)
        .set({ state: final ? "failed" : "queued", error: message, finishedAt: final ? new Date() : null })
        .where(sameGeneration(rowId, generation));
      log(final ? "error" : "warn", "control job failed", {
        kind: job.kind,
        jobId: rowId,
        attempt,
        err: message,
      });
      throw err;
    }
  }

  const connection = options.redis.duplicate({ maxRetriesPerRequest: null });
  const worker = new Worker<QueuedControlJob>(CONTROL_QUEUE, process, {
    connection,
    prefix: redisKeys(options.prefix).bullPrefix,
    concurrency: options.concurrency ?? 4,
    lockDuration: options.lockDurationMs ?? 30_000,
    stalledInterval: options.stalledIntervalMs ?? 30_000,
  });
  worker.on("error", (err) => log("warn", "control worker error", { err: String(err) }));
  // A job abandoned by dead workers too often is failed by BullMQ without running the processor
  // again: its row, still `running`, says so too.
  worker.on("failed", (bull, err) => {
    if (!bull) return;
    const { rowId, generation } = bull.data;
    db.update(jobs)
      .set({ state: "failed", error: err.message, finishedAt: new Date() })
      .where(and(sameGeneration(rowId, generation), eq(jobs.state, "running")))
      .catch((e: unknown) => log("warn", "could not record a failed job", { jobId: rowId, err: String(e) }));
  });
  const ready = worker.waitUntilReady().then(() => undefined);

  return {
    worker,
    ready,
    async close(opts = {}) {
      await worker.close(opts.force ?? false);
      await connection.quit().catch(() => connection.disconnect());
    },
  };
}
