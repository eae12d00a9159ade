export * from "./api-keys.js";
export * from "./config.js";
export * from "./environment.js";
export * from "./errors.js";
export * from "./handle-tokens.js";
export * from "./jobs.js";
export * from "./redis-keys.js";
export * from "./runtime-contract.js";
