import { TesseraError } from "@tessera/core";
import { billingAccounts, plans, usageHourly } from "@tessera/db";
import { createTestDatabase, type TestDatabase } from "@tessera/db/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  admitRequest,
  checkDeployAllowed,
  costOf,
  DEFAULT_PLANS,
  loadOrgBillingState,
  loadPlan,
} from "../src/index.js";
import { seedOrg } from "./fixtures.js";

let tdb: TestDatabase;
beforeAll(async () => {
  tdb = await createTestDatabase("plans");
});
afterAll(async () => {
  await tdb?.drop();
});

const cpu1 = { cpus: 1, gpus: 0, memoryMb: 512 };

async function refusal(p: Promise<unknown>) {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TesseraError);
  return err as TesseraError;
}

describe("free-tier limits on deploys", () => {
  it("allows a deploy within the plan and refuses one past it with PAYMENT_REQUIRED", async () => {
    // The org already runs one deployment with one replica of 1 CPU.
    const a = await seedOrg(tdb.db, "plan-free");
    await checkDeployAllowed(tdb.db, a.org.id, { resources: cpu1, replicas: 1 });
    // Replacing the existing deployment with 2 replicas fits (its old footprint is not counted twice).
    await checkDeployAllowed(tdb.db, a.org.id, {
      deploymentId: a.deployment.id,
      resources: cpu1,
      replicas: 2,
    });

    const tooMany = await refusal(checkDeployAllowed(tdb.db, a.org.id, { resources: cpu1, replicas: 2 }));
    expect(tooMany.code).toBe("PAYMENT_REQUIRED");
    expect(tooMany.message).toMatch(/allows 2 replicas; this deploy would use 3/);
    expect(tooMany.details).toMatchObject({ reason: "plan_limit", limit: "replicas" });

    const gpu = await refusal(
      checkDeployAllowed(tdb.db, a.org.id, { resources: { ...cpu1, gpus: 0.25 }, replicas: 1 }),
    );
    expect(gpu.details).toMatchObject({ limit: "gpus", allowed: 0 });
  });

  it("refuses deploys after a failed payment, whatever the plan", async () => {
    const a = await seedOrg(tdb.db, "plan-failed", "payg");
    await checkDeployAllowed(tdb.db, a.org.id, { resources: { ...cpu1, gpus: 1 }, replicas: 4 });
    await tdb.db
      .insert(billingAccounts)
      .values({ orgId: a.org.id, paymentFailed: true, paymentFailedAt: new Date() });
    const e = await refusal(checkDeployAllowed(tdb.db, a.org.id, { resources: cpu1, replicas: 1 }));
    expect(e.code).toBe("PAYMENT_REQUIRED");
    expect(e.details).toMatchObject({ reason: "payment_failed" });
  });

  it("refuses deploys once the monthly free requests are used, counted from the hourly rollup", async () => {
    const a = await seedOrg(tdb.db, "plan-quota");
    const now = new Date("2026-05-20T12:00:00Z");
    // Last month's usage does not count; this month's does.
    await tdb.db.insert(usageHourly).values([
      {
        orgId: a.org.id,
        deploymentId: a.deployment.id,
        hour: new Date("2026-04-30T23:00:00Z"),
        requests: 90_000,
      },
      {
        orgId: a.org.id,
        deploymentId: a.deployment.id,
        hour: new Date("2026-05-01T00:00:00Z"),
        requests: 60_000,
      },
    ]);
    await checkDeployAllowed(
      tdb.db,
      a.org.id,
      { deploymentId: a.deployment.id, resources: cpu1, replicas: 1 },
      now,
    );
    await tdb.db.insert(usageHourly).values({
      orgId: a.org.id,
      deploymentId: a.deployment.id,
      hour: new Date("2026-05-19T00:00:00Z"),
      requests: 40_000,
    });
    const e = await refusal(
      checkDeployAllowed(
        tdb.db,
        a.org.id,
        { deploymentId: a.deployment.id, resources: cpu1, replicas: 1 },
        now,
      ),
    );
    expect(e.details).toMatchObject({ reason: "monthly_requests", used: 100_000 });
  });

  it("reads plan limits and prices from the plans table over the defaults", async () => {
    await tdb.db
      .insert(plans)
      .values({ id: "free", name: "Free (promo)", limits: { maxReplicas: 5 }, prices: {} });
    const free = await loadPlan(tdb.db, "free");
    expect(free.name).toBe("Free (promo)");
    expect(free.limits).toEqual({ ...DEFAULT_PLANS.free!.limits, maxReplicas: 5 });
    expect((await loadPlan(tdb.db, "no-such-plan")).id).toBe("free");
    await tdb.db.delete(plans);
  });
});

describe("gateway admission", () => {
  const now = new Date("2026-05-20T12:00:45Z");
  const free = { plan: DEFAULT_PLANS.free!, paymentFailed: false, paymentFailedAt: null, monthlyRequests: 0 };

  it("admits within the plan, rate-limits past the per-minute rate with Retry-After", () => {
    expect(admitRequest(free, { requestsThisMinute: 599 }, now)).toEqual({ ok: true });
    expect(admitRequest(free, { requestsThisMinute: 600 }, now)).toMatchObject({
      ok: false,
      code: "RATE_LIMITED",
      retryAfterS: 15,
    });
  });

  it("answers PAYMENT_REQUIRED once the monthly quota is used, counting requests since the rollup", () => {
    expect(
      admitRequest(
        { ...free, monthlyRequests: 99_990 },
        { requestsThisMinute: 0, requestsSinceRollup: 9 },
        now,
      ),
    ).toEqual({ ok: true });
    expect(
      admitRequest(
        { ...free, monthlyRequests: 99_990 },
        { requestsThisMinute: 0, requestsSinceRollup: 10 },
        now,
      ),
    ).toMatchObject({ ok: false, code: "PAYMENT_REQUIRED" });
  });

  it("keeps serving a failed payment through the grace period, then answers PAYMENT_REQUIRED", () => {
    const payg = { ...free, plan: DEFAULT_PLANS.payg!, paymentFailed: true };
    const day = 24 * 3_600_000;
    expect(
      admitRequest(
        { ...payg, paymentFailedAt: new Date(now.getTime() - 6 * day) },
        { requestsThisMinute: 0 },
        now,
      ),
    ).toEqual({
      ok: true,
    });
    expect(
      admitRequest(
        { ...payg, paymentFailedAt: new Date(now.getTime() - 8 * day) },
        { requestsThisMinute: 0 },
        now,
      ),
    ).toMatchObject({ ok: false, code: "PAYMENT_REQUIRED" });
  });

  it("loads the state the gateway admits with", async () => {
    const a = await seedOrg(tdb.db, "plan-state", "payg");
    const s = await loadOrgBillingState(tdb.db, a.org.id);
    expect(s).toMatchObject({ plan: { id: "payg" }, paymentFailed: false, monthlyRequests: 0 });
    expect(costOf(s.plan.prices, { requests: 1_000_000, cpuSeconds: 3600 }).total).toBeCloseTo(2 + 0.072, 6);
  });
});
