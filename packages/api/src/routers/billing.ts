import {
  checkDeployAllowed,
  checkScaleAllowed,
  currentPeriodCost,
  type DeployRequest,
  loadOrgBillingState,
  lockOrgPlan,
  StripeBilling,
  stripeSettingsFromEnv,
} from "@tessera/billing/service";
import { TesseraError } from "@tessera/core";
import { billingAccounts, type Database, type Transaction } from "@tessera/db";
import { eq } from "drizzle-orm";
import type { BillingOptions, Context } from "../context.js";
import { apiError } from "../errors.js";
import { orgProcedure, router } from "../trpc.js";

/**
 * Billing for the API from the environment: Stripe when `STRIPE_SECRET_KEY` is set; plan limits
 * enforced with Stripe, or without it when `TESSERA_ENFORCE_PLAN_LIMITS=1`.
 */
export function billingOptionsFromEnv(db: Database, env: NodeJS.ProcessEnv = process.env): BillingOptions {
  const settings = stripeSettingsFromEnv(env);
  return {
    stripe: settings ? new StripeBilling(db, settings) : null,
    enforcePlanLimits: !!settings || env.TESSERA_ENFORCE_PLAN_LIMITS === "1",
  };
}

/** Billing failures as API errors: Tessera codes kept, Stripe's own errors as UPSTREAM_ERROR. */
async function billingCall<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof TesseraError) throw apiError(err.code, err.message, err.details);
    const stripeType = (err as { type?: string }).type;
    if (typeof stripeType === "string" && stripeType.startsWith("Stripe"))
      throw apiError("UPSTREAM_ERROR", `Stripe: ${(err as Error).message}`);
    throw err;
  }
}

declare const planLocked: unique symbol;
/** A transaction from `planTransaction`: it holds the organisation's plan lock when plans are enforced. */
export type PlanTx = Transaction & { readonly [planLocked]: true };

/**
 * The transaction of a write that can grow an organisation's footprint (deploy, Ray Serve deploy,
 * scale-up, canary, promotion, rollback). With plans enforced it starts with the organisation's plan lock, so the plan check
 * (`enforceDeployPlan`, `enforceScalePlan` with this transaction) and the write of one such
 * change finish before the next one checks: concurrent deploys cannot together exceed the plan.
 */
export function planTransaction<T>(
  ctx: Pick<Context, "db" | "billing">,
  orgId: string,
  fn: (tx: PlanTx) => Promise<T>,
): Promise<T> {
  return ctx.db.transaction(async (tx) => {
    if (ctx.billing.enforcePlanLimits) await lockOrgPlan(tx, orgId);
    return fn(tx as PlanTx);
  });
}

/** Refuse a deploy past the organisation's plan (when this platform enforces plans), before writing it in `tx`. */
export function enforceDeployPlan(
  ctx: Pick<Context, "billing">,
  tx: PlanTx,
  orgId: string,
  request: DeployRequest | DeployRequest[],
) {
  if (!ctx.billing.enforcePlanLimits) return Promise.resolve();
  return billingCall(() => checkDeployAllowed(tx, orgId, request));
}

/** Refuse a scale-up past the organisation's plan, before writing it in `tx`; scaling down always passes. */
export function enforceScalePlan(
  ctx: Pick<Context, "billing">,
  tx: PlanTx,
  orgId: string,
  deploymentId: string,
  replicas: number,
) {
  if (!ctx.billing.enforcePlanLimits) return Promise.resolve();
  return billingCall(() => checkScaleAllowed(tx, orgId, deploymentId, replicas));
}

function stripeOf(ctx: Context): StripeBilling {
  if (!ctx.billing.stripe) throw apiError("BAD_REQUEST", "billing is not configured on this platform");
  return ctx.billing.stripe;
}

export const billingRouter = router({
  /** The plan, its limits, payment state and whether Stripe is configured at all. */
  plan: orgProcedure("member").query(async ({ ctx }) => {
    const state = await billingCall(() => loadOrgBillingState(ctx.db, ctx.org.id));
    const [acc] = await ctx.db.select().from(billingAccounts).where(eq(billingAccounts.orgId, ctx.org.id));
    return {
      configured: ctx.billing.stripe !== null,
      enforced: ctx.billing.enforcePlanLimits,
      plan: {
        id: state.plan.id,
        name: state.plan.name,
        paid: state.plan.paid,
        limits: state.plan.limits,
        prices: state.plan.prices,
      },
      monthlyRequests: state.monthlyRequests,
      paymentFailed: state.paymentFailed,
      paymentFailedAt: state.paymentFailedAt,
      subscriptionStatus: acc?.subscriptionStatus ?? "none",
      hasCustomer: !!acc?.stripeCustomerId,
    };
  }),

  /** Running cost of the current month with the per-deployment breakdown. */
  usageSummary: orgProcedure("member").query(({ ctx }) => currentPeriodCost(ctx.db, ctx.org.id)),

  /** Invoices from Stripe (empty when billing is not configured or there is no customer yet). */
  invoices: orgProcedure("admin").query(({ ctx }) =>
    ctx.billing.stripe ? billingCall(() => ctx.billing.stripe!.listInvoices(ctx.org.id)) : [],
  ),

  /** A Stripe Checkout URL to subscribe to the paid plan (adds a payment method). */
  checkout: orgProcedure("owner").mutation(async ({ ctx }) => {
    const stripe = stripeOf(ctx);
    ctx.audit.targetId = ctx.org.id;
    return { url: await billingCall(() => stripe.checkoutUrl(ctx.org.id)) };
  }),

  /** A Stripe Customer Portal URL (payment methods, invoices, cancel). */
  portal: orgProcedure("owner").mutation(async ({ ctx }) => {
    const stripe = stripeOf(ctx);
    ctx.audit.targetId = ctx.org.id;
    return { url: await billingCall(() => stripe.portalUrl(ctx.org.id)) };
  }),
});
