export * from "./admission.js";
export * from "./jobs.js";
export * from "./metrics.js";
export * from "./queues.js";
export * from "./retention.js";
export * from "./service.js";
export * from "./uptime.js";
