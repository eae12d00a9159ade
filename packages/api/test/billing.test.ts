import { bullQueueMonitor, recordUsageEvents, rollupHour, StripeBilling } from "@tessera/billing";
import { FakeStripe } from "@tessera/billing/testing";
import { CONTROL_QUEUE, redisKeys } from "@tessera/core";
import { jobs, uptimeIncidents, uptimeProbes } from "@tessera/db";
import { testRedisPrefix } from "@tessera/db/testing";
import { Queue } from "bullmq";
import { eq } from "drizzle-orm";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BillingOptions, billingOptionsFromEnv, createCaller } from "../src/index.js";
import { createTestEnv, failure, sampleCode, sampleConfig, type TestEnv, type TestUser } from "./helpers.js";

let env: TestEnv;
let fake: FakeStripe;
let billing: BillingOptions;
let owner: TestUser;
let admin: TestUser;
/** The owner's calls with billing configured (Stripe + plan limits). */
let api: Awaited<ReturnType<typeof createCaller>>;

beforeAll(async () => {
  [env, fake] = await Promise.all([createTestEnv("apibilling"), new FakeStripe().start()]);
  billing = billingOptionsFromEnv(env.db, {
    STRIPE_SECRET_KEY: fake.secretKey,
    STRIPE_WEBHOOK_SECRET: "whsec_api_test",
    STRIPE_PRICE_IDS: "price_metered",
    STRIPE_API_URL: `http://127.0.0.1:${fake.port}`,
  });
  owner = await env.user("owner@billing.example");
  admin = await env.user("ops@platform.example", { adminEmails: ["ops@platform.example"] });
  api = await createCaller({ db: env.db, jobs: env.jobs, auth: { sessionId: owner.sessionId }, billing });
});
afterAll(async () => {
  await Promise.all([env?.tdb.drop(), fake?.stop()]);
});

async function deployEcho(name: string, numReplicas: number, caller = api) {
  const { cluster } = await caller.clusters.create({ orgId: owner.orgId, name: `c-${name}` });
  const app = await caller.applications.create({ orgId: owner.orgId, clusterId: cluster.id, name });
  return caller.deployments.deploy({
    orgId: owner.orgId,
    applicationId: app.id,
    name: "echo",
    config: { ...sampleConfig, numReplicas },
    code: sampleCode,
    prevVersion: 0,
  });
}

