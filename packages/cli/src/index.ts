export { bundleDirectory } from "./bundle.js";
export { CliError, createApiClient, describeApiError, settingsFromEnv } from "./client.js";
export { deploy } from "./commands/deploy.js";
export { scale } from "./commands/scale.js";
export { formatStatus, status } from "./commands/status.js";
export { main } from "./main.js";
export { readManifest } from "./manifest.js";
export { currentOrg } from "./org.js";
