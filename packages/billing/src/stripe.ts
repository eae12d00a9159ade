import { TesseraError } from "@tessera/core";
import {
  type BillingStatus,
  billingAccounts,
  billingCursors,
  type Database,
  organisations,
  stripeEvents,
  stripeUsageReports,
} from "@tessera/db";
import { and, eq, sql } from "drizzle-orm";
import Stripe from "stripe";
import { HOUR_MS, hourOf, METERED_QUANTITIES, type MeteredQuantity } from "./metering.js";
import { DEFAULT_PLANS, PAID_PLAN_ID } from "./plans.js";

/**
 * Usage goes to Stripe as Billing Meter Events (`POST /v1/billing/meter_events`), one meter per
 * metered quantity: the current usage-based billing API. Usage records on metered subscription
 * items are the legacy API, removed from Stripe API versions since 2025-03-31.basil.
 */
export const DEFAULT_METER_EVENT_NAMES: Record<MeteredQuantity, string> = {
  requests: "tessera_requests",
  cpuSeconds: "tessera_cpu_seconds",
  gpuSeconds: "tessera_gpu_seconds",
  memoryGibSeconds: "tessera_memory_gib_seconds",
  buildSeconds: "tessera_build_seconds",
  egressBytes: "tessera_egress_bytes",
};

export interface StripeSettings {
  secretKey: string;
  /** `whsec_...`; without it webhooks are refused. */
  webhookSecret: string | null;
  /** Metered prices the paid plan's subscription is made of (one per meter), for Checkout. */
  priceIds: string[];
  meterEventNames: Record<MeteredQuantity, string>;
  /** Base URL of the console, for Checkout/Portal return links. */
  consoleUrl: string;
  /** API endpoint override (a proxy, or a local server in tests). */
  host?: string;
  port?: number;
  protocol?: "http" | "https";
  /** Network retries of the SDK (same idempotency key); the job's own retries come on top. */
  maxNetworkRetries?: number;
}

/**
 * Settings from the environment, or null when `STRIPE_SECRET_KEY` is unset: the platform then
 * runs without billing ("not configured"), plans and limits still apply.
 */
