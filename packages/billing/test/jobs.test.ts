import { redisKeys } from "@tessera/core";
import { uptimeIncidents, usageHourly } from "@tessera/db";
import { createTestDatabase, type TestDatabase, testRedisPrefix } from "@tessera/db/testing";
import { Queue, QueueEvents } from "bullmq";
import { eq, isNull } from "drizzle-orm";
import { Redis } from "ioredis";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BILLING_QUEUE,
  bullQueueMonitor,
  createBillingMetrics,
  processBillingJob,
  recordUsageEvents,
  registerBillingJobs,
  startBillingJobs,
} from "../src/index.js";
import { seedOrg } from "./fixtures.js";

const connection = { host: "127.0.0.1", port: 6379, maxRetriesPerRequest: null };
const redisPrefix = testRedisPrefix("billingjobs");
const prefix = redisKeys(redisPrefix).bullPrefix;
let tdb: TestDatabase;
let queue: Queue;

beforeAll(async () => {
  tdb = await createTestDatabase("billingjobs");
  queue = new Queue(BILLING_QUEUE, { connection, prefix });
});
afterAll(async () => {
  await queue?.obliterate({ force: true }).catch(() => {});
  await queue?.close();
  await tdb?.drop();
});

describe("billing jobs", () => {
  it("registers each repeatable job once, however often the provisioner registers them", async () => {
    await registerBillingJobs(queue);
    await registerBillingJobs(queue, { probeUptime: 60_000 });
    const schedulers = await queue.getJobSchedulers();
    expect(schedulers.map((s) => [s.key, s.name, s.every]).sort()).toEqual([
      ["billing:probeUptime", "probeUptime", 60_000],
      ["billing:pruneHistory", "pruneHistory", 21_600_000],
      ["billing:rollupUsage", "rollupUsage", 300_000],
      ["billing:syncStripeUsage", "syncStripeUsage", 900_000],
    ]);
    for (const s of schedulers) await queue.removeJobScheduler(s.key!);
  });

  it("runs the rollup through the provisioner's billing worker", async () => {
    const a = await seedOrg(tdb.db, "jobs-a");
    await recordUsageEvents(tdb.db, [
      {
        id: "job-r1",
        orgId: a.org.id,
        deploymentId: a.deployment.id,
        kind: "request",
        quantity: 1,
        status: 200,
        latencyMs: 12,
        at: new Date(),
      },
    ]);
    const redis = new Redis(connection);
    const billing = await startBillingJobs({ db: tdb.db, redis, prefix: redisPrefix, stripe: null });
    const events = new QueueEvents(BILLING_QUEUE, { connection, prefix });
    try {
      // Its schedulers are registered under the same prefix the provisioner uses.
      expect((await billing.queue.getJobSchedulers()).map((s) => s.name).sort()).toEqual([
        "probeUptime",
        "pruneHistory",
        "rollupUsage",
        "syncStripeUsage",
      ]);
      await events.waitUntilReady();
      const job = await queue.add("rollupUsage", {});
      const result = (await job.waitUntilFinished(events, 30_000)) as { hours: string[] };
      expect(result.hours.length).toBeGreaterThan(0);
      const rows = await tdb.db.select().from(usageHourly).where(eq(usageHourly.orgId, a.org.id));
      expect(rows.map((r) => r.requests)).toEqual([1]);
    } finally {
      for (const s of await billing.queue.getJobSchedulers()) await billing.queue.removeJobScheduler(s.key!);
      await billing.close();
      await events.close();
      await redis.quit();
    }
  });

  it("skips the Stripe sync without Stripe and refuses unknown jobs", async () => {
    expect(await processBillingJob({ name: "syncStripeUsage" }, { db: tdb.db, stripe: null })).toEqual({
      skipped: "stripe not configured",
    });
    await expect(processBillingJob({ name: "nope" }, { db: tdb.db, stripe: null })).rejects.toThrow(
      /unknown billing job/,
    );
  });

  it("exports Prometheus metrics: job runs, probes, deployments down, open incidents, queue depths", async () => {
    // A ready deployment with no ready replica: down.
    const d = await seedOrg(tdb.db, "jobs-metrics");
    await tdb.db.insert(uptimeIncidents).values({
      orgId: d.org.id,
      deploymentId: d.deployment.id,
      openedAt: new Date(),
      reason: "x",
      failedProbes: 3,
    });
    const redis = new Redis(connection);
    const monitor = bullQueueMonitor(redis, redisPrefix);
    const registry = new Registry();
    const metrics = createBillingMetrics(registry, { db: tdb.db, queues: monitor });
    try {
      // Nothing left over from the scheduler tests: exactly the job added here is delayed.
      await queue.obliterate({ force: true });
      await queue.add("later", {}, { delay: 60_000 });
      const deps = { db: tdb.db, stripe: null, metrics };
      const probed = (await processBillingJob({ name: "probeUptime" }, deps)) as { down: number };
      expect(probed.down).toBeGreaterThanOrEqual(1);
      await expect(processBillingJob({ name: "nope" }, deps)).rejects.toThrow();
      const text = await registry.metrics();
      expect(text).toContain('tessera_billing_job_runs_total{job="probeUptime",outcome="ok"} 1');
      expect(text).toContain('tessera_billing_job_runs_total{job="nope",outcome="failed"} 1');
      expect(text).toContain(`tessera_deployments_down ${probed.down}`);
      expect(text).toContain(`tessera_uptime_probes_total{outcome="down"} ${probed.down}`);
      // Read at scrape time (the worker test's probes may have opened one of their own).
      const open = await tdb.db.select().from(uptimeIncidents).where(isNull(uptimeIncidents.closedAt));
      expect(open.length).toBeGreaterThanOrEqual(1);
      expect(text).toContain(`tessera_uptime_incidents_open ${open.length}`);
      expect(text).toContain('tessera_queue_jobs{queue="billing",state="delayed"} 1');
    } finally {
      await queue.obliterate({ force: true });
      await monitor.close();
      await redis.quit();
    }
  });
});
