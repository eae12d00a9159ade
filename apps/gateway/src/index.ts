export { ApiKeyVerifier, bearerToken, type KeyIdentity } from "./auth.js";
export {
  createGateway,
  type Gateway,
  type GatewayOptions,
  type RequestAdmission,
  type SharedRedis,
} from "./gateway.js";
export { LoadReporter } from "./load-reporter.js";
export { subscribeNotices } from "./notices.js";
export { pick, Router } from "./router.js";
export { loadRoutingSnapshot, RoutingTable } from "./routing-table.js";
export { UsageRecorder } from "./usage-recorder.js";