export function stripeSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): StripeSettings | null {
  if (!env.STRIPE_SECRET_KEY) return null;
  const api = env.STRIPE_API_URL ? new URL(env.STRIPE_API_URL) : null;
  return {
    secretKey: env.STRIPE_SECRET_KEY,
    webhookSecret: env.STRIPE_WEBHOOK_SECRET || null,
    priceIds: (env.STRIPE_PRICE_IDS ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
    meterEventNames: {
      ...DEFAULT_METER_EVENT_NAMES,
      ...(env.STRIPE_METER_EVENT_NAMES ? JSON.parse(env.STRIPE_METER_EVENT_NAMES) : {}),
    },
    consoleUrl: env.TESSERA_CONSOLE_URL ?? "http://127.0.0.1:3000",
    ...(api
      ? {
          host: api.hostname,
          port: Number(api.port || (api.protocol === "http:" ? 80 : 443)),
          protocol: api.protocol === "http:" ? "http" : "https",
        }
      : {}),
  };
}

/** Stripe's view of usage is settled an hour after the hour plus this lag (the rollup has run). */
export const STRIPE_REPORT_LAG_MS = 10 * 60_000;
/** Stripe accepts meter events up to 35 days old. */
const REPORT_HORIZON_MS = 35 * 24 * HOUR_MS;
const SYNC_CURSOR = "stripe_usage_sync";

const SUBSCRIPTION_ON_PAID_PLAN: BillingStatus[] = ["active", "trialing", "past_due"];

export class StripeBilling {
  readonly stripe: Stripe;
  constructor(
    private readonly db: Database,
    readonly settings: StripeSettings,
  ) {
    this.stripe = new Stripe(settings.secretKey, {
      ...(settings.host ? { host: settings.host } : {}),
      ...(settings.port ? { port: settings.port } : {}),
      ...(settings.protocol ? { protocol: settings.protocol } : {}),
      maxNetworkRetries: settings.maxNetworkRetries ?? 2,
      telemetry: false,
    });
  }

  /** The organisation's Stripe customer, created once (the idempotency key makes a racing second create return the first). */
  async ensureCustomer(orgId: string): Promise<string> {
    const [existing] = await this.db
      .select({ customer: billingAccounts.stripeCustomerId })
      .from(billingAccounts)
      .where(eq(billingAccounts.orgId, orgId));
    if (existing?.customer) return existing.customer;
    const [org] = await this.db.select().from(organisations).where(eq(organisations.id, orgId));
    if (!org) throw new TesseraError("NOT_FOUND", "organisation not found");
    const customer = await this.stripe.customers.create(
      { name: org.name, metadata: { org_id: org.id, org_slug: org.slug } },
      { idempotencyKey: `tessera-customer-${org.id}` },
    );
    await this.db
      .insert(billingAccounts)
      .values({ orgId, stripeCustomerId: customer.id })
      .onConflictDoUpdate({
        target: billingAccounts.orgId,
        set: {
          stripeCustomerId: sql`coalesce(${billingAccounts.stripeCustomerId}, excluded.stripe_customer_id)`,
        },
      });
    return customer.id;
  }

  /** Checkout in subscription mode for the paid plan: the tenant adds a payment method there. */
  async checkoutUrl(orgId: string): Promise<string> {
    if (this.settings.priceIds.length === 0)
      throw new TesseraError("BAD_REQUEST", "billing has no prices configured (STRIPE_PRICE_IDS)");
    const [acc] = await this.db.select().from(billingAccounts).where(eq(billingAccounts.orgId, orgId));
    if (acc && SUBSCRIPTION_ON_PAID_PLAN.includes(acc.subscriptionStatus))
      throw new TesseraError(
        "CONFLICT",
        "this organisation already has a subscription: manage it in the billing portal",
      );
    const customer = await this.ensureCustomer(orgId);
    const back = await this.billingPageUrl(orgId);
    const session = await this.stripe.checkout.sessions.create({
      mode: "subscription",
      customer,
      client_reference_id: orgId,
      line_items: this.settings.priceIds.map((price) => ({ price })),
      success_url: `${back}?checkout=success`,
      cancel_url: `${back}?checkout=cancelled`,
      metadata: { org_id: orgId },
    });
    if (!session.url)
      throw new TesseraError("UPSTREAM_ERROR", "Stripe returned a Checkout session without a URL");
    return session.url;
  }

  /** Customer Portal: payment methods, invoices, cancelling. */
  async portalUrl(orgId: string): Promise<string> {
    const customer = await this.ensureCustomer(orgId);
    const session = await this.stripe.billingPortal.sessions.create({
      customer,
      return_url: await this.billingPageUrl(orgId),
    });
    return session.url;
  }

  async listInvoices(orgId: string, limit = 24) {
    const [acc] = await this.db
      .select({ customer: billingAccounts.stripeCustomerId })
      .from(billingAccounts)
      .where(eq(billingAccounts.orgId, orgId));
    if (!acc?.customer) return [];
    const list = await this.stripe.invoices.list({ customer: acc.customer, limit });
    return list.data.map((i) => ({
      id: i.id,
      number: i.number ?? null,
      status: i.status ?? null,
      currency: i.currency,
      amountDue: i.amount_due,
      amountPaid: i.amount_paid,
      periodStart: new Date(i.period_start * 1000),
      periodEnd: new Date(i.period_end * 1000),
      hostedInvoiceUrl: i.hosted_invoice_url ?? null,
      pdfUrl: i.invoice_pdf ?? null,
    }));
  }

  private async billingPageUrl(orgId: string): Promise<string> {
    const [org] = await this.db
      .select({ slug: organisations.slug })
      .from(organisations)
      .where(eq(organisations.id, orgId));
    return `${this.settings.consoleUrl.replace(/\/$/, "")}/o/${org?.slug ?? orgId}/billing`;
  }

  /**
   * Send settled hourly usage of paid-plan organisations to Stripe as meter events. Each event
   * reports the growth of one (org, hour, quantity) since its earlier reports (late events make
   * an hour grow), in whole units, and is keyed `org:hour:quantity:sequence` both as the meter
   * event identifier and as the Idempotency-Key. The row is written after Stripe accepted it:
   * a job that dies in between resends the same key, and Stripe answers with the first result.
   * Organisations that fail are retried by the next run (the job fails so BullMQ retries it too).
   */
  async reportUsage(now: Date = new Date()): Promise<{ sent: number; failures: string[] }> {
    const settledBefore = hourOf(new Date(now.getTime() - STRIPE_REPORT_LAG_MS - HOUR_MS));
    const [cursor] = await this.db.select().from(billingCursors).where(eq(billingCursors.name, SYNC_CURSOR));
    const horizon = new Date(now.getTime() - REPORT_HORIZON_MS);
    // Hours recomputed since the previous run (or ever, on the first run) within Stripe's horizon.
    const changedSince = cursor ? new Date(cursor.at.getTime() - STRIPE_REPORT_LAG_MS) : new Date(0);
    const sums = METERED_QUANTITIES.map(
      (q) => sql`floor(sum(${sql.identifier(snake(q))}))::bigint as ${sql.identifier(q)}`,
    );
    const due = await this.db.execute<
      Record<string, string> & { org_id: string; hour: Date; customer: string }
    >(sql`
      select h.org_id, h.hour, b.stripe_customer_id as customer, ${sql.join(sums, sql`, `)}
      from usage_hourly h
      join organisations o on o.id = h.org_id
      join billing_accounts b on b.org_id = h.org_id
      where o.plan in (${sql.join(
        paidPlanIds().map((p) => sql`${p}`),
        sql`, `,
      )})
        and b.stripe_customer_id is not null and b.paid_since is not null
        and h.hour >= date_trunc('hour', b.paid_since)
        and h.hour >= ${horizon} and h.hour <= ${settledBefore}
        and (h.org_id, h.hour) in (
          select org_id, hour from usage_hourly where computed_at >= ${changedSince})
      group by h.org_id, h.hour, b.stripe_customer_id
      order by h.hour`);
    let sent = 0;
    const failures: string[] = [];
    const failedOrgs = new Set<string>();
    for (const row of due.rows) {
      if (failedOrgs.has(row.org_id)) continue;
      const hour = new Date(row.hour);
      const reported = await this.db
        .select({
          quantity: stripeUsageReports.quantity,
          value: sql<string>`sum(${stripeUsageReports.value})`,
          seq: sql<number>`max(${stripeUsageReports.sequence})`,
        })
        .from(stripeUsageReports)
        .where(and(eq(stripeUsageReports.orgId, row.org_id), eq(stripeUsageReports.hour, hour)))
        .groupBy(stripeUsageReports.quantity);
      const before = new Map(
        reported.map((r) => [r.quantity, { value: Number(r.value), seq: Number(r.seq) }]),
      );
      for (const quantity of METERED_QUANTITIES) {
        const total = Number(row[quantity] ?? 0);
        const prev = before.get(quantity) ?? { value: 0, seq: 0 };
        const delta = total - prev.value;
        if (delta <= 0) continue;
        const sequence = prev.seq + 1;
        const identifier = `${row.org_id}:${hour.toISOString()}:${quantity}:${sequence}`;
        try {
          await this.stripe.billing.meterEvents.create(
            {
              event_name: this.settings.meterEventNames[quantity],
              identifier,
              timestamp: Math.floor(hour.getTime() / 1000),
              payload: { stripe_customer_id: row.customer, value: String(delta) },
            },
            { idempotencyKey: identifier },
          );
        } catch (err) {
          failures.push(`${row.org_id} ${hour.toISOString()} ${quantity}: ${(err as Error).message}`);
          failedOrgs.add(row.org_id);
          break;
        }
        await this.db
          .insert(stripeUsageReports)
          .values({ identifier, orgId: row.org_id, hour, quantity, value: delta, sequence })
          .onConflictDoNothing();
        sent++;
      }
    }
    // A failed org keeps the cursor back so its hours are looked at again.
    if (failures.length === 0)
      await this.db
        .insert(billingCursors)
        .values({ name: SYNC_CURSOR, at: now })
        .onConflictDoUpdate({ target: billingCursors.name, set: { at: now } });
    return { sent, failures };
  }

  /**
   * Verify a webhook delivery's `Stripe-Signature` over the raw body and apply it once: the event
   * id is recorded in the same transaction as its effect, so a redelivery changes nothing.
   */
  async handleWebhook(
    rawBody: string | Buffer,
    signature: string | null | undefined,
  ): Promise<{ type: string; duplicate: boolean }> {
    if (!this.settings.webhookSecret)
      throw new TesseraError("BAD_REQUEST", "Stripe webhooks are not configured");
    if (!signature) throw new TesseraError("UNAUTHENTICATED", "missing Stripe-Signature header");
    let event: Stripe.Event;
    try {
      event = this.stripe.webhooks.constructEvent(rawBody, signature, this.settings.webhookSecret);
    } catch (err) {
      throw new TesseraError("UNAUTHENTICATED", `invalid Stripe signature: ${(err as Error).message}`);
    }
    return applyStripeEvent(this.db, event);
  }

  /** A fetch-API route handler (Next.js `POST`) for Stripe's webhook endpoint. */
  webhookHandler(): (req: Request) => Promise<Response> {
    return async (req) => {
      try {
        const result = await this.handleWebhook(await req.text(), req.headers.get("stripe-signature"));
        return Response.json({ received: true, ...result });
      } catch (err) {
        if (err instanceof TesseraError) return Response.json(err.toBody(), { status: err.httpStatus });
        console.error(JSON.stringify({ level: "error", msg: "stripe webhook failed", err: String(err) }));
        // 500: Stripe redelivers later, and the event was not recorded, so it will apply then.
        return Response.json({ error: { code: "INTERNAL", message: "internal error" } }, { status: 500 });
      }
    };
  }
}

const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const paidPlanIds = () =>
  Object.values(DEFAULT_PLANS)
    .filter((p) => p.paid)
    .map((p) => p.id);

type StripeObject = { customer?: string | { id: string } | null; id?: string; status?: string };

/** Apply one verified Stripe event (exported for tests and replays of stored events). */
export async function applyStripeEvent(
  db: Database,
  event: Stripe.Event,
): Promise<{ type: string; duplicate: boolean }> {
  const object = event.data.object as StripeObject;
  const customer = typeof object.customer === "string" ? object.customer : (object.customer?.id ?? null);
  return db.transaction(async (tx) => {
    const [account] = customer
      ? await tx
          .select()
          .from(billingAccounts)
          .where(eq(billingAccounts.stripeCustomerId, customer))
          .for("update")
      : [];
    const inserted = await tx
      .insert(stripeEvents)
      .values({ id: event.id, type: event.type, orgId: account?.orgId ?? null })
      .onConflictDoNothing()
      .returning({ id: stripeEvents.id });
    if (inserted.length === 0) return { type: event.type, duplicate: true };
    if (!account) return { type: event.type, duplicate: false };
    const created = new Date(event.created * 1000);
    // Stripe does not order deliveries: per stream, an event older than the newest applied changes nothing.
    const newer = (last: Date | null) => !last || created >= last;
    const set: Partial<typeof billingAccounts.$inferInsert> = { updatedAt: new Date() };
    let plan: string | null = null;
    switch (event.type) {
      case "invoice.payment_failed":
        if (!newer(account.paymentEventAt)) return { type: event.type, duplicate: false };
        set.paymentEventAt = created;
        set.paymentFailed = true;
        set.paymentFailedAt = account.paymentFailedAt ?? created;
        break;
      case "invoice.paid":
        if (!newer(account.paymentEventAt)) return { type: event.type, duplicate: false };
        set.paymentEventAt = created;
        set.paymentFailed = false;
        set.paymentFailedAt = null;
        break;
      case "customer.subscription.created":
      case "customer.subscription.updated": {
        if (!newer(account.subscriptionEventAt)) return { type: event.type, duplicate: false };
        const status = (object.status ?? "incomplete") as BillingStatus;
        set.subscriptionEventAt = created;
        set.stripeSubscriptionId = object.id ?? null;
        set.subscriptionStatus = status;
        plan = SUBSCRIPTION_ON_PAID_PLAN.includes(status) ? PAID_PLAN_ID : "free";
        set.paidSince = plan === PAID_PLAN_ID ? (account.paidSince ?? created) : null;
        break;
      }
      case "customer.subscription.deleted":
        if (!newer(account.subscriptionEventAt)) return { type: event.type, duplicate: false };
        set.subscriptionEventAt = created;
        set.stripeSubscriptionId = null;
        set.subscriptionStatus = "canceled";
        set.paidSince = null;
        plan = "free";
        break;
      default:
        return { type: event.type, duplicate: false };
    }
    set.lastEventAt = account.lastEventAt && account.lastEventAt > created ? account.lastEventAt : created;
    await tx.update(billingAccounts).set(set).where(eq(billingAccounts.orgId, account.orgId));
    if (plan) await tx.update(organisations).set({ plan }).where(eq(organisations.id, account.orgId));
    return { type: event.type, duplicate: false };
  });
}

export { Stripe };
