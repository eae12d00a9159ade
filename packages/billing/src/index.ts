export * from "./metering.js";
export * from "./plans.js";
export * from "./stripe.js";
