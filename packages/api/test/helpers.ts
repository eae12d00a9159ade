import { type ControlJob, type JobQueue, jobSubjectId, type PlatformNotice } from "@tessera/core";
import { type Database, jobs } from "@tessera/db";
import { createTestDatabase, type TestDatabase } from "@tessera/db/testing";
import { TRPCError } from "@trpc/server";
import { eq } from "drizzle-orm";
import { expect } from "vitest";
import { type AuthInput, createCaller, createSession, describeError, signUp } from "../src/index.js";

/**
 * The JobQueue contract without BullMQ: records every enqueue for assertions and, like the real
 * queue, keeps a `jobs` row per dedupe key so `jobs.get` has something to read.
 */
export class RecordingJobQueue implements JobQueue {
  readonly enqueued: { job: ControlJob; orgId: string | null; jobId: string }[] = [];
  constructor(private readonly db: Database) {}
  async enqueue(
    job: ControlJob,
    opts: { dedupeKey?: string; orgId?: string | null } = {},
  ): Promise<{ jobId: string }> {
    const dedupeKey = opts.dedupeKey ?? `${job.kind}:${jobSubjectId(job)}`;
    const [row] = await this.db
      .insert(jobs)
      .values({
        orgId: opts.orgId ?? null,
        kind: job.kind,
        dedupeKey,
        subjectId: jobSubjectId(job),
        payload: job as unknown as Record<string, unknown>,
      })
      .onConflictDoNothing()
      .returning({ id: jobs.id });
    const jobId =
      row?.id ??
      (await this.db.select({ id: jobs.id }).from(jobs).where(eq(jobs.dedupeKey, dedupeKey)))[0]!.id;
    this.enqueued.push({ job, orgId: opts.orgId ?? null, jobId });
    return { jobId };
  }
  clear(): void {
    this.enqueued.length = 0;
  }
}

export interface TestEnv {
  tdb: TestDatabase;
  db: Database;
  jobs: RecordingJobQueue;
  /** Notices the API published for gateways, in order. */
  notices: PlatformNotice[];
  caller(auth: AuthInput): ReturnType<typeof createCaller>;
  /** Sign up and sign in: the user, their personal org and an API caller with their session. */
  user(email: string, opts?: { adminEmails?: string[] }): Promise<TestUser>;
}

export interface TestUser {
  id: string;
  email: string;
  orgId: string;
  sessionId: string;
  api: Awaited<ReturnType<typeof createCaller>>;
}

export async function createTestEnv(label: string): Promise<TestEnv> {
  const tdb = await createTestDatabase(label);
  const queue = new RecordingJobQueue(tdb.db);
  const notices: PlatformNotice[] = [];
  const notify = async (notice: PlatformNotice) => {
    notices.push(notice);
  };
  const env: TestEnv = {
    tdb,
    db: tdb.db,
    jobs: queue,
    notices,
    caller: (auth) => createCaller({ db: tdb.db, jobs: queue, auth, notify }),
    async user(email, opts = {}) {
      const { user, org } = await signUp(
        tdb.db,
        { email, password: "correct horse battery", name: email.split("@")[0] },
        { adminEmails: opts.adminEmails ?? [] },
      );
      const { sessionId } = await createSession(tdb.db, user.id);
      return {
        id: user.id,
        email: user.email,
        orgId: org.id,
        sessionId,
        api: await env.caller({ sessionId }),
      };
    },
  };
  return env;
}

/** Awaits a call expected to fail and returns the stable Tessera description of its error. */
export async function failure(p: Promise<unknown>) {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(TRPCError);
    return describeError(err);
  }
  throw new Error("expected the call to fail, it succeeded");
}

export const sampleConfig = {
  runtime: "python",
  entry: "handler:Echo",
  environment: { kind: "pip", requirements: ["numpy==1.26.4"] },
  resources: { cpus: 0.5, gpus: 0, memoryMb: 256 },
  numReplicas: 2,
  maxOngoingRequests: 4,
};

export const sampleCode = {
  files: { "handler.py": "class Echo:\n    def __call__(self, body):\n        return body\n" },
};
