import { spawn, spawnSync } from "node:child_process";
import { constants } from "node:fs";
import { access, lchown, readdir, stat } from "node:fs/promises";
import { constants as osConstants } from "node:os";
import { delimiter, dirname, join, resolve as resolvePath, sep } from "node:path";
import {
  type condaSpec,
  type DeploymentConfig,
  type DeploymentConfigInput,
  deploymentConfig,
  type EnvironmentSpec,
  fieldErrors,
  TesseraError,
} from "@tessera/core";
import { z } from "zod";
import { PYTHON_RUNTIME_DIR } from "./paths.js";

/**
 * Ray Serve applications on Tessera: `inspectRayServeApp` imports the tenant's module with the
 * compatibility package (python/ray) and lists its deployments; `mapRayServeOptions` turns one
 * deployment's Ray options into a Tessera deployment config; `planRayServeApplication` does it for
 * the whole graph, naming each Tessera deployment and wiring the handles between them.
 */

const rayDeploymentInfo = z.object({
  name: z.string(),
  className: z.string(),
  kind: z.enum(["class", "function"]),
  http: z.enum(["asgi", "call", "none"]),
  routes: z.array(z.object({ path: z.string(), methods: z.array(z.string()) })),
  handles: z.array(z.string()),
  options: z.record(z.string(), z.unknown()),
  hasReconfigure: z.boolean(),
  hasCheckHealth: z.boolean(),
  batched: z.array(z.object({ method: z.string(), maxBatchSize: z.number(), batchWaitTimeoutS: z.number() })),
  problems: z.array(z.string()),
});
export type RayDeploymentInfo = z.infer<typeof rayDeploymentInfo>;

const unsupportedCall = z.object({ call: z.string(), file: z.string(), line: z.number() });
export type RayUnsupportedCall = z.infer<typeof unsupportedCall>;

const inspectOutput = z.union([
  z.object({
    ok: z.literal(true),
    ingress: z.string(),
    deployments: z.array(rayDeploymentInfo).min(1),
    unsupportedCalls: z.array(unsupportedCall),
    stubbedModules: z.array(z.string()).default([]),
  }),
  z.object({
    ok: z.literal(false),
    error: z.object({ code: z.string(), message: z.string(), traceback: z.string().optional() }),
    unsupportedCalls: z.array(unsupportedCall),
  }),
]);

export interface RayServeApp {
  /** Ray name of the ingress deployment (the one bound last, answering HTTP). */
  ingress: string;
  /** Every deployment of the graph, called ones before their callers. */
  deployments: RayDeploymentInfo[];
  /** Uses of Ray APIs the compatibility layer lacks, found in the source. */
  unsupportedCalls: RayUnsupportedCall[];
  /** Modules the inspecting python lacked, imported as stand-ins (the deployment's environment brings them). */
  stubbedModules: string[];
}

/** Why an application cannot be deployed; `details.reason` is a stable code. */
export class RayServeInspectError extends TesseraError {
  constructor(
    reason: string,
    message: string,
    extra: { traceback?: string; unsupportedCalls?: RayUnsupportedCall[]; stderr?: string } = {},
  ) {
    super("VALIDATION_FAILED", message, { reason, ...extra });
    this.name = "RayServeInspectError";
  }
}

export interface InspectOptions {
  /** An interpreter whose site-packages hold what the module imports (fastapi, pandas...). */
  python: string;
  /** The unpacked code bundle; the entry module is imported from it. */
  codeDir: string;
  /** `module:app`. */
  entry: string;
  timeoutMs?: number;
  /** Address-space limit of the importing process (default 4096; 0: none). */
  memoryLimitMb?: number;
  /**
   * Runs the import as this user (needs root): `codeDir` is handed to it (chowned), and the python
   * runtime package must be readable by it.
   */
  uid?: number;
  /** Group of the importing process when `uid` is set (default: `uid`). */
  gid?: number;
}

const MAX_OUTPUT_BYTES = 8 * 1024 * 1024;
// Bounds the wait for the output pipes once the inspector exited and its process group was killed:
// a process that left the group (setsid) may still hold them open where no PID namespace killed it.
const PIPE_DRAIN_MS = 2000;

