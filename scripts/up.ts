/**
 * `./dev up` (`pnpm up`): the whole platform on this machine. Uses DATABASE_URL / REDIS_URL when
 * set, otherwise a private Postgres (`.tessera/pg`) and Redis; applies migrations, builds the
 * console when its sources changed, starts console, gateway and provisioner, and stops everything
 * on Ctrl-C.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { LocalDriver } from "../packages/cluster/src/index.js";
import {
  buildConsole,
  consoleBuildStale,
  freePort,
  type Managed,
  migrate,
  type PlatformEnv,
  platformSecrets,
  ROOT,
  startConsole,
  startGateway,
  startPrivatePostgres,
  startPrivateRedis,
  startProvisioner,
} from "./platform.js";

const STATE_DIR = join(ROOT, ".tessera");
const log = (name: string, line: string) => console.log(`[${name}] ${line}`);
const stops: (() => Promise<void>)[] = [];
let stopping = false;

async function shutdown(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    console.log("==> stopping");
    for (const stop of stops.reverse()) await stop().catch((err) => console.error(String(err)));
  }
  process.exit(code);
}
process.on("SIGINT", () => void shutdown(0));
process.on("SIGTERM", () => void shutdown(0));

/**
 * Replicas outlive a provisioner on purpose (a restarted one adopts them), but on a laptop Ctrl-C
 * should leave nothing running: stop every local replica under the data dir. The next `./dev up`
 * sees them gone and starts replacements for what is deployed.
 */
async function stopLocalReplicas(dataDir: string): Promise<void> {
  if (!existsSync(join(dataDir, "clusters"))) return;
  const driver = new LocalDriver({ driverConfig: { dataDir }, onError: () => {} });
  try {
    const stopped = await driver.stopAllReplicas({ drainTimeoutS: 5 });
    if (stopped) console.log(`==> stopped ${stopped} local replica(s)`);
  } finally {
    await driver.close();
  }
}

/** A given port from the environment, else a free one. */
async function portFrom(name: string, fallback: number): Promise<number> {
  const given = Number(process.env[name]);
  if (Number.isInteger(given) && given > 0) return given;
  // The conventional ports when free, so the README's URLs usually hold; any free port otherwise.
  const { createServer } = await import("node:net");
  const free = await new Promise<boolean>((resolve) => {
    const s = createServer()
      .once("error", () => resolve(false))
      .listen(fallback, "127.0.0.1", () => s.close(() => resolve(true)));
  });
  return free ? fallback : freePort();
}

async function main() {
  let databaseUrl = process.env.DATABASE_URL;
  if (!databaseUrl) {
    console.log("==> starting a private PostgreSQL in .tessera/pg");
    const pg = await startPrivatePostgres(join(STATE_DIR, "pg"), await freePort());
    stops.push(pg.stop);
    databaseUrl = pg.url;
  }
  let redisUrl = process.env.REDIS_URL;
  if (!redisUrl) {
    console.log("==> starting a private redis-server");
    const redis = await startPrivateRedis(await freePort(), log);
    stops.push(redis.managed.stop);
    redisUrl = redis.url;
  }
  console.log("==> applying migrations");
  await migrate(databaseUrl);

  if (consoleBuildStale()) {
    console.log("==> building the console (next build)");
    await buildConsole(log);
  }
  const secrets = platformSecrets(STATE_DIR);
  const env: PlatformEnv = {
    databaseUrl,
    redisUrl,
    redisPrefix: process.env.REDIS_PREFIX ?? "tessera:",
    dataDir: process.env.TESSERA_DATA_DIR ?? join(STATE_DIR, "data"),
    consoleUrl: `http://127.0.0.1:${await portFrom("CONSOLE_PORT", 3000)}`,
    gatewayUrl: `http://127.0.0.1:${await portFrom("GATEWAY_PORT", 8080)}`,
    nextAuthSecret: process.env.NEXTAUTH_SECRET ?? secrets.nextAuthSecret,
    handleSecret: process.env.TESSERA_HANDLE_SECRET ?? secrets.handleSecret,
  };
  const services: Managed[] = [];
  const track = (m: Managed | null) => {
    if (!m) return;
    services.push(m);
    stops.push(m.stop);
  };
  track(await startConsole(env, log));
  const gateway = await startGateway(env, log);
  track(gateway);
  // Pushed before the provisioner's stop, so it runs after it: nothing restarts them meanwhile.
  stops.push(() => stopLocalReplicas(env.dataDir));
  const provisioner = startProvisioner(env, log);
  track(provisioner);

  console.log("");
  console.log(`  console:  ${env.consoleUrl}`);
  console.log(
    `  gateway:  ${gateway ? env.gatewayUrl : "(apps/gateway/src/main.ts not present: not started)"}`,
  );
  if (!provisioner)
    console.log("  provisioner: apps/provisioner/src/main.ts not present: deploys stay queued");
  console.log(`  database: ${databaseUrl}`);
  console.log(`  redis:    ${redisUrl}`);
  console.log("  Ctrl-C stops everything.");
  console.log("");

  // A service dying takes the platform down with a clear message rather than half-running.
  const first = await Promise.race(services.map((s) => s.exited.then((code) => ({ s, code }))));
  if (!stopping) {
    console.error(`==> ${first.s.name} exited (${first.code}); stopping the platform`);
    await shutdown(1);
  }
}

main().catch(async (err) => {
  console.error(`up failed: ${(err as Error).message ?? err}`);
  await shutdown(1);
});
