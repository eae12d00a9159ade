import { type BillingOptions, billingOptionsFromEnv } from "@tessera/api";
import { db } from "./db";

let options: BillingOptions | undefined;

/**
 * Billing for the API and the Stripe webhook, from the environment: Stripe when
 * `STRIPE_SECRET_KEY` is set, else "not configured" (see packages/billing/README.md).
 */
export function billing(): BillingOptions {
  options ??= billingOptionsFromEnv(db());
  return options;
}
