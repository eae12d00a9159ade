import type { UsageEvent } from "@tessera/core";
import { billingAccounts, organisations, stripeEvents, stripeUsageReports } from "@tessera/db";
import { createTestDatabase, type TestDatabase } from "@tessera/db/testing";
import { eq } from "drizzle-orm";
import Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeStripe } from "../src/fake-stripe.js";
import {
  checkDeployAllowed,
  HOUR_MS,
  recordUsageEvents,
  rollupHour,
  StripeBilling,
  type StripeSettings,
  stripeSettingsFromEnv,
} from "../src/index.js";
import { seedOrg } from "./fixtures.js";

let tdb: TestDatabase;
let fake: FakeStripe;
const webhookSecret = "whsec_test_secret_for_tessera";

beforeAll(async () => {
  [tdb, fake] = await Promise.all([createTestDatabase("stripe"), new FakeStripe().start()]);
});
afterAll(async () => {
  await Promise.all([tdb?.drop(), fake?.stop()]);
});

function settings(over: Partial<StripeSettings> = {}): StripeSettings {
  return {
    ...stripeSettingsFromEnv({
      STRIPE_SECRET_KEY: fake.secretKey,
      STRIPE_WEBHOOK_SECRET: webhookSecret,
      STRIPE_PRICE_IDS: "price_requests, price_cpu",
      STRIPE_API_URL: `http://127.0.0.1:${fake.port}`,
      TESSERA_CONSOLE_URL: "http://console.test",
    })!,
    maxNetworkRetries: 0,
    ...over,
  };
}

/** A webhook delivery as Stripe signs it. */
function signed(event: Record<string, unknown>, secret = webhookSecret) {
  const payload = JSON.stringify({
    object: "event",
    api_version: "2026-11-18.endive",
    livemode: false,
    ...event,
  });
  return { payload, header: Stripe.webhooks.generateTestHeaderString({ payload, secret }) };
}

let eventSeq = 0;
function event(type: string, object: Record<string, unknown>, created = Math.floor(Date.now() / 1000)) {
  return { id: `evt_${++eventSeq}_${type}`, type, created, data: { object } };
}

async function account(orgId: string) {
  const [a] = await tdb.db.select().from(billingAccounts).where(eq(billingAccounts.orgId, orgId));
  return a!;
}
async function planOf(orgId: string) {
  const [o] = await tdb.db
    .select({ plan: organisations.plan })
    .from(organisations)
    .where(eq(organisations.id, orgId));
  return o!.plan;
}

/** Org with a Stripe customer and an active subscription (as the webhook after Checkout leaves it). */
async function subscribedOrg(slug: string, since: Date) {
  const s = await seedOrg(tdb.db, slug);
  const billing = new StripeBilling(tdb.db, settings());
  const customer = await billing.ensureCustomer(s.org.id);
  const { payload, header } = signed(
    event(
      "customer.subscription.created",
      { id: `sub_${slug}`, object: "subscription", customer, status: "active" },
      Math.floor(since.getTime() / 1000),
    ),
  );
  await billing.handleWebhook(payload, header);
  return { ...s, customer, billing };
}

const T = (iso: string) => new Date(`2026-06-10T${iso}Z`);
function reqs(orgId: string, deploymentId: string, prefix: string, n: number, at: Date): UsageEvent[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `${prefix}-${i}`,
    orgId,
    deploymentId,
    kind: "request" as const,
    quantity: 1,
    status: 200,
    latencyMs: 30,
    at,
  }));
}

