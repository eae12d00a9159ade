import { DEFAULT_REDIS_PREFIX } from "@tessera/core";
import { connect } from "@tessera/db";
import { componentLog } from "./controller/log.js";
import { startProvisioner } from "./provisioner.js";

const log = componentLog("provisioner");
const db = connect(process.env.DATABASE_URL);
const secret = process.env.TESSERA_HANDLE_SECRET;
const gatewayUrl = process.env.TESSERA_GATEWAY_URL;
if (!secret || !gatewayUrl)
  log("warn", "TESSERA_HANDLE_SECRET or TESSERA_GATEWAY_URL unset: replicas get no handles for composition");

const provisioner = startProvisioner({
  db: db.db,
  redisUrl: process.env.REDIS_URL ?? "redis://127.0.0.1:6379",
  redisPrefix: process.env.REDIS_PREFIX ?? DEFAULT_REDIS_PREFIX,
  dataDir: process.env.TESSERA_DATA_DIR,
  handles: secret && gatewayUrl ? { secret, gatewayUrl } : undefined,
});
await provisioner.ready;
log("info", "provisioner started");

let stopping = false;
for (const signal of ["SIGTERM", "SIGINT"] as const)
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    log("info", "provisioner stopping", { signal });
    provisioner
      .close()
      .then(() => db.close())
      .then(() => process.exit(0))
      .catch((err) => {
        log("error", "unclean stop", { err: String(err) });
        process.exit(1);
      });
  });