// (uid_t)-1 means "unchanged" to setuid(2) and chown(2): never a user to run as.
const MAX_ID = 0xffff_ffff;

let networkIsolation: boolean | undefined;

/**
 * Whether inspections run in a network namespace of their own (`unshare --net`: only a loopback
 * that is down). Needs `unshare` and CAP_SYS_ADMIN (root); probed once per process.
 */
export function networkIsolationAvailable(): boolean {
  networkIsolation ??= unshareWorks(["--net"]);
  return networkIsolation;
}

/** Whether `unshare` with these options runs a command here. */
function unshareWorks(options: string[]): boolean {
  return spawnSync("unshare", [...options, "true"], { stdio: "ignore", timeout: 10_000 }).status === 0;
}

let pidNamespace: string[] | null | undefined;

/**
 * The `unshare` options that put inspections in a PID namespace of their own, or null where the
 * host cannot (needs CAP_SYS_ADMIN: root). The namespace's first process is its init: once it
 * dies the kernel SIGKILLs everything else in it, whatever session or group tenant code moved to.
 * `--mount-proc` (a /proc showing only the namespace) is dropped where mounting is refused.
 */
function pidNamespaceOptions(): string[] | null {
  if (pidNamespace !== undefined) return pidNamespace;
  const base = ["--pid", "--fork", "--kill-child"];
  const withProc = [...base, "--mount-proc"];
  pidNamespace = unshareWorks(withProc) ? withProc : unshareWorks(base) ? base : null;
  return pidNamespace;
}

/**
 * Whether inspections run in a PID namespace of their own (`unshare --pid --fork`), so that
 * nothing tenant code starts survives the inspection, not even a process that called `setsid`.
 * Without it the process-group kill is all there is. Probed once per process.
 */
export function pidIsolationAvailable(): boolean {
  return pidNamespaceOptions() !== null;
}

// The namespace's init: a shell that waits for python, so python is an ordinary process (init
// ignores its own default-action signals) and a python killed by signal N comes out as exit
// 128+N (unshare 2.38 turns a child's SIGKILL into "exit 1" when it re-raises it). The shell's
// own PWD is dropped: tenant code gets the environment inspectRayServeApp sets, nothing more.
const NAMESPACE_INIT = ["/bin/sh", "-c", 'unset PWD; "$@"; exit $?', "tessera-inspect"];

/** The signal behind a shell's 128+N exit status, if N is one. */
function signalOfShellStatus(code: number | null): NodeJS.Signals | undefined {
  if (code === null || code <= 128) return undefined;
  return (Object.keys(osConstants.signals) as NodeJS.Signals[]).find(
    (name) => osConstants.signals[name] === code - 128,
  );
}

/** The interpreter's path, resolved here so a missing one is told apart from a failing import. */
async function executable(command: string, path: string): Promise<string | undefined> {
  const candidates = command.includes(sep)
    ? [command]
    : path.split(delimiter).map((d) => join(d || ".", command));
  for (const candidate of candidates) {
    try {
      await access(candidate, constants.X_OK);
      if ((await stat(candidate)).isFile()) return candidate;
    } catch {
      // not there or not executable: the next PATH entry may be
    }
  }
  return undefined;
}

/** Whether `uid`/`gid` may read `dir` and reach it from `/` (mode bits; ACLs are not consulted). */
async function readableBy(dir: string, uid: number, gid: number): Promise<boolean> {
  const allows = (mode: number, owner: number, group: number, bits: number) => {
    const shift = owner === uid ? 6 : group === gid ? 3 : 0;
    return ((mode >> shift) & bits) === bits;
  };
  let current = resolvePath(dir);
  for (let needed = 0o5; ; needed = 0o1) {
    const st = await stat(current);
    if (!allows(st.mode, st.uid, st.gid, needed)) return false;
    const parent = dirname(current);
    if (parent === current) return true;
    current = parent;
  }
}

/** Hands the code directory to the inspecting user (links themselves, never their targets). */
async function handOver(codeDir: string, uid: number, gid: number): Promise<void> {
  await lchown(codeDir, uid, gid);
  for (const entry of await readdir(codeDir, { recursive: true }))
    await lchown(join(codeDir, entry), uid, gid);
}

