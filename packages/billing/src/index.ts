export * from "./admission.js";
export * from "./jobs.js";
export * from "./metering.js";
export * from "./plans.js";
export * from "./reports.js";
export * from "./slo.js";
export * from "./stripe.js";
export * from "./uptime.js";
