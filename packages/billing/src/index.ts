export * from "./metering.js";
export * from "./plans.js";