/** Checks and prepares the inspecting user; undefined: the import runs as this process's user. */
async function inspectingUser(opts: InspectOptions): Promise<{ uid: number; gid: number } | undefined> {
  if (opts.uid === undefined) return undefined;
  const user = { uid: opts.uid, gid: opts.gid ?? opts.uid };
  if (![user.uid, user.gid].every((id) => Number.isInteger(id) && id >= 0 && id < MAX_ID))
    throw new RayServeInspectError(
      "INSPECTOR_UNAVAILABLE",
      `uid ${user.uid} / gid ${user.gid} is not a valid id`,
    );
  const self = process.getuid?.();
  if (self === user.uid) return undefined;
  if (self !== 0)
    throw new RayServeInspectError(
      "INSPECTOR_UNAVAILABLE",
      `running the import as uid ${user.uid} needs root`,
    );
  if (!(await readableBy(PYTHON_RUNTIME_DIR, user.uid, user.gid)))
    throw new RayServeInspectError(
      "INSPECTOR_UNAVAILABLE",
      `the python runtime ${PYTHON_RUNTIME_DIR} is not readable by uid ${user.uid}`,
    );
  try {
    await handOver(opts.codeDir, user.uid, user.gid);
  } catch (err) {
    throw new RayServeInspectError(
      "INSPECTOR_UNAVAILABLE",
      `cannot hand ${opts.codeDir} to uid ${user.uid}: ${(err as Error).message}`,
    );
  }
  return user;
}

/** SIGKILLs the inspector's whole process group: whatever tenant code started dies with it. */
function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // ESRCH: the group is gone already. EPERM: all that is left runs as another user (a setuid
    // program) this process may not signal. Called from event handlers: throwing would crash it.
  }
}

/**
 * Imports the application in a child python and returns its deployments. The import is confined:
 * environment PATH, HOME and PYTHONPATH only (no platform secret reaches tenant code), a process
 * group of its own that is killed once it exits or times out, a PID namespace that dies with it
 * where the host allows it (`pidIsolationAvailable`: then nothing it starts outlives it, even
 * after `setsid`), a network namespace without network where the host allows it
 * (`networkIsolationAvailable`), an optional unprivileged `uid`, and python's own CPU and
 * address-space rlimits.
 */
