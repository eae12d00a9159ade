import type { QueueMonitor } from "@tessera/core";
import { type Database, uptimeIncidents } from "@tessera/db";
import { isNull, sql } from "drizzle-orm";
import { Counter, Gauge, type Registry } from "prom-client";

export type BillingMetrics = ReturnType<typeof createBillingMetrics>;

/**
 * Prometheus metrics of the billing jobs, on the provisioner's registry: job runs by outcome,
 * meter events sent to Stripe, probe outcomes and deployments down in the last round; open
 * incidents and queue depths are read at scrape time.
 */
export function createBillingMetrics(
  registry: Registry,
  opts: { db: Database; queues?: QueueMonitor | null },
) {
  const jobRuns = new Counter({
    name: "tessera_billing_job_runs_total",
    help: "Billing job runs by job and outcome",
    labelNames: ["job", "outcome"] as const,
    registers: [registry],
  });
  const meterEvents = new Counter({
    name: "tessera_stripe_meter_events_total",
    help: "Meter events Stripe accepted",
    registers: [registry],
  });
  const probes = new Counter({
    name: "tessera_uptime_probes_total",
    help: "Uptime probes by outcome",
    labelNames: ["outcome"] as const,
    registers: [registry],
  });
  const down = new Gauge({
    name: "tessera_deployments_down",
    help: "Deployments whose last probe failed",
    registers: [registry],
  });
  new Gauge({
    name: "tessera_uptime_incidents_open",
    help: "Open uptime incidents",
    registers: [registry],
    async collect() {
      const [row] = await opts.db
        .select({ n: sql<number>`count(*)::int` })
        .from(uptimeIncidents)
        .where(isNull(uptimeIncidents.closedAt));
      this.set(row?.n ?? 0);
    },
  });
  if (opts.queues) {
    const queues = opts.queues;
    new Gauge({
      name: "tessera_queue_jobs",
      help: "Jobs in the provisioner's BullMQ queues by state",
      labelNames: ["queue", "state"] as const,
      registers: [registry],
      async collect() {
        for (const q of await queues.depths())
          for (const state of ["waiting", "active", "delayed", "failed"] as const)
            this.set({ queue: q.queue, state }, q[state]);
      },
    });
  }
  return { jobRuns, meterEvents, probes, down };
}
