import type { Database } from "@tessera/db";
import { type ConnectionOptions, type Job, type Queue, Worker } from "bullmq";
import { rollupUsage } from "./metering.js";
import type { StripeBilling } from "./stripe.js";
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
} as const;
export type BillingJobName = keyof typeof BILLING_JOBS;

export interface BillingJobDeps {
  db: Database;
  /** null when Stripe is not configured: usage still meters, nothing is sent. */
  stripe: StripeBilling | null;
  probe?: ProbeOptions;
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
  switch (job.name as BillingJobName) {
    case "rollupUsage": {
      const { hours } = await rollupUsage(deps.db);
      return { hours: hours.map((h) => h.toISOString()) };
    }
    case "syncStripeUsage": {
      if (!deps.stripe) return { skipped: "stripe not configured" };
      const { sent, failures } = await deps.stripe.reportUsage();
      // Failing the job makes BullMQ retry; the resend reuses the same idempotency keys.
      if (failures.length) throw new Error(`stripe usage sync: ${failures.length} failed (${failures[0]})`);
      return { sent };
    }
    case "probeUptime": {
      const { results, opened, closed } = await probeDeployments(deps.db, deps.probe);
      return { probed: results.length, down: results.filter((r) => !r.ok).length, opened, closed };
    }
    default:
      throw new Error(`unknown billing job ${JSON.stringify(job.name)}`);
  }
}

/** A worker on the billing queue (the provisioner starts one next to its control worker). */
export function createBillingWorker(
  connection: ConnectionOptions,
  deps: BillingJobDeps,
  prefix?: string,
): Worker {
  return new Worker(BILLING_QUEUE, (job) => processBillingJob(job, deps), {
    connection,
    ...(prefix ? { prefix } : {}),
    concurrency: 2,
  });
}