export async function inspectRayServeApp(opts: InspectOptions): Promise<RayServeApp> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const path = process.env.PATH ?? "/usr/bin:/bin";
  const python = await executable(opts.python, path);
  if (!python)
    throw new RayServeInspectError("INSPECTOR_UNAVAILABLE", `cannot run ${opts.python}: not found`);
  const user = await inspectingUser(opts);
  const inspect = [python, "-m", "tessera.ray_serve.inspect", opts.entry];
  const pidOptions = pidNamespaceOptions();
  const namespaces = [...(networkIsolationAvailable() ? ["--net"] : []), ...(pidOptions ?? [])];
  // unshare switches user itself (in the forked child with --fork): it must still be root when it
  // creates the namespaces. The group kill still reaches the namespace's init, which tenant code
  // cannot move out of the group: --kill-child alone would not do, setuid clears the death signal.
  const [command, args, spawnUser] = namespaces.length
    ? [
        "unshare",
        [
          ...namespaces,
          ...(user ? ["--setgid", String(user.gid), "--setuid", String(user.uid)] : []),
          "--",
          ...(pidOptions ? NAMESPACE_INIT : []),
          ...inspect,
        ],
        {},
      ]
    : [python, inspect.slice(1), user ?? {}];
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      ...spawnUser,
      cwd: opts.codeDir,
      detached: true,
      env: {
        PATH: path,
        HOME: opts.codeDir,
        PYTHONPATH: [PYTHON_RUNTIME_DIR, opts.codeDir].join(delimiter),
        PYTHONDONTWRITEBYTECODE: "1",
        PYTHONUNBUFFERED: "1",
        TESSERA_INSPECT_MEMORY_MB: String(opts.memoryLimitMb ?? 4096),
        // Cast: hosts such as Next.js declare NODE_ENV required on ProcessEnv; this child needs none.
      } as unknown as NodeJS.ProcessEnv,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    let size = 0;
    let stopped: "timeout" | "output" | undefined;
    const stop = (why: "timeout" | "output") => {
      stopped ??= why;
      killGroup(child.pid);
    };
    const take = (chunk: Buffer, into: "out" | "err") => {
      size += chunk.length;
      if (size > MAX_OUTPUT_BYTES) stop("output");
      else if (into === "out") stdout += chunk.toString("utf8");
      else stderr = (stderr + chunk.toString("utf8")).slice(-8192);
    };
    child.stdout.on("data", (c: Buffer) => take(c, "out"));
    child.stderr.on("data", (c: Buffer) => take(c, "err"));
    const timer = setTimeout(() => stop("timeout"), timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      killGroup(child.pid);
      reject(new RayServeInspectError("INSPECTOR_UNAVAILABLE", `cannot run ${opts.python}: ${err.message}`));
    });
    child.on("exit", () => {
      clearTimeout(timer);
      killGroup(child.pid);
      setTimeout(() => {
        child.stdout.destroy();
        child.stderr.destroy();
      }, PIPE_DRAIN_MS).unref();
    });
    child.on("close", (code, exitSignal) => {
      clearTimeout(timer);
      const signal = exitSignal ?? (pidOptions ? signalOfShellStatus(code) : undefined);
      if (stopped || signal)
        return reject(
          new RayServeInspectError(
            "INSPECT_FAILED",
            stopped === "output"
              ? "importing the application printed too much output"
              : stopped === "timeout"
                ? `importing the application did not finish within ${timeoutMs / 1000} s`
                : `the inspector was killed by ${signal}`,
            { stderr },
          ),
        );
      const line = stdout.trim().split("\n").at(-1) ?? "";
      let parsed: z.infer<typeof inspectOutput>;
      try {
        parsed = inspectOutput.parse(JSON.parse(line));
      } catch {
        return reject(
          new RayServeInspectError(
            "INSPECT_FAILED",
            `the inspector failed (exit ${code}): ${stderr.trim()}`,
            {
              stderr,
            },
          ),
        );
      }
      if (!parsed.ok)
        return reject(
          new RayServeInspectError(parsed.error.code, parsed.error.message, {
            traceback: parsed.error.traceback,
            unsupportedCalls: parsed.unsupportedCalls,
          }),
        );
      resolve({
        ingress: parsed.ingress,
        deployments: parsed.deployments,
        unsupportedCalls: parsed.unsupportedCalls,
        stubbedModules: parsed.stubbedModules,
      });
    });
  });
}

// ---- options mapping -------------------------------------------------------------------------

export interface MappedRayDeployment {
  /** The Tessera deployment config (not yet validated: see `planRayServeApplication`). */
  config: DeploymentConfigInput;
  /** Ray's `version`: the label of the revision this deploy creates. */
  label?: string;
  /** Ray's `prev_version`: the deploy is refused unless the live revision carries this label. */
  prevLabel?: string;
  /** Options that have no effect on Tessera, with why. */
  warnings: string[];
  /** Options Tessera cannot honour, keyed by option path: deploying is refused. */
  errors: Record<string, string>;
}

const AUTOSCALING_KEYS: Record<string, keyof NonNullable<DeploymentConfigInput["autoscaling"]> | null> = {
  min_replicas: "minReplicas",
  max_replicas: "maxReplicas",
  initial_replicas: "initialReplicas",
  target_ongoing_requests: "targetOngoingRequests",
  target_num_ongoing_requests_per_replica: "targetOngoingRequests",
  upscale_delay_s: "upscaleDelayS",
  downscale_delay_s: "downscaleDelayS",
  // Tuning knobs of Ray's controller; Tessera's policy has its own fixed smoothing.
  metrics_interval_s: null,
  look_back_period_s: null,
  smoothing_factor: null,
  upscale_smoothing_factor: null,
  downscale_smoothing_factor: null,
  upscaling_factor: null,
  downscaling_factor: null,
};

