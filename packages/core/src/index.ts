export * from "./errors.js";
export * from "./environment.js";
export * from "./config.js";
export * from "./api-keys.js";
export * from "./runtime-contract.js";
export * from "./redis-keys.js";
export * from "./jobs.js";
