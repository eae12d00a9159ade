import type { CreateContextOptions } from "@tessera/api";
import { bullQueueMonitor } from "@tessera/billing";
import { billing } from "./billing";
import { db } from "./db";
import { jobQueue, platformNotifier, redis } from "./jobs";

type Services = Omit<CreateContextOptions, "auth">;

const holder = globalThis as unknown as { __tesseraServices?: Services };

/**
 * What every API call of the console runs with: the database, the control queue, notices to
 * gateways, billing (Stripe when STRIPE_SECRET_KEY is set) and queue depths for the admin view.
 */
export function apiServices(): Services {
  holder.__tesseraServices ??= {
    db: db(),
    jobs: jobQueue(),
    notify: platformNotifier(),
    billing: billing(),
    queues: bullQueueMonitor(redis(), process.env.REDIS_PREFIX),
  };
  return holder.__tesseraServices;
}
