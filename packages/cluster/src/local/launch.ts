import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { delimiter, dirname, isAbsolute, join, relative, resolve } from "node:path";
import { promisify } from "node:util";
import { type CodeBundle, runtimeEnv, TesseraError } from "@tessera/core";
import { buildNodeBundle, nodeReplicaCommand } from "@tessera/runtime-node";
import { pythonReplicaCommand } from "@tessera/runtime-python";
import type { ReplicaSpec } from "../driver.js";

/** Everything needed to (re)start a replica process; persisted in replica.json for adoption. */
export interface ReplicaLaunch {
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  /** Run as this uid (and gid of the same number): per-cluster users, see isolation.ts. */
  uid?: number;
}

/** What the host offers to enforce per-replica limits (absolute paths, or null when missing). */
export interface HostTools {
  prlimit: string | null;
  taskset: string | null;
  /** CPUs this process may use; replicas are pinned to a subset of them. */
  cpus: number[];
}

export function findExecutable(name: string, path = process.env.PATH ?? ""): string | null {
  for (const dir of path.split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

const execFileAsync = promisify(execFile);

/**
 * The real executable behind a python command (`python3` may be a pyenv shim or a PATH lookup
 * that the replica's PATH would not repeat).
 */
export async function resolvePython(python: string): Promise<string> {
  try {
    const { stdout } = await execFileAsync(python, ["-c", "import sys; print(sys.executable)"], {
      timeout: 15_000,
    });
    const executable = stdout.trim();
    if (executable) return executable;
  } catch (err) {
    throw new TesseraError(
      "ENV_UNSUPPORTED",
      `python interpreter '${python}' does not run: ${(err as Error).message}`,
    );
  }
  throw new TesseraError("ENV_UNSUPPORTED", `python interpreter '${python}' did not report its executable`);
}

/** Writes a code bundle under `codeDir` (replacing what was there), refusing paths that escape it. */
export async function writeCodeBundle(codeDir: string, bundle: CodeBundle): Promise<void> {
  await rm(codeDir, { recursive: true, force: true });
  await mkdir(codeDir, { recursive: true });
  const encoding = bundle.encoding === "base64" ? "base64" : "utf8";
  for (const [path, content] of Object.entries(bundle.files)) {
    const target = resolve(codeDir, path);
    const inside = relative(codeDir, target);
    if (!inside || inside.startsWith("..") || isAbsolute(inside))
      throw new TesseraError(
        "VALIDATION_FAILED",
        `code bundle path '${path}' lies outside the code directory`,
      );
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, Buffer.from(content, encoding));
  }
}

/** The CPUs a replica asking for `cpus` is pinned to: a window of the allowed CPUs, rotated per replica. */
export function cpuSetFor(cpus: number, allowed: number[], replicaId: string): number[] | null {
  const want = Math.ceil(cpus);
  if (allowed.length === 0 || want >= allowed.length) return null;
  let h = 0;
  for (const ch of replicaId) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return Array.from({ length: want }, (_, i) => allowed[(h + i) % allowed.length]!).sort((a, b) => a - b);
}

/** Prefixes `prlimit` (memory) and `taskset` (CPUs), each exec'ing the next, so the pid stays the runtime's. */
export function withHostLimits(
  launch: Omit<ReplicaLaunch, "cwd">,
  limits: { memoryMb: number; cpuSet: number[] | null },
  tools: HostTools,
): Omit<ReplicaLaunch, "cwd"> {
  let command = launch.command;
  let args = launch.args;
  if (tools.taskset && limits.cpuSet) {
    args = ["-c", limits.cpuSet.join(","), command, ...args];
    command = tools.taskset;
  }
  if (tools.prlimit) {
    // RLIMIT_DATA counts heap and private writable mappings (Linux >= 4.7) but not the address
    // space runtimes merely reserve, which --as would (V8 reserves far more than it uses).
    args = [`--data=${limits.memoryMb * 1024 * 1024}`, "--core=0", "--", command, ...args];
    command = tools.prlimit;
  }
  return { ...launch, command, args };
}

export interface PrepareOptions {
  spec: ReplicaSpec;
  replicaDir: string;
  port: number;
  drainTimeoutS: number;
  /** Absolute base python, for python replicas without a built environment. */
  basePython: () => Promise<string>;
  tools: HostTools;
  /** The GPUs the replica was given ([] hides every GPU from it). */
  gpuDevices: string[];
}

/** The least RLIMIT_DATA the node runtime starts under (measured: aborts at 80 MB, runs at 96 MB). */
export const NODE_MIN_DATA_MB = 128;

const PLATFORM_ENV_KEYS = new Set([
  "PATH",
  "HOME",
  "LANG",
  "PYTHONPATH",
  "NODE_OPTIONS",
  "CUDA_VISIBLE_DEVICES",
]);
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Writes the code, bundles it (node), and returns the exact command and environment of the
 * replica. The environment is built from nothing: PATH, HOME (the replica's own directory),
 * LANG, CUDA_VISIBLE_DEVICES, the runtime contract and `extraEnv` — never this process's environment, which holds the
 * platform's database URL and secrets. Throws NodeBundleError / TesseraError for the tenant.
 */
export async function prepareReplicaLaunch(o: PrepareOptions): Promise<ReplicaLaunch> {
  const { spec, replicaDir } = o;
  const codeDir = join(replicaDir, "code");
  const home = join(replicaDir, "home");
  await writeCodeBundle(codeDir, spec.code);
  await mkdir(home, { recursive: true });

  const extra: Record<string, string> = {};
  for (const [key, value] of Object.entries(spec.extraEnv ?? {})) {
    if (!ENV_NAME.test(key) || PLATFORM_ENV_KEYS.has(key))
      throw new TesseraError("VALIDATION_FAILED", `extraEnv may not set '${key}'`);
    extra[key] = String(value);
  }
  const contract = runtimeEnv({
    port: o.port,
    codeDir,
    entry: spec.config.entry,
    userConfig: spec.config.userConfig,
    deployment: spec.deploymentName,
    revision: spec.revisionId,
    replica: spec.replicaId,
    application: spec.applicationName,
    maxBodyBytes: spec.config.maxBodyBytes,
    exposeTracebacks: spec.config.exposeTracebacks,
    drainTimeoutS: o.drainTimeoutS,
  });
  // The contract wins over extraEnv: the driver, not the caller, decides port, code and identity.
  const env = { ...extra, ...contract, CUDA_VISIBLE_DEVICES: o.gpuDevices.join(",") };
  const memoryMb = spec.config.resources.memoryMb;
  const envKind = spec.config.environment.kind;

  let launch: Omit<ReplicaLaunch, "cwd">;
  if (spec.runtime === "python") {
    let python: string;
    if (envKind === "pip" || envKind === "conda") {
      const bin = join(spec.environment.location, "bin");
      const found = ["python", "python3"].map((n) => join(bin, n)).find((p) => existsSync(p));
      if (!spec.environment.location || !found)
        throw new TesseraError(
          "ENV_BUILD_FAILED",
          `environment ${spec.environment.hash} has no python in '${bin}': build it with ensureEnvironment first`,
        );
      python = found;
    } else python = await o.basePython();
    launch = pythonReplicaCommand({ python, env, home });
  } else {
    const nodeModulesDir = envKind === "npm" ? join(spec.environment.location, "node_modules") : undefined;
    if (nodeModulesDir && !existsSync(nodeModulesDir))
      throw new TesseraError(
        "ENV_BUILD_FAILED",
        `environment ${spec.environment.hash} has no node_modules at ${nodeModulesDir}: build it with ensureEnvironment first`,
      );
    const bundle = await buildNodeBundle({
      codeDir,
      entry: spec.config.entry,
      outDir: join(replicaDir, "bundle"),
      ...(nodeModulesDir ? { nodeModulesDir } : {}),
    });
    launch = await nodeReplicaCommand({ bundle, env, home });
    // V8 then collects (and fails with a clear heap OOM) before the OS limit below kills it.
    launch.args.unshift(`--max-old-space-size=${Math.max(16, Math.floor(memoryMb * 0.75))}`);
  }
  launch.env.LANG = process.env.LANG || "C.UTF-8";
  const cpuSet = cpuSetFor(spec.config.resources.cpus, o.tools.cpus, spec.replicaId);
  // V8 commits about 90 MB of writable mappings before serving anything (RLIMIT_DATA counts them,
  // resident or not) and aborts below that, so a node replica's OS limit has a floor; its heap
  // is still held to 75 % of memoryMb by --max-old-space-size.
  const dataLimitMb = spec.runtime === "node" ? Math.max(memoryMb, NODE_MIN_DATA_MB) : memoryMb;
  return { ...withHostLimits(launch, { memoryMb: dataLimitMb, cpuSet }, o.tools), cwd: home };
}
