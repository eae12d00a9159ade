/**
 * Starting the pieces of a local Tessera platform as child processes: a private Postgres and
 * Redis (when no URL is given), the console, and the gateway and provisioner when their entry
 * points exist. Used by `scripts/up.ts` (`./dev up`) and by the browser tests (`e2e/run.mjs`).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { ensureDatabase, runMigrations } from "../packages/db/src/index.js";

export const ROOT = join(import.meta.dirname, "..");

export type LogSink = (name: string, line: string) => void;

export interface Managed {
  name: string;
  child: ChildProcess;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | string>;
  stop(): Promise<void>;
}

/** A TCP port nobody listens on right now (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** Spawn a long-running process, prefixing each output line with its name. */
export function startProcess(
  name: string,
  command: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; log: LogSink },
): Managed {
  const child = spawn(command, args, {
    cwd: opts.cwd ?? ROOT,
    env: opts.env ?? process.env,
    stdio: ["ignore", "pipe", "pipe"],
    // Its own process group, so stopping it also stops what it started (next start's workers).
    detached: true,
  });
  for (const stream of [child.stdout, child.stderr]) {
    let buf = "";
    stream?.setEncoding("utf8");
    stream?.on("data", (chunk: string) => {
      buf += chunk;
      const lines = buf.split("\n");
      buf = lines.pop() ?? "";
      for (const l of lines) opts.log(name, l);
    });
  }
  const exited = new Promise<number | string>((resolve) => {
    child.on("exit", (code, signal) => resolve(code ?? signal ?? "unknown"));
    child.on("error", (err) => {
      opts.log(name, `failed to start: ${err.message}`);
      resolve("spawn-error");
    });
  });
  return {
    name,
    child,
    exited,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const signal = (s: NodeJS.Signals) => {
        try {
          process.kill(-child.pid!, s);
        } catch {
          /* already gone */
        }
      };
      signal("SIGTERM");
      const timer = setTimeout(() => signal("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Poll `url` until it answers (any HTTP status below 500) or the deadline passes. */
export async function waitForHttp(url: string, timeoutMs: number, died?: Promise<unknown>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let gone = false;
  void died?.then(() => {
    gone = true;
  });
  for (;;) {
    if (gone) throw new Error(`the process serving ${url} exited`);
    try {
      const res = await fetch(url, { redirect: "manual", signal: AbortSignal.timeout(5_000) });
      if (res.status < 500) return;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error(`${url} did not answer within ${timeoutMs / 1000}s`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

function commandExists(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** `pg_ctl` and friends: on PATH, else Debian's versioned directory. */
function pgBin(tool: string): string {
  if (commandExists(tool)) return tool;
  const base = "/usr/lib/postgresql";
  const versions = existsSync(base) ? readdirSync(base).sort((a, b) => Number(b) - Number(a)) : [];
  for (const v of versions) {
    const p = join(base, v, "bin", tool);
    if (existsSync(p)) return p;
  }
  throw new Error(`${tool} not found: install PostgreSQL (apt-get install postgresql) or set DATABASE_URL`);
}

const isRoot = () => process.getuid?.() === 0;

/** Postgres refuses to run as root: as root, run its tools as the `postgres` OS user. */
function pgCommand(tool: string, args: string[]): [string, string[]] {
  return isRoot() ? ["runuser", ["-u", "postgres", "--", pgBin(tool), ...args]] : [pgBin(tool), args];
}

function runPg(tool: string, args: string[]): void {
  const [cmd, argv] = pgCommand(tool, args);
  execFileSync(cmd, argv, { stdio: "pipe" });
}

/**
 * A private Postgres cluster in `dir` (initdb on first use), listening on 127.0.0.1:`port` with
 * trust auth, started with pg_ctl; `stop()` shuts it down fast.
 */
export async function startPrivatePostgres(
  dir: string,
  port: number,
): Promise<{ url: string; stop(): Promise<void> }> {
  mkdirSync(dir, { recursive: true });
  if (isRoot()) {
    const uid = Number(execFileSync("id", ["-u", "postgres"]).toString().trim());
    const gid = Number(execFileSync("id", ["-g", "postgres"]).toString().trim());
    chownSync(dir, uid, gid);
    chmodSync(dir, 0o700);
  }
  if (!existsSync(join(dir, "PG_VERSION"))) {
    runPg("initdb", ["-D", dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
  }
  // A previous run killed without cleanup leaves a server running on the old port: stop it.
  if (existsSync(join(dir, "postmaster.pid"))) {
    try {
      runPg("pg_ctl", ["-D", dir, "-m", "fast", "-w", "stop"]);
    } catch {
      /* stale pid file only */
    }
  }
  const opts = `-p ${port} -c listen_addresses=127.0.0.1 -k ${dir} -c fsync=off`;
  runPg("pg_ctl", ["-D", dir, "-o", opts, "-l", join(dir, "server.log"), "-w", "-t", "60", "start"]);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/tessera`,
    async stop() {
      try {
        runPg("pg_ctl", ["-D", dir, "-m", "fast", "-w", "stop"]);
      } catch {
        /* already stopped */
      }
    },
  };
}

/** A private `redis-server` with no persistence on 127.0.0.1:`port`. */
export async function startPrivateRedis(
  port: number,
  log: LogSink,
): Promise<{ url: string; managed: Managed }> {
  if (!commandExists("redis-server"))
    throw new Error("redis-server not found: install it (apt-get install redis-server) or set REDIS_URL");
  const managed = startProcess(
    "redis",
    "redis-server",
    [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--loglevel",
      "warning",
    ],
    { log },
  );
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const out = execFileSync("redis-cli", ["-p", String(port), "ping"], { stdio: "pipe" }).toString();
      if (out.trim() === "PONG") break;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error("redis-server did not start");
    await new Promise((r) => setTimeout(r, 200));
  }
  return { url: `redis://127.0.0.1:${port}`, managed };
}

export async function migrate(databaseUrl: string): Promise<void> {
  await ensureDatabase(databaseUrl);
  await runMigrations(databaseUrl);
}

/** Secrets generated once per checkout and kept in `.tessera/secrets.json`. */
export function platformSecrets(stateDir: string): { nextAuthSecret: string; handleSecret: string } {
  const file = join(stateDir, "secrets.json");
  if (existsSync(file)) return JSON.parse(readFileSync(file, "utf8"));
  mkdirSync(stateDir, { recursive: true });
  const secrets = {
    nextAuthSecret: randomBytes(32).toString("base64url"),
    handleSecret: randomBytes(32).toString("base64url"),
  };
  writeFileSync(file, JSON.stringify(secrets, null, 2), { mode: 0o600 });
  return secrets;
}

const CONSOLE_DIR = join(ROOT, "apps/console");

function newestMtime(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const entry of readdirSync(path)) {
    if (entry === "node_modules" || entry === ".next") continue;
    newest = Math.max(newest, newestMtime(join(path, entry)));
  }
  return newest;
}

/** Whether `apps/console/.next` is missing or older than the sources of the console or a workspace package. */
export function consoleBuildStale(): boolean {
  const buildId = join(CONSOLE_DIR, ".next", "BUILD_ID");
  if (!existsSync(buildId)) return true;
  const built = statSync(buildId).mtimeMs;
  // The console bundles the workspace packages it imports; any of their sources can change it.
  const packages = join(ROOT, "packages");
  const sources = [CONSOLE_DIR, ...readdirSync(packages).map((p) => join(packages, p, "src"))];
  return sources.some((s) => existsSync(s) && newestMtime(s) > built);
}

/** `next build --webpack` for the console (about a minute on two cores). */
export async function buildConsole(log: LogSink): Promise<void> {
  const build = startProcess("build", "pnpm", ["exec", "next", "build", "--webpack"], {
    cwd: CONSOLE_DIR,
    env: { ...process.env, NEXT_TELEMETRY_DISABLED: "1" },
    log,
  });
  const code = await build.exited;
  if (code !== 0) throw new Error(`the console build failed (${code})`);
}

export interface PlatformEnv {
  databaseUrl: string;
  redisUrl: string;
  redisPrefix: string;
  dataDir: string;
  consoleUrl: string;
  gatewayUrl: string;
  nextAuthSecret: string;
  handleSecret: string;
  /** Extra variables for every service (e.g. TESSERA_ADMIN_EMAILS). */
  extra?: NodeJS.ProcessEnv;
}

function serviceEnv(p: PlatformEnv): NodeJS.ProcessEnv {
  return {
    ...process.env,
    ...p.extra,
    NODE_ENV: "production",
    DATABASE_URL: p.databaseUrl,
    REDIS_URL: p.redisUrl,
    REDIS_PREFIX: p.redisPrefix,
    TESSERA_DATA_DIR: p.dataDir,
    TESSERA_GATEWAY_URL: p.gatewayUrl,
    TESSERA_HANDLE_SECRET: p.handleSecret,
    TESSERA_API_URL: p.consoleUrl,
    NEXTAUTH_URL: p.consoleUrl,
    NEXTAUTH_SECRET: p.nextAuthSecret,
    NEXT_TELEMETRY_DISABLED: "1",
  };
}

/** `next start` on the console URL's port; resolves once it answers. */
export async function startConsole(p: PlatformEnv, log: LogSink): Promise<Managed> {
  const port = new URL(p.consoleUrl).port;
  const proc = startProcess("console", "pnpm", ["exec", "next", "start", "-p", port, "-H", "127.0.0.1"], {
    cwd: CONSOLE_DIR,
    env: serviceEnv(p),
    log,
  });
  await waitForHttp(`${p.consoleUrl}/sign-in`, 90_000, proc.exited);
  return proc;
}

export const GATEWAY_MAIN = join(ROOT, "apps/gateway/src/main.ts");
export const PROVISIONER_MAIN = join(ROOT, "apps/provisioner/src/main.ts");

/** The gateway (`apps/gateway/src/main.ts`) under tsx, when that entry point exists. */
export async function startGateway(p: PlatformEnv, log: LogSink): Promise<Managed | null> {
  if (!existsSync(GATEWAY_MAIN)) return null;
  const url = new URL(p.gatewayUrl);
  const proc = startProcess("gateway", "pnpm", ["exec", "tsx", GATEWAY_MAIN], {
    env: { ...serviceEnv(p), GATEWAY_PORT: url.port, GATEWAY_HOST: url.hostname },
    log,
  });
  await waitForHttp(`${p.gatewayUrl}/healthz`, 60_000, proc.exited);
  return proc;
}

/** The provisioner (`apps/provisioner/src/main.ts`) under tsx, when that entry point exists. */
export function startProvisioner(p: PlatformEnv, log: LogSink): Managed | null {
  if (!existsSync(PROVISIONER_MAIN)) return null;
  mkdirSync(p.dataDir, { recursive: true });
  return startProcess("provisioner", "pnpm", ["exec", "tsx", PROVISIONER_MAIN], { env: serviceEnv(p), log });
}
