/**
 * The gateway process: `pnpm --filter @tessera/gateway start`. Configuration from the environment:
 * DATABASE_URL, REDIS_URL, REDIS_PREFIX, GATEWAY_PORT (8080), GATEWAY_HOST (127.0.0.1),
 * TESSERA_HANDLE_SECRET, TESSERA_COLD_START_TIMEOUT_S (60), TESSERA_METRICS_TOKEN; plans are
 * enforced (rate limits, monthly requests, failed payments) with STRIPE_SECRET_KEY or
 * TESSERA_ENFORCE_PLAN_LIMITS=1, as the API does for deploys.
 */
import { OrgAdmission } from "@tessera/billing";
import { DEFAULT_REDIS_PREFIX, HANDLE_SECRET_ENV } from "@tessera/core";
import { connect } from "@tessera/db";
import { createGateway } from "./gateway.js";
import { jsonLog } from "./log.js";

function numberEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) {
    jsonLog("error", `${name} must be a non-negative number`, { value: raw });
    process.exit(2);
  }
  return value;
}

const handle = connect(process.env.DATABASE_URL);
const enforcePlans = !!process.env.STRIPE_SECRET_KEY || process.env.TESSERA_ENFORCE_PLAN_LIMITS === "1";
const gateway = await createGateway({
  db: handle.db,
  redisUrl: process.env.REDIS_URL ?? "redis://127.0.0.1:6379",
  redisPrefix: process.env.REDIS_PREFIX ?? DEFAULT_REDIS_PREFIX,
  port: numberEnv("GATEWAY_PORT", 8080),
  host: process.env.GATEWAY_HOST ?? "127.0.0.1",
  handleSecret: process.env[HANDLE_SECRET_ENV] || undefined,
  coldStartTimeoutS: numberEnv("TESSERA_COLD_START_TIMEOUT_S", 60),
  metricsToken: process.env.TESSERA_METRICS_TOKEN || undefined,
  // Through the gateway's Redis client, so the per-minute rate counts requests of every gateway.
  admission: enforcePlans ? (shared) => new OrgAdmission(handle.db, { log: jsonLog, shared }) : undefined,
});
if (!process.env[HANDLE_SECRET_ENV])
  jsonLog("warn", `${HANDLE_SECRET_ENV} is not set: handle calls will be refused`);

let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  jsonLog("info", "shutting down", { signal });
  await gateway.close();
  await handle.close().catch(() => {});
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
