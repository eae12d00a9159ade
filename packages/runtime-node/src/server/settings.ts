import { RUNTIME_ENV } from "@tessera/core";

export interface Settings {
  host: string;
  port: number;
  codeDir: string;
  entry: string;
  userConfig: Record<string, unknown>;
  maxBodyBytes: number;
  exposeTracebacks: boolean;
  drainTimeoutS: number;
  /** This replica's revision id; empty (a runtime started outside the platform) accepts every request. */
  revision: string;
}

function intEnv(
  env: NodeJS.ProcessEnv,
  name: string,
  fallback: number | undefined,
  lo: number,
  hi: number,
): number {
  const raw = env[name];
  if (raw === undefined || raw === "") {
    if (fallback === undefined) throw new Error(`${name} is required`);
    return fallback;
  }
  const value = Number(raw);
  if (!Number.isInteger(value)) throw new Error(`${name} must be an integer, got ${JSON.stringify(raw)}`);
  if (value < lo || value > hi) throw new Error(`${name} must lie between ${lo} and ${hi}, got ${value}`);
  return value;
}

/** Reads and validates the RUNTIME_ENV contract; throws a message naming the bad variable. */
export function loadSettings(env: NodeJS.ProcessEnv): Settings {
  const entry = env[RUNTIME_ENV.ENTRY] ?? "";
  if (!/^.+:[A-Za-z_$][A-Za-z0-9_$]*$/.test(entry))
    throw new Error(`${RUNTIME_ENV.ENTRY} must be 'file:Class', got ${JSON.stringify(entry)}`);
  const codeDir = env[RUNTIME_ENV.CODE_DIR] ?? "";
  if (!codeDir) throw new Error(`${RUNTIME_ENV.CODE_DIR} is required`);
  let userConfig: unknown;
  try {
    userConfig = JSON.parse(env[RUNTIME_ENV.USER_CONFIG] || "{}");
  } catch (err) {
    throw new Error(`${RUNTIME_ENV.USER_CONFIG} is not valid JSON: ${(err as Error).message}`);
  }
  if (userConfig === null || typeof userConfig !== "object" || Array.isArray(userConfig))
    throw new Error(`${RUNTIME_ENV.USER_CONFIG} must be a JSON object`);
  const drainTimeoutS = Number(env[RUNTIME_ENV.DRAIN_TIMEOUT_S] || 30);
  if (!Number.isFinite(drainTimeoutS) || drainTimeoutS < 0)
    throw new Error(`${RUNTIME_ENV.DRAIN_TIMEOUT_S} must be a non-negative number`);
  return {
    host: env[RUNTIME_ENV.HOST] || "127.0.0.1",
    port: intEnv(env, RUNTIME_ENV.PORT, undefined, 0, 65535),
    codeDir,
    entry,
    userConfig: userConfig as Record<string, unknown>,
    maxBodyBytes: intEnv(env, RUNTIME_ENV.MAX_BODY_BYTES, 10 * 1024 * 1024, 0, 2 ** 40),
    exposeTracebacks: env[RUNTIME_ENV.EXPOSE_TRACEBACKS] === "1",
    drainTimeoutS,
    revision: env[RUNTIME_ENV.REVISION] ?? "",
  };
}