/** Ray Serve's `num_replicas="auto"` defaults. */
const AUTO_REPLICAS = { minReplicas: 1, maxReplicas: 100, targetOngoingRequests: 2 };

const MIN_CPUS = 0.1;
const BYTES_PER_MB = 1024 * 1024;

const IGNORED_OPTIONS: Record<string, string> = {
  graceful_shutdown_wait_loop_s: "replicas drain until their in-flight requests finish",
  graceful_shutdown_timeout_s: "the platform's drain timeout applies",
  logging_config: "replica logs are JSON lines collected by the platform",
};

const REFUSED_OPTIONS: Record<string, string> = {
  placement_group_bundles: "placement groups do not exist on Tessera",
  placement_group_strategy: "placement groups do not exist on Tessera",
  max_replicas_per_node: "Tessera places replicas itself",
};

/** Maps one deployment's Ray Serve options onto a Tessera deployment config. */
export function mapRayServeOptions(options: Record<string, unknown>, entry: string): MappedRayDeployment {
  const warnings: string[] = [];
  const errors: Record<string, string> = {};
  const config: DeploymentConfigInput & Record<string, unknown> = { runtime: "python", entry };
  const out: MappedRayDeployment = { config, warnings, errors };

  for (const [key, value] of Object.entries(options)) {
    if (value === undefined || value === null) continue;
    switch (key) {
      case "name":
      case "init_args":
      case "init_kwargs":
        break;
      case "version":
        out.label = String(value);
        break;
      case "prev_version":
        out.prevLabel = String(value);
        break;
      case "num_replicas":
        if (value === "auto") config.autoscaling = { ...AUTO_REPLICAS };
        else if (Number.isInteger(value)) config.numReplicas = value as number;
        else errors.num_replicas = `must be an integer or "auto", got ${JSON.stringify(value)}`;
        break;
      case "autoscaling_config":
      case "_autoscaling_config":
        mapAutoscaling(key, value, config, warnings, errors);
        break;
      case "ray_actor_options":
        mapActorOptions(value, config, warnings, errors);
        break;
      case "max_ongoing_requests":
      case "max_concurrent_queries":
        if (config.maxOngoingRequests !== undefined && config.maxOngoingRequests !== value)
          errors[key] = "max_ongoing_requests and max_concurrent_queries disagree";
        else config.maxOngoingRequests = value as number;
        break;
      case "max_queued_requests":
        // -1 is Ray's "unbounded": Tessera always bounds the queue, so its default applies.
        if (value === -1) warnings.push("max_queued_requests=-1: Tessera's bounded default queue applies");
        else config.maxQueuedRequests = value as number;
        break;
      case "user_config":
        if (typeof value === "object" && !Array.isArray(value))
          config.userConfig = value as Record<string, unknown>;
        else errors.user_config = "must be a JSON object on Tessera";
        break;
      case "health_check_period_s":
        config.healthCheck = { ...config.healthCheck, periodS: value as number };
        break;
      case "health_check_timeout_s":
        config.healthCheck = { ...config.healthCheck, timeoutS: value as number };
        break;
      case "route_prefix":
        if (value !== "/")
          warnings.push(
            `route_prefix ${JSON.stringify(value)} ignored: the application is served at /v1/{org}/{app}/`,
          );
        break;
      default:
        if (key in IGNORED_OPTIONS) warnings.push(`${key} ignored: ${IGNORED_OPTIONS[key]}`);
        else if (key in REFUSED_OPTIONS) errors[key] = `not supported: ${REFUSED_OPTIONS[key]}`;
        else errors[key] = "unknown Ray Serve option";
    }
  }
  if (config.numReplicas !== undefined && config.autoscaling !== undefined && options.num_replicas !== "auto")
    errors.num_replicas = "set either num_replicas or autoscaling_config, not both";
  return out;
}

/** The option as a plain object, or an error recorded at `at`. */
function objectAt(
  value: unknown,
  at: string,
  errors: Record<string, string>,
): Record<string, unknown> | undefined {
  if (typeof value === "object" && value !== null && !Array.isArray(value))
    return value as Record<string, unknown>;
  errors[at] = "must be an object";
  return undefined;
}

