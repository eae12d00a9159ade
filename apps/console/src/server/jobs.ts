import { type ControlJob, type JobQueue, jobSubjectId } from "@tessera/core";
import { type Database, jobs } from "@tessera/db";
import { db } from "./db";

/**
 * The console's job queue. TODO(integrator): when `@tessera/jobs` (branch `provisioner`) is
 * merged, return its `BullJobQueue` here so the provisioner's workers are woken through Redis.
 * Until then this queue records each job as a `jobs` row (state `queued`), which is what the API's
 * progress procedures read and what a provisioner polling Postgres would pick up; nothing is
 * claimed to run.
 */
export class RowJobQueue implements JobQueue {
  constructor(private readonly database: Database) {}

  async enqueue(
    job: ControlJob,
    opts: { dedupeKey?: string; orgId?: string | null } = {},
  ): Promise<{ jobId: string }> {
    const dedupeKey = opts.dedupeKey ?? `${job.kind}:${jobSubjectId(job)}`;
    // Upserting the key onto itself returns the existing row's id: enqueueing twice is one job.
    const [row] = await this.database
      .insert(jobs)
      .values({
        orgId: opts.orgId ?? null,
        kind: job.kind,
        dedupeKey,
        subjectId: jobSubjectId(job),
        payload: job as unknown as Record<string, unknown>,
      })
      .onConflictDoUpdate({ target: jobs.dedupeKey, set: { dedupeKey } })
      .returning({ id: jobs.id });
    return { jobId: row!.id };
  }
}

const holder = globalThis as unknown as { __tesseraJobs?: JobQueue };

export function jobQueue(): JobQueue {
  holder.__tesseraJobs ??= new RowJobQueue(db());
  return holder.__tesseraJobs;
}
