export * from "./driver.js";
export * from "./factory.js";
export * from "./kubernetes/index.js";
export * from "./local/index.js";
