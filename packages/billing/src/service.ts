/**
 * Billing without the job runtime (no BullMQ, Redis or Prometheus client): what the API, and so
 * the console's server bundle, imports. The jobs, queue monitor, metrics and gateway admission
 * are in the package's main entry.
 */
export * from "./metering.js";
export * from "./plans.js";
export * from "./reports.js";
export * from "./slo.js";
export * from "./stripe.js";