function mapAutoscaling(
  key: string,
  value: unknown,
  config: DeploymentConfigInput,
  warnings: string[],
  errors: Record<string, string>,
): void {
  const given = objectAt(value, key, errors);
  if (!given) return;
  const auto: Record<string, unknown> = { ...(config.autoscaling ?? { minReplicas: 1, maxReplicas: 1 }) };
  for (const [k, v] of Object.entries(given)) {
    const target = AUTOSCALING_KEYS[k];
    if (target === undefined) errors[`${key}.${k}`] = "unknown autoscaling option";
    else if (target === null) warnings.push(`${key}.${k} ignored: Tessera's autoscaler has fixed smoothing`);
    else if (v !== null && v !== undefined) auto[target] = v;
  }
  config.autoscaling = auto as DeploymentConfigInput["autoscaling"];
}

function mapActorOptions(
  value: unknown,
  config: DeploymentConfigInput,
  warnings: string[],
  errors: Record<string, string>,
): void {
  const given = objectAt(value, "ray_actor_options", errors);
  if (!given) return;
  const resources: Record<string, number> = {};
  for (const [k, v] of Object.entries(given)) {
    if (v === null || v === undefined) continue;
    const at = `ray_actor_options.${k}`;
    if (k === "num_cpus") {
      if (typeof v !== "number" || v < 0) errors[at] = "must be a number >= 0";
      else if (v < MIN_CPUS) {
        warnings.push(`${at}=${v}: Tessera reserves at least ${MIN_CPUS} CPU per replica`);
        resources.cpus = MIN_CPUS;
      } else resources.cpus = v;
    } else if (k === "num_gpus") {
      if (typeof v !== "number" || v < 0) errors[at] = "must be a number >= 0";
      else resources.gpus = v;
    } else if (k === "memory") {
      if (typeof v !== "number" || v <= 0) errors[at] = "must be a positive number of bytes";
      else resources.memoryMb = Math.max(64, Math.ceil(v / BYTES_PER_MB));
    } else if (k === "runtime_env") {
      const env = mapRuntimeEnv(v, warnings, errors);
      if (env) config.environment = env;
    } else if (k === "resources" || k === "accelerator_type")
      errors[at] = "custom resources and accelerator types are not supported: use num_gpus";
    else if (k === "max_restarts" || k === "max_task_retries" || k === "scheduling_strategy")
      warnings.push(`${at} ignored: the platform restarts and places replicas`);
    else errors[at] = "unknown actor option";
  }
  if (Object.keys(resources).length) config.resources = resources as DeploymentConfigInput["resources"];
}

function mapRuntimeEnv(
  value: unknown,
  warnings: string[],
  errors: Record<string, string>,
): EnvironmentSpec | undefined {
  const at = "ray_actor_options.runtime_env";
  const env = objectAt(value, at, errors);
  if (!env) return undefined;
  let spec: EnvironmentSpec | undefined;
  for (const [k, v] of Object.entries(env)) {
    if (v === null || v === undefined) continue;
    if (k === "pip") {
      const packages = Array.isArray(v) ? v : (v as { packages?: unknown }).packages;
      if (!Array.isArray(packages) || !packages.every((p) => typeof p === "string"))
        errors[`${at}.pip`] = "must be a list of requirements (or {packages: [...]})";
      else spec = { kind: "pip", requirements: packages as string[] };
    } else if (k === "conda") {
      if (typeof v !== "object" || Array.isArray(v))
        errors[`${at}.conda`] =
          "must be an environment dict {channels, dependencies}: named or file-based conda envs are not supported";
      else {
        const c = v as { channels?: unknown; dependencies?: unknown };
        spec = {
          kind: "conda",
          channels: (c.channels ?? []) as string[],
          // Shapes are checked when the planned config is validated.
          dependencies: (c.dependencies ?? []) as z.infer<typeof condaSpec>["dependencies"],
        };
      }
    } else if (k === "working_dir" || k === "py_modules" || k === "excludes")
      warnings.push(`${at}.${k} ignored: the deployed code bundle is the working directory`);
    else if (k === "env_vars")
      errors[`${at}.env_vars`] =
        "not supported: replicas get no environment variables of their own; use user_config";
    else errors[`${at}.${k}`] = "unsupported runtime_env field";
  }
  if (env.pip && env.conda) errors[at] = "set pip or conda, not both";
  return spec;
}

