import { type QueueMonitor, redisKeys } from "@tessera/core";
import type { Database } from "@tessera/db";
import { type Job, Queue, Worker } from "bullmq";
import type { Redis } from "ioredis";
import type { Registry } from "prom-client";
import { rollupUsage } from "./metering.js";
import { type BillingMetrics, createBillingMetrics } from "./metrics.js";
import { pruneHistory } from "./retention.js";
import { StripeBilling, stripeSettingsFromEnv } from "./stripe.js";
import { type ProbeOptions, probeDeployments } from "./uptime.js";

/** The provisioner's BullMQ queue for metering, billing and uptime jobs. */
export const BILLING_QUEUE = "billing";

export const BILLING_JOBS = {
  /** Recompute usage_hourly for the current hour and every hour with late events. */
  rollupUsage: { every: 5 * 60_000 },
  /** Send settled hours of paid organisations to Stripe (no-op without Stripe). */
  syncStripeUsage: { every: 15 * 60_000 },
  /** One round of uptime probes. */
  probeUptime: { every: 30_000 },
  /** Delete raw usage events and probes past their retention. */
  pruneHistory: { every: 6 * 3_600_000 },
} as const;
export type BillingJobName = keyof typeof BILLING_JOBS;

export interface BillingJobDeps {
  db: Database;
  /** null when Stripe is not configured: usage still meters, nothing is sent. */
  stripe: StripeBilling | null;
  probe?: ProbeOptions;
  metrics?: BillingMetrics;
}

/**
 * Register the repeatable billing jobs (BullMQ job schedulers, so registering again, from every
 * provisioner replica or after a restart, updates rather than duplicates them).
 */
export async function registerBillingJobs(
  queue: Queue,
  every: Partial<Record<BillingJobName, number>> = {},
): Promise<void> {
  for (const [name, d] of Object.entries(BILLING_JOBS) as [BillingJobName, { every: number }][]) {
    await queue.upsertJobScheduler(
      `billing:${name}`,
      { every: every[name] ?? d.every },
      {
        name,
        data: {},
        opts: {
          attempts: name === "probeUptime" ? 1 : 5,
          backoff: { type: "exponential", delay: 10_000 },
          removeOnComplete: 100,
          removeOnFail: 500,
        },
      },
    );
  }
}

/** Run one billing job. Each is idempotent, so BullMQ's retries and duplicate runs are safe. */
export async function processBillingJob(
  job: Pick<Job, "name">,
  deps: BillingJobDeps,
): Promise<Record<string, unknown>> {
  try {
    const result = await runBillingJob(job.name, deps);
    deps.metrics?.jobRuns.inc({ job: job.name, outcome: "ok" });
    return result;
  } catch (err) {
    deps.metrics?.jobRuns.inc({ job: job.name, outcome: "failed" });
    throw err;
  }
}

async function runBillingJob(name: string, deps: BillingJobDeps): Promise<Record<string, unknown>> {
  switch (name as BillingJobName) {
    case "rollupUsage": {
      const { hours } = await rollupUsage(deps.db);
      return { hours: hours.map((h) => h.toISOString()) };
    }
    case "syncStripeUsage": {
      if (!deps.stripe) return { skipped: "stripe not configured" };
      const { sent, failures } = await deps.stripe.reportUsage();
      deps.metrics?.meterEvents.inc(sent);
      // Failing the job makes BullMQ retry; the resend reuses the same idempotency keys.
      if (failures.length) throw new Error(`stripe usage sync: ${failures.length} failed (${failures[0]})`);
      return { sent };
    }
    case "probeUptime": {
      const { results, opened, closed } = await probeDeployments(deps.db, deps.probe);
      const asleep = results.filter((r) => r.asleep).length;
      const down = results.filter((r) => !r.ok && !r.asleep).length;
      deps.metrics?.probes.inc({ outcome: "up" }, results.length - down - asleep);
      deps.metrics?.probes.inc({ outcome: "down" }, down);
      deps.metrics?.probes.inc({ outcome: "asleep" }, asleep);
      deps.metrics?.down.set(down);
      return { probed: results.length, down, asleep, opened, closed };
    }
    case "pruneHistory":
      return pruneHistory(deps.db);
    default:
      throw new Error(`unknown billing job ${JSON.stringify(name)}`);
  }
}

export interface BillingJobsOptions {
  db: Database;
  /** The provisioner's Redis connection; the worker duplicates it for its blocking reads. */
  redis: Redis;
  /** `REDIS_PREFIX`: BullMQ keys live under `redisKeys(prefix).bullPrefix`, next to the control queue. */
  prefix?: string;
  /** Defaults to `stripeSettingsFromEnv()` (null without `STRIPE_SECRET_KEY`). */
  stripe?: StripeBilling | null;
  probe?: ProbeOptions;
  /** The provisioner's Prometheus registry: billing metrics are added to it. */
  registry?: Registry;
  /** Queue depths for the `tessera_queue_jobs` gauge. */
  queues?: QueueMonitor | null;
  every?: Partial<Record<BillingJobName, number>>;
  /** Failed jobs are logged here (BullMQ retries them). */
  log?: (level: "warn", msg: string, fields: Record<string, unknown>) => void;
}

/**
 * The billing queue, its job schedulers and a worker, for the provisioner's main: one call to
 * start, `close()` to stop (waits for running jobs).
 */
export async function startBillingJobs(
  options: BillingJobsOptions,
): Promise<{ queue: Queue; worker: Worker; close(): Promise<void> }> {
  const prefix = redisKeys(options.prefix).bullPrefix;
  const settings = options.stripe === undefined ? stripeSettingsFromEnv() : null;
  const stripe =
    options.stripe !== undefined ? options.stripe : settings ? new StripeBilling(options.db, settings) : null;
  const queue = new Queue(BILLING_QUEUE, { connection: options.redis, prefix });
  await registerBillingJobs(queue, options.every);
  const connection = options.redis.duplicate({ maxRetriesPerRequest: null });
  const metrics = options.registry
    ? createBillingMetrics(options.registry, { db: options.db, queues: options.queues })
    : undefined;
  const deps: BillingJobDeps = { db: options.db, stripe, probe: options.probe, metrics };
  const worker = new Worker(BILLING_QUEUE, (job) => processBillingJob(job, deps), {
    connection,
    prefix,
    concurrency: 2,
  });
  worker.on("failed", (job, err) =>
    options.log?.("warn", "billing job failed", {
      job: job?.name,
      attempts: job?.attemptsMade,
      err: err.message,
    }),
  );
  return {
    queue,
    worker,
    async close() {
      await worker.close();
      await queue.close();
      await connection.quit().catch(() => connection.disconnect());
    },
  };
}
