import { resolve } from "node:path";
import { TesseraError } from "@tessera/core";

/** The local driver's settings: `clusters.driver_config` keys, validated, with defaults applied. */
export interface LocalDriverSettings {
  /** Root of everything the driver writes: clusters, replicas, environments, port slots. */
  dataDir: string;
  /** Ports replicas may listen on, split into one fixed slice of `portsPerCluster` per cluster. */
  portRangeFrom: number;
  portRangeTo: number;
  portsPerCluster: number;
  /** Base python interpreter for replicas without a built environment. */
  python: string;
  /** SIGTERM lets the runtime drain for this long; SIGKILL follows. */
  drainTimeoutS: number;
  /** First restart delay after a crash; doubles per quick crash in a row, up to `restartBackoffMaxMs`. */
  restartBackoffMs: number;
  restartBackoffMaxMs: number;
  /** A process that exits sooner than this after starting (or before it was ever ready) crashed "quickly". */
  quickCrashMs: number;
  /** After this many quick crashes in a row the replica is `failed` and no longer restarted. */
  maxQuickCrashes: number;
  /**
   * When set (root provisioner only), replicas of the cluster in port slot n run as uid = gid =
   * runAsUid + n, confined to their own directory (see isolation.ts). Null: the provisioner's user.
   */
  runAsUid: number | null;
  /** GPU ids (UUIDs or indices) replicas may be given; null: the host's, from `nvidia-smi`. */
  gpuDevices: string[] | null;
}

export const DEFAULT_LOCAL_SETTINGS: Omit<LocalDriverSettings, "dataDir"> = {
  portRangeFrom: 20_000,
  portRangeTo: 29_999,
  portsPerCluster: 100,
  python: "python3",
  drainTimeoutS: 30,
  restartBackoffMs: 500,
  restartBackoffMaxMs: 30_000,
  quickCrashMs: 30_000,
  maxQuickCrashes: 5,
  runAsUid: null,
  gpuDevices: null,
};

const NUMERIC_LIMITS: Record<string, [min: number, max: number, integer: boolean]> = {
  portRangeFrom: [1024, 65_535, true],
  portRangeTo: [1024, 65_535, true],
  portsPerCluster: [1, 65_535, true],
  drainTimeoutS: [0, 3600, false],
  restartBackoffMs: [1, 3_600_000, true],
  restartBackoffMaxMs: [1, 3_600_000, true],
  quickCrashMs: [0, 3_600_000, true],
  maxQuickCrashes: [1, 1000, true],
  runAsUid: [1000, 4_000_000_000, true],
};

function invalid(message: string): TesseraError {
  return new TesseraError("VALIDATION_FAILED", `local driver config: ${message}`);
}

/**
 * Validates a `driverConfig` object (operator input) into settings. `dataDir` defaults to
 * `$TESSERA_DATA_DIR` (else `.tessera`), the same root the environment builder uses.
 */
export function localDriverSettings(
  config: Record<string, unknown> = {},
  env: NodeJS.ProcessEnv = process.env,
): LocalDriverSettings {
  const out: Record<string, unknown> = { ...DEFAULT_LOCAL_SETTINGS };
  for (const [key, [min, max, integer]] of Object.entries(NUMERIC_LIMITS)) {
    const value = config[key];
    if (value === undefined) continue;
    if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max)
      throw invalid(`${key} must be a number between ${min} and ${max}`);
    if (integer && !Number.isInteger(value)) throw invalid(`${key} must be an integer`);
    out[key] = value;
  }
  for (const key of ["dataDir", "python"]) {
    const value = config[key];
    if (value === undefined) continue;
    if (typeof value !== "string" || value.trim() === "") throw invalid(`${key} must be a non-empty string`);
    out[key] = value.trim();
  }
  if (config.gpuDevices !== undefined) {
    const ids = config.gpuDevices;
    if (!Array.isArray(ids) || !ids.every((d) => typeof d === "string" && /^[A-Za-z0-9_:.-]{1,100}$/.test(d)))
      throw invalid("gpuDevices must be a list of GPU ids (UUIDs or indices)");
    out.gpuDevices = [...new Set(ids as string[])];
  }
  if (config.python === undefined && env.TESSERA_PYTHON?.trim()) out.python = env.TESSERA_PYTHON.trim();
  const settings = {
    ...out,
    dataDir: resolve((out.dataDir as string | undefined) ?? (env.TESSERA_DATA_DIR?.trim() || ".tessera")),
  } as LocalDriverSettings;
  if (settings.portRangeTo < settings.portRangeFrom) throw invalid("portRangeTo must be >= portRangeFrom");
  if (settings.portsPerCluster > settings.portRangeTo - settings.portRangeFrom + 1)
    throw invalid("portsPerCluster is larger than the whole port range");
  if (settings.restartBackoffMaxMs < settings.restartBackoffMs)
    throw invalid("restartBackoffMaxMs must be >= restartBackoffMs");
  return settings;
}
