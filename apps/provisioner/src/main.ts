import { bullQueueMonitor, startBillingJobs } from "@tessera/billing";
import { DEFAULT_REDIS_PREFIX } from "@tessera/core";
import { connect } from "@tessera/db";
import { Redis } from "ioredis";
import { componentLog } from "./controller/log.js";
import { startProvisioner } from "./provisioner.js";

const log = componentLog("provisioner");
const db = connect(process.env.DATABASE_URL);
const secret = process.env.TESSERA_HANDLE_SECRET;
const gatewayUrl = process.env.TESSERA_GATEWAY_URL;
if (!secret || !gatewayUrl)
  log(
    "warn",
    "TESSERA_HANDLE_SECRET or TESSERA_GATEWAY_URL unset: replicas get no handles for composition, uptime probes call replicas directly",
  );

const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const redisPrefix = process.env.REDIS_PREFIX ?? DEFAULT_REDIS_PREFIX;
const provisioner = startProvisioner({
  db: db.db,
  redisUrl,
  redisPrefix,
  dataDir: process.env.TESSERA_DATA_DIR,
  handles: secret && gatewayUrl ? { secret, gatewayUrl } : undefined,
});
await provisioner.ready;
// Metering rollups, Stripe sync, uptime probes and retention run as the `billing` queue's jobs.
const billingRedis = new Redis(redisUrl, { maxRetriesPerRequest: null });
const billing = await startBillingJobs({
  db: db.db,
  redis: billingRedis,
  prefix: redisPrefix,
  queues: bullQueueMonitor(billingRedis, redisPrefix),
  // Probes go through the gateway (what clients see); without one, straight to the replicas.
  probe: secret && gatewayUrl ? { gateway: { url: gatewayUrl, secret } } : undefined,
  log,
});
log("info", "provisioner started");

let stopping = false;
for (const signal of ["SIGTERM", "SIGINT"] as const)
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    log("info", "provisioner stopping", { signal });
    Promise.all([provisioner.close(), billing.close()])
      .then(() => billingRedis.quit())
      .then(() => db.close())
      .then(() => process.exit(0))
      .catch((err) => {
        log("error", "unclean stop", { err: String(err) });
        process.exit(1);
      });
  });
