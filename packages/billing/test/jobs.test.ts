import { usageHourly } from "@tessera/db";
import { createTestDatabase, type TestDatabase, testRedisPrefix } from "@tessera/db/testing";
import { Queue, QueueEvents } from "bullmq";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BILLING_QUEUE,
  createBillingWorker,
  processBillingJob,
  recordUsageEvents,
  registerBillingJobs,
} from "../src/index.js";
import { seedOrg } from "./fixtures.js";

const connection = { host: "127.0.0.1", port: 6379, maxRetriesPerRequest: null };
const prefix = testRedisPrefix("billingjobs");
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
      ["billing:rollupUsage", "rollupUsage", 300_000],
      ["billing:syncStripeUsage", "syncStripeUsage", 900_000],
    ]);
    for (const s of schedulers) await queue.removeJobScheduler(s.key!);
  });

  it("runs the rollup through a BullMQ worker", async () => {
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
    const worker = createBillingWorker(connection, { db: tdb.db, stripe: null }, prefix);
    const events = new QueueEvents(BILLING_QUEUE, { connection, prefix });
    try {
      await events.waitUntilReady();
      const job = await queue.add("rollupUsage", {});
      const result = (await job.waitUntilFinished(events, 30_000)) as { hours: string[] };
      expect(result.hours.length).toBeGreaterThan(0);
      const rows = await tdb.db.select().from(usageHourly).where(eq(usageHourly.orgId, a.org.id));
      expect(rows.map((r) => r.requests)).toEqual([1]);
    } finally {
      await worker.close();
      await events.close();
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
});