// ---- whole application -----------------------------------------------------------------------

/** The user-config key carrying a Ray replica's identity in the graph (see python/tessera/ray_serve/replica.py). */
export const RAY_SERVE_CONFIG_KEY = "__ray_serve__";

export interface PlannedRayDeployment {
  rayName: string;
  /** The Tessera deployment name (a slug of the Ray name). */
  name: string;
  config: DeploymentConfig;
  label?: string;
  prevLabel?: string;
  warnings: string[];
}

export interface RayServePlan {
  /** Tessera name of the ingress deployment. */
  ingress: string;
  deployments: PlannedRayDeployment[];
  warnings: string[];
  /** `deployments.{RayName}.{option}` / `code.{file}:{line}` -> message; non-empty = refuse. */
  errors: Record<string, string>;
}

/** `CustomService` -> `custom-service`: a Ray deployment name as a Tessera deployment slug. */
export function rayDeploymentSlug(name: string): string {
  const slugged = name
    .replace(/([a-z0-9])([A-Z])/g, "$1-$2")
    .replace(/([A-Z]+)([A-Z][a-z])/g, "$1-$2")
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+/, "")
    .slice(0, 63)
    .replace(/-+$/, "");
  return slugged || "deployment";
}

/**
 * One Tessera deployment per Ray deployment: configs mapped and validated, each carrying its
 * place in the graph (`__ray_serve__`) so its replicas construct that deployment and call the
 * others through the gateway. `environment` (when given) replaces every deployment's runtime_env.
 */
export function planRayServeApplication(
  app: RayServeApp,
  opts: { entry: string; environment?: EnvironmentSpec },
): RayServePlan {
  const errors: Record<string, string> = {};
  const warnings: string[] = [];
  if (app.stubbedModules.length)
    warnings.push(
      `inspected without ${app.stubbedModules.join(", ")} (not installed where deploys are inspected): ` +
        "the deployments' environments must provide them",
    );
  for (const c of app.unsupportedCalls)
    errors[`code.${c.file}:${c.line}`] = `${c.call} is not supported on Tessera`;
  const names = new Map<string, string>();
  const taken = new Map<string, string>();
  for (const d of app.deployments) {
    const slug = rayDeploymentSlug(d.name);
    const other = taken.get(slug);
    if (other) errors[`deployments.${d.name}`] = `its Tessera name ${slug} is also the name of ${other}`;
    taken.set(slug, d.name);
    names.set(d.name, slug);
  }
  const handles = Object.fromEntries(names);
  const deployments: PlannedRayDeployment[] = [];
  for (const d of app.deployments) {
    const mapped = mapRayServeOptions(d.options, opts.entry);
    const prefix = `deployments.${d.name}`;
    for (const [k, v] of Object.entries(mapped.errors)) errors[`${prefix}.${k}`] = v;
    d.problems.forEach((p, i) => {
      errors[`${prefix}.problem${i ? `.${i}` : ""}`] = p;
    });
    for (const w of mapped.warnings) warnings.push(`${d.name}: ${w}`);
    const input = {
      ...mapped.config,
      ...(opts.environment ? { environment: opts.environment } : {}),
      userConfig: {
        ...(mapped.config.userConfig ?? {}),
        [RAY_SERVE_CONFIG_KEY]: { deployment: d.name, handles },
      },
    };
    const parsed = deploymentConfig.safeParse(input);
    if (!parsed.success) {
      for (const [k, v] of Object.entries(fieldErrors(parsed.error))) errors[`${prefix}.config.${k}`] = v;
      continue;
    }
    deployments.push({
      rayName: d.name,
      name: names.get(d.name)!,
      config: parsed.data,
      label: mapped.label,
      prevLabel: mapped.prevLabel,
      warnings: mapped.warnings,
    });
  }
  return { ingress: names.get(app.ingress)!, deployments, warnings, errors };
}