describe("Stripe customers, Checkout, Portal, invoices", () => {
  it("runs without Stripe when no key is configured", () => {
    expect(stripeSettingsFromEnv({})).toBeNull();
  });

  it("creates one customer per organisation, even when asked twice", async () => {
    const s = await seedOrg(tdb.db, "stripe-cust");
    const billing = new StripeBilling(tdb.db, settings());
    const [c1, c2] = [await billing.ensureCustomer(s.org.id), await billing.ensureCustomer(s.org.id)];
    expect(c1).toBe(c2);
    expect(fake.customers.get(c1)).toMatchObject({ metadata: { org_id: s.org.id, org_slug: "stripe-cust" } });
    expect(fake.keysSeen("/v1/customers")).toEqual([`tessera-customer-${s.org.id}`]);
  });

  it("opens Checkout for the paid plan's prices and the Customer Portal, and lists invoices", async () => {
    const s = await seedOrg(tdb.db, "stripe-checkout");
    const billing = new StripeBilling(tdb.db, settings());
    const url = await billing.checkoutUrl(s.org.id);
    expect(url).toMatch(/^https:\/\/checkout\.stripe\.test\//);
    const session = fake.checkoutSessions.at(-1)!;
    expect(session).toMatchObject({
      mode: "subscription",
      client_reference_id: s.org.id,
      line_items: [{ price: "price_requests" }, { price: "price_cpu" }],
      success_url: "http://console.test/o/stripe-checkout/billing?checkout=success",
    });
    expect(await billing.portalUrl(s.org.id)).toMatch(/^https:\/\/billing\.stripe\.test\//);

    const customer = (await account(s.org.id)).stripeCustomerId!;
    fake.invoices.push(
      {
        id: "in_1",
        object: "invoice",
        customer,
        number: "T-1",
        status: "paid",
        currency: "usd",
        amount_due: 1234,
        amount_paid: 1234,
        period_start: 1780000000,
        period_end: 1782592000,
        hosted_invoice_url: "https://invoice.stripe.test/1",
        invoice_pdf: null,
      },
      {
        id: "in_other",
        object: "invoice",
        customer: "cus_someone_else",
        status: "open",
        currency: "usd",
        amount_due: 9,
        amount_paid: 0,
        period_start: 0,
        period_end: 0,
      },
    );
    const invoices = await billing.listInvoices(s.org.id);
    expect(invoices.map((i) => [i.id, i.amountDue, i.status])).toEqual([["in_1", 1234, "paid"]]);
  });

  it("says so clearly when Stripe refuses the key", async () => {
    const s = await seedOrg(tdb.db, "stripe-badkey");
    const billing = new StripeBilling(tdb.db, settings({ secretKey: "sk_test_wrong" }));
    await expect(billing.ensureCustomer(s.org.id)).rejects.toThrow(/Invalid API Key/);
  });
});

describe("usage sync to Stripe", () => {
  it("reports settled hours of paid organisations once, as whole-unit meter events keyed by org, hour and quantity", async () => {
    const a = await subscribedOrg("sync-paid", T("09:00:00"));
    const free = await seedOrg(tdb.db, "sync-free");
    await recordUsageEvents(tdb.db, [
      ...reqs(a.org.id, a.deployment.id, "sp-10", 7, T("10:20:00")),
      ...reqs(free.org.id, free.deployment.id, "sf-10", 5, T("10:20:00")),
      // Before the subscription started: never billed.
      ...reqs(a.org.id, a.deployment.id, "sp-08", 3, T("08:10:00")),
    ]);
    for (const h of ["08:00:00", "10:00:00", "11:00:00"]) await rollupHour(tdb.db, T(h), T("11:30:00"));

    // 11:05: the 10:00 hour is not settled yet.
    expect((await a.billing.reportUsage(T("11:05:00"))).sent).toBe(0);
    const first = await a.billing.reportUsage(T("11:15:00"));
    expect(first.failures).toEqual([]);
    const mine = () =>
      fake.meterEvents.filter(
        (e) => (e.payload as { stripe_customer_id: string }).stripe_customer_id === a.customer,
      );
    expect(mine().map((e) => [e.event_name, (e.payload as { value: string }).value, e.timestamp])).toEqual([
      ["tessera_requests", "7", T("10:00:00").getTime() / 1000],
    ]);
    expect(mine()[0]!.identifier).toBe(`${a.org.id}:${T("10:00:00").toISOString()}:requests:1`);
    // Nothing for the free org at all.
    expect(
      fake.meterEvents.every(
        (e) => (e.payload as { stripe_customer_id: string }).stripe_customer_id !== free.org.id,
      ),
    ).toBe(true);

    // Running again sends nothing new.
    expect((await a.billing.reportUsage(T("11:20:00"))).sent).toBe(0);

    // Late events for 10:xx: only the growth goes out, under a new sequence number.
    await recordUsageEvents(tdb.db, reqs(a.org.id, a.deployment.id, "sp-10-late", 2, T("10:50:00")));
    await rollupHour(tdb.db, T("10:00:00"), T("11:40:00"));
    expect((await a.billing.reportUsage(T("11:45:00"))).sent).toBe(1);
    expect(mine().map((e) => [(e.payload as { value: string }).value, e.identifier])).toEqual([
      ["7", `${a.org.id}:${T("10:00:00").toISOString()}:requests:1`],
      ["2", `${a.org.id}:${T("10:00:00").toISOString()}:requests:2`],
    ]);
  });

  it("never double-reports when the connection drops after Stripe recorded the event and the job retries", async () => {
    const a = await subscribedOrg("sync-retry", T("00:00:00"));
    await recordUsageEvents(tdb.db, reqs(a.org.id, a.deployment.id, "sr", 4, T("12:05:00")));
    await rollupHour(tdb.db, T("12:00:00"), T("13:00:00"));
    // The SDK itself resends once on a closed connection; that answer is lost too.
    fake.dropAfterProcessing("/v1/billing/meter_events", 2);
    const failed = await a.billing.reportUsage(T("13:30:00"));
    expect(failed.sent).toBe(0);
    expect(failed.failures).toHaveLength(1);
    const key = `${a.org.id}:${T("12:00:00").toISOString()}:requests:1`;
    // Stripe did record it; Tessera could not know.
    expect(fake.meterEvents.filter((e) => e.identifier === key)).toHaveLength(1);

    // The retried job resends the same key: Stripe replays its first answer, counts nothing new.
    const retried = await a.billing.reportUsage(T("13:31:00"));
    expect(retried).toEqual({ sent: 1, failures: [] });
    expect(fake.meterEvents.filter((e) => e.identifier === key)).toHaveLength(1);
    expect(fake.requests.filter((r) => r.idempotencyKey === key).map((r) => r.replayed)).toEqual([
      false,
      true,
      true,
    ]);
    const rows = await tdb.db.select().from(stripeUsageReports).where(eq(stripeUsageReports.orgId, a.org.id));
    expect(rows.map((r) => [r.quantity, r.value, r.sequence])).toEqual([["requests", 4, 1]]);

    // With the SDK's own network retries the same holds within one run.
    await recordUsageEvents(tdb.db, reqs(a.org.id, a.deployment.id, "sr-13", 3, T("13:10:00")));
    await rollupHour(tdb.db, T("13:00:00"), T("14:00:00"));
    fake.dropAfterProcessing("/v1/billing/meter_events", 2);
    const withRetries = new StripeBilling(tdb.db, settings({ maxNetworkRetries: 2 }));
    expect(await withRetries.reportUsage(T("14:30:00"))).toEqual({ sent: 1, failures: [] });
    const key13 = `${a.org.id}:${T("13:00:00").toISOString()}:requests:1`;
    expect(fake.meterEvents.filter((e) => e.identifier === key13)).toHaveLength(1);
  });
});

describe("Stripe webhooks", () => {
  it("rejects a bad signature and records nothing", async () => {
    const a = await subscribedOrg("hook-badsig", T("00:00:00"));
    const ev = event("invoice.payment_failed", { id: "in_x", object: "invoice", customer: a.customer });
    const forged = signed(ev, "whsec_not_the_secret");
    await expect(a.billing.handleWebhook(forged.payload, forged.header)).rejects.toMatchObject({
      code: "UNAUTHENTICATED",
    });
    const good = signed(ev);
    // A tampered body fails the real signature too.
    await expect(
      a.billing.handleWebhook(good.payload.replace("in_x", "in_y"), good.header),
    ).rejects.toMatchObject({
      code: "UNAUTHENTICATED",
    });
    await expect(a.billing.handleWebhook(good.payload, undefined)).rejects.toMatchObject({
      code: "UNAUTHENTICATED",
    });
    const res = await a.billing.webhookHandler()(
      new Request("http://console.test/api/stripe/webhook", {
        method: "POST",
        body: forged.payload,
        headers: { "stripe-signature": forged.header },
      }),
    );
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("UNAUTHENTICATED");
    expect(await tdb.db.select().from(stripeEvents).where(eq(stripeEvents.id, ev.id))).toEqual([]);
    expect((await account(a.org.id)).paymentFailed).toBe(false);
  });

  it("blocks deploys on a failed payment, unblocks on payment, and applies each event once", async () => {
    const a = await subscribedOrg("hook-payment", new Date(Date.now() - 3 * HOUR_MS));
    expect(await planOf(a.org.id)).toBe("payg");
    const handler = a.billing.webhookHandler();
    const deliver = async (e: ReturnType<typeof event>) => {
      const { payload, header } = signed(e);
      const res = await handler(
        new Request("http://console.test/api/stripe/webhook", {
          method: "POST",
          body: payload,
          headers: { "stripe-signature": header },
        }),
      );
      expect(res.status).toBe(200);
      return (await res.json()) as { duplicate: boolean };
    };
    const now = Math.floor(Date.now() / 1000);
    const failed = event(
      "invoice.payment_failed",
      { id: "in_1", object: "invoice", customer: a.customer },
      now - 60,
    );
    expect(await deliver(failed)).toMatchObject({ duplicate: false });
    expect((await account(a.org.id)).paymentFailed).toBe(true);
    await expect(
      checkDeployAllowed(tdb.db, a.org.id, { resources: { cpus: 1, gpus: 0, memoryMb: 256 }, replicas: 1 }),
    ).rejects.toMatchObject({ code: "PAYMENT_REQUIRED" });

    const paid = event("invoice.paid", { id: "in_1", object: "invoice", customer: a.customer }, now - 30);
    expect(await deliver(paid)).toMatchObject({ duplicate: false });
    expect((await account(a.org.id)).paymentFailed).toBe(false);
    // Stripe redelivers the failure (same event id): nothing changes.
    expect(await deliver(failed)).toMatchObject({ duplicate: true });
    expect((await account(a.org.id)).paymentFailed).toBe(false);
    // An older event delivered late (a different one) does not undo the newer state either.
    const stale = event(
      "invoice.payment_failed",
      { id: "in_0", object: "invoice", customer: a.customer },
      now - 3600,
    );
    expect(await deliver(stale)).toMatchObject({ duplicate: false });
    expect((await account(a.org.id)).paymentFailed).toBe(false);
    await checkDeployAllowed(tdb.db, a.org.id, {
      resources: { cpus: 1, gpus: 0, memoryMb: 256 },
      replicas: 1,
    });

    // Cancelling the subscription returns the org to the free plan.
    await deliver(
      event(
        "customer.subscription.deleted",
        { id: "sub_hook-payment", object: "subscription", customer: a.customer, status: "canceled" },
        now,
      ),
    );
    expect(await planOf(a.org.id)).toBe("free");
    expect(await account(a.org.id)).toMatchObject({ subscriptionStatus: "canceled", paidSince: null });
  });

  it("orders invoice and subscription events apart, and refuses a second Checkout while subscribed", async () => {
    const a = await subscribedOrg("hook-streams", new Date(Date.now() - 3 * HOUR_MS));
    const now = Math.floor(Date.now() / 1000);
    const apply = async (e: ReturnType<typeof event>) => {
      const { payload, header } = signed(e);
      return a.billing.handleWebhook(payload, header);
    };
    await apply(
      event(
        "customer.subscription.updated",
        { id: "sub_hook-streams", object: "subscription", customer: a.customer, status: "past_due" },
        now,
      ),
    );
    // The invoice failure happened before the subscription update but arrives after it: still applied.
    await apply(
      event("invoice.payment_failed", { id: "in_s", object: "invoice", customer: a.customer }, now - 10),
    );
    expect(await account(a.org.id)).toMatchObject({ subscriptionStatus: "past_due", paymentFailed: true });
    expect(await planOf(a.org.id)).toBe("payg");
    // An older subscription event does not roll the status back.
    await apply(
      event(
        "customer.subscription.updated",
        { id: "sub_hook-streams", object: "subscription", customer: a.customer, status: "active" },
        now - 20,
      ),
    );
    expect((await account(a.org.id)).subscriptionStatus).toBe("past_due");
    await expect(a.billing.checkoutUrl(a.org.id)).rejects.toMatchObject({ code: "CONFLICT" });
  });
});