describe("billing router", () => {
  it("reports billing as not configured when the platform runs without Stripe, and enforces nothing", async () => {
    const plan = await owner.api.billing.plan({ orgId: owner.orgId });
    expect(plan).toMatchObject({
      configured: false,
      enforced: false,
      plan: { id: "free" },
      subscriptionStatus: "none",
    });
    expect(await owner.api.billing.invoices({ orgId: owner.orgId })).toEqual([]);
    expect((await failure(owner.api.billing.checkout({ orgId: owner.orgId }))).code).toBe("BAD_REQUEST");
  });

  it("refuses deploys and scale-ups past the free plan with PAYMENT_REQUIRED, allows scaling down", async () => {
    const first = await deployEcho("one", 2);
    // 2 replicas are the free plan's limit: a second deployment does not fit.
    const refused = await failure(deployEcho("two", 1));
    expect(refused).toMatchObject({ code: "PAYMENT_REQUIRED", httpStatus: 402 });
    expect(refused.message).toMatch(/Free plan allows 2 replicas/);
    const scaleUp = await failure(
      api.deployments.updateScaling({
        orgId: owner.orgId,
        deploymentId: first.deployment.id,
        numReplicas: 3,
      }),
    );
    expect(scaleUp.code).toBe("PAYMENT_REQUIRED");
    await api.deployments.updateScaling({
      orgId: owner.orgId,
      deploymentId: first.deployment.id,
      numReplicas: 1,
    });
    // Redeploying the same deployment within the plan is fine.
    await api.deployments.deploy({
      orgId: owner.orgId,
      applicationId: first.deployment.applicationId,
      name: "echo",
      config: { ...sampleConfig, numReplicas: 2 },
      code: sampleCode,
      prevVersion: first.deployment.version,
    });
  });

  it("gives owners Checkout and Portal URLs, and lists invoices of their Stripe customer", async () => {
    const { url } = await api.billing.checkout({ orgId: owner.orgId });
    expect(url).toMatch(/^https:\/\/checkout\.stripe\.test\//);
    expect((await api.billing.portal({ orgId: owner.orgId })).url).toMatch(
      /^https:\/\/billing\.stripe\.test\//,
    );
    const plan = await api.billing.plan({ orgId: owner.orgId });
    expect(plan).toMatchObject({ configured: true, enforced: true, hasCustomer: true });
    const customer = [...fake.customers.values()].find(
      (c) => (c.metadata as { org_id: string }).org_id === owner.orgId,
    )!;
    fake.invoices.push({
      id: "in_owner",
      object: "invoice",
      customer: customer.id,
      status: "open",
      currency: "usd",
      amount_due: 500,
      amount_paid: 0,
      period_start: 1780000000,
      period_end: 1782592000,
    });
    expect((await api.billing.invoices({ orgId: owner.orgId })).map((i) => i.id)).toEqual(["in_owner"]);
  });

  it("keeps Checkout and Portal to owners: API keys and members are refused", async () => {
    const { key } = await api.apiKeys.create({ orgId: owner.orgId, name: "ci" });
    const byKey = await createCaller({ db: env.db, jobs: env.jobs, auth: { apiKey: key }, billing });
    expect((await failure(byKey.billing.checkout({ orgId: owner.orgId }))).code).toBe("FORBIDDEN");
    expect((await failure(byKey.billing.portal({ orgId: owner.orgId }))).code).toBe("FORBIDDEN");
    // Reading the plan is fine for any member.
    expect((await byKey.billing.plan({ orgId: owner.orgId })).plan.id).toBe("free");
  });

  it("maps Stripe failures to UPSTREAM_ERROR without leaking details of the key", async () => {
    const broken = billingOptionsFromEnv(env.db, {
      STRIPE_SECRET_KEY: "sk_test_revoked",
      STRIPE_API_URL: `http://127.0.0.1:${fake.port}`,
    });
    const other = await env.user("other@billing.example");
    const caller = await createCaller({
      db: env.db,
      jobs: env.jobs,
      auth: { sessionId: other.sessionId },
      billing: broken,
    });
    const err = await failure(caller.billing.portal({ orgId: other.orgId }));
    expect(err.code).toBe("UPSTREAM_ERROR");
    expect(broken.stripe).toBeInstanceOf(StripeBilling);
  });
});

describe("usage and SLO routers", () => {
  it("shows an org its usage by day and deployment, its running cost and its SLOs", async () => {
    const dep = (await api.deployments.list({ orgId: owner.orgId }))[0]!;
    const at = new Date(Date.now() - 5 * 60_000);
    await recordUsageEvents(env.db, [
      {
        id: "api-u1",
        orgId: owner.orgId,
        deploymentId: dep.id,
        kind: "request",
        quantity: 1,
        status: 200,
        latencyMs: 40,
        at,
      },
      {
        id: "api-u2",
        orgId: owner.orgId,
        deploymentId: dep.id,
        kind: "request",
        quantity: 1,
        status: 500,
        latencyMs: 90,
        at,
      },
    ]);
    await rollupHour(env.db, at);
    const days = await api.usage.byDay({ orgId: owner.orgId });
    expect(days.filter((d) => d.deploymentId === dep.id).map((d) => [d.requests, d.errors])).toEqual([
      [2, 1],
    ]);
    const summary = await api.billing.usageSummary({ orgId: owner.orgId });
    expect(summary).toMatchObject({ plan: { id: "free" }, totalCost: 0, totals: { requests: 2 } });
    expect(summary.byDeployment.map((d) => d.deploymentId)).toContain(dep.id);

    await env.db.insert(uptimeProbes).values([
      { orgId: owner.orgId, deploymentId: dep.id, ok: true, at },
      { orgId: owner.orgId, deploymentId: dep.id, ok: true, at },
    ]);
    await env.db.insert(uptimeIncidents).values({
      orgId: owner.orgId,
      deploymentId: dep.id,
      openedAt: at,
      closedAt: new Date(),
      reason: "readiness answered 503",
      failedProbes: 3,
    });
    const slo = await api.slo.deployment({ orgId: owner.orgId, deploymentId: dep.id, window: "24h" });
    // 2 good probes + 1 good request of 4 events.
    expect(slo.availability).toBeCloseTo(3 / 4, 12);
    expect(slo.latencyMs.p99).toBe(100);
    expect(slo.incidents).toHaveLength(1);
    expect((await api.slo.incidents({ orgId: owner.orgId })).map((i) => i.reason)).toEqual([
      "readiness answered 503",
    ]);
    const overview = await api.slo.summary({ orgId: owner.orgId, window: "30d" });
    expect(overview.find((d) => d.deploymentId === dep.id)).toMatchObject({ requests: 2 });
    expect(
      (
        await failure(
          api.usage.byDay({ orgId: owner.orgId, from: new Date(), to: new Date(Date.now() - 1000) }),
        )
      ).code,
    ).toBe("VALIDATION_FAILED");
  });

  it("gives platform admins the cross-org view, and nobody else", async () => {
    const dep = (await api.deployments.list({ orgId: owner.orgId }))[0]!;
    await env.db.insert(uptimeIncidents).values({
      orgId: owner.orgId,
      deploymentId: dep.id,
      openedAt: new Date(),
      reason: "no ready replica",
      failedProbes: 5,
    });
    const overview = await admin.api.admin.overview({});
    const mine = overview.organisations.find((o) => o.orgId === owner.orgId)!;
    expect(mine).toMatchObject({ requests: 2, errors: 1, errorRate: 0.5 });
    expect(overview.topDeployments[0]).toMatchObject({ orgSlug: mine.slug, requests: 2 });
    // Only the open incident (the earlier one was closed).
    expect(overview.openIncidents.map((i) => [i.orgSlug, i.deploymentId, i.reason])).toEqual([
      [mine.slug, dep.id, "no ready replica"],
    ]);
    const usage = await admin.api.admin.usageByDay({ orgId: owner.orgId });
    expect(usage.some((u) => u.orgId === owner.orgId && u.requests === 2)).toBe(true);
    expect((await failure(owner.api.admin.overview({}))).code).toBe("FORBIDDEN");
    expect((await failure(owner.api.admin.usageByDay({}))).code).toBe("FORBIDDEN");
  });
});

describe("admin operations", () => {
  it("shows the provisioner's queue depths through a queue monitor", async () => {
    const prefix = testRedisPrefix("apiqueues");
    const redis = new Redis({ host: "127.0.0.1", port: 6379, maxRetriesPerRequest: null });
    const control = new Queue(CONTROL_QUEUE, { connection: redis, prefix: redisKeys(prefix).bullPrefix });
    const monitor = bullQueueMonitor(redis, prefix);
    try {
      await control.add("deployRevision", {}, { delay: 60_000 });
      await control.add("scaleDeployment", {});
      const ops = await createCaller({
        db: env.db,
        jobs: env.jobs,
        auth: { sessionId: admin.sessionId },
        queues: monitor,
      });
      const { configured, queues } = await ops.admin.queues();
      expect(configured).toBe(true);
      expect(queues.find((q) => q.queue === CONTROL_QUEUE)).toMatchObject({
        waiting: 1,
        delayed: 1,
        failed: 0,
      });
      expect(queues.find((q) => q.queue === "billing")).toMatchObject({ waiting: 0 });
      expect(await admin.api.admin.queues()).toEqual({ configured: false, queues: [] });
      expect((await failure(owner.api.admin.queues())).code).toBe("FORBIDDEN");
    } finally {
      await control.obliterate({ force: true });
      await control.close();
      await monitor.close();
      await redis.quit();
    }
  });

  it("retries failed control jobs only", async () => {
    const [job] = await env.db.select().from(jobs).where(eq(jobs.orgId, owner.orgId)).limit(1);
    expect((await failure(admin.api.admin.retryJob({ jobId: job!.id }))).code).toBe("CONFLICT");
    await env.db.update(jobs).set({ state: "failed" }).where(eq(jobs.id, job!.id));
    env.jobs.clear();
    const { jobId } = await admin.api.admin.retryJob({ jobId: job!.id });
    expect(jobId).not.toBe(job!.id);
    expect(env.jobs.enqueued.map((e) => [e.job, e.orgId])).toEqual([[job!.payload, owner.orgId]]);
    expect((await failure(owner.api.admin.retryJob({ jobId: job!.id }))).code).toBe("FORBIDDEN");
  });
});
