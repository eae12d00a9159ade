import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { delimiter, dirname, join, resolve } from "node:path";
import {
  type EnvironmentSpec,
  environmentHash,
  environmentSpec,
  normaliseEnvironmentSpec,
  type RuntimeKind,
  runtimeKind,
} from "@tessera/core";
import lockfile from "proper-lockfile";
import { BuildLog, emit, LogFollower, type LogListener } from "./build-log.js";
import { BuildSlots } from "./build-slots.js";
import { EnvironmentError, invalidSpec, unsupported } from "./errors.js";
import { checkNpmDependency, environmentPackageJson } from "./npm.js";
import {
  type CondaNeeds,
  canInstallIntoOtherPython,
  checkCondaChannel,
  checkPipRequirement,
  chooseInterpreter,
  minorVersionConstraint,
  type PythonConstraint,
  type PythonInterpreter,
  probePython,
  splitCondaDependencies,
} from "./python.js";
import { type BuildCommand, buildEnvironmentVariables, runBuildCommand } from "./run-command.js";

export interface EnvironmentBuilderOptions {
  /** Where environments live, one directory per hash. */
  root: string;
  /** Base python interpreter (command or path); default `python3`. */
  python?: string;
  /** Extra `pip install` arguments set by the operator (`--index-url`, `--find-links DIR`, `--no-index`). */
  pipArgs?: string[];
  /** Create venvs with `--system-site-packages` (shares the base interpreter's packages). */
  systemSitePackages?: boolean;
  /** micromamba/mamba/conda executable; undefined = look for one on PATH; `false` = never use conda. */
  micromamba?: string | false;
  /** npm executable; default `npm`. */
  npm?: string;
  /** Extra `npm install` arguments set by the operator (`--registry URL`, `--offline`, `--cache DIR`). */
  npmArgs?: string[];
  /** A build running longer than this is killed and fails; default 30 minutes. */
  buildTimeoutMs?: number;
  /** A build lock not refreshed for this long belongs to a dead builder and is taken over; default 10 s. */
  lockStaleMs?: number;
  /** Builds this process runs at once; more wait their turn (default 2). */
  maxConcurrentBuilds?: number;
  /** Variables builds may inherit from (filtered, see run-command); default `process.env`. */
  env?: NodeJS.ProcessEnv;
}

export interface EnvironmentRequest {
  runtime: RuntimeKind;
  /** Absent, null or `{kind: "none"}`: the runtime's base interpreter, nothing is built. */
  spec?: EnvironmentSpec | null;
}

export interface EnsuredEnvironment {
  hash: string;
  runtime: RuntimeKind;
  /**
   * python: the environment's prefix (replicas run `<location>/bin/python`; for the base
   * interpreter, its `sys.prefix`); node: the directory holding `node_modules`.
   */
  location: string;
  /** The executable replicas run: the env's python, or node. */
  interpreter: string;
  /** True when this call built nothing (already built, built by a concurrent call, or no build needed). */
  reused: boolean;
  /** How long this call's build took (only when it built), for metering build minutes. */
  buildMs?: number;
}

export type EnvironmentState =
  | { state: "ready"; location: string; interpreter: string; builtAt: string }
  | { state: "building"; logFile: string }
  | { state: "failed"; reason: string; logFile: string; at: string }
  | { state: "absent" };

interface ReadyRecord {
  hash: string;
  runtime: RuntimeKind;
  location: string;
  interpreter: string;
  builtAt: string;
  spec: EnvironmentSpec;
}

interface FailedRecord {
  reason: string;
  at: string;
  logTail: string[];
}

/** What building one environment takes, decided before anything is touched on disk. */
interface Recipe {
  location: string;
  interpreter: string;
  /** Written into the environment's directory before the commands run. */
  files: Record<string, string>;
  commands: BuildCommand[];
  /** Said at the top of the log (why this recipe was chosen). */
  notes: string[];
}

type Plan = { base: { location: string; interpreter: string } } | { recipe: Recipe };

const READY = "ready.json";
const FAILED = "failed.json";
const LOG = "build.log";
const LOCK = ".lock";
const PREFIX = "prefix";
const POLL_MS = 200;

interface InFlight {
  promise: Promise<EnsuredEnvironment>;
  listeners: Set<LogListener>;
}

/**
 * Builds environments from specs, content-addressed by the spec's hash under `root`. Each hash
 * is built at most once at a time across every process sharing `root` (a file lock in the
 * environment's directory); `ready.json` is written last, so a directory without it is never used.
 * A failed build leaves `build.log` and `failed.json` (reason + log tail); the next ensure retries.
 */
export class EnvironmentBuilder {
  readonly root: string;
  private readonly inFlight = new Map<string, InFlight>();
  private readonly closing = new AbortController();
  private readonly slots: BuildSlots;
  private basePython?: Promise<PythonInterpreter>;
  private condaTool?: string | null;

  constructor(private readonly options: EnvironmentBuilderOptions) {
    this.root = resolve(options.root);
    this.slots = new BuildSlots(this.maxConcurrentBuilds);
  }

  /** The hash naming the environment of `request`; throws VALIDATION_FAILED for a malformed spec. */
  hashOf(request: EnvironmentRequest): string {
    const { runtime, spec } = parseRequest(request);
    return environmentHash(runtime, spec);
  }

  /** Where the environment of `hash` stands, without building anything. */
  async status(hash: string): Promise<EnvironmentState> {
    const dir = this.dirOf(hash);
    const ready = readReady(dir);
    if (ready)
      return {
        state: "ready",
        location: ready.location,
        interpreter: ready.interpreter,
        builtAt: ready.builtAt,
      };
    if (this.inFlight.has(hash) || (existsSync(dir) && (await this.lockHeld(dir))))
      return { state: "building", logFile: join(dir, LOG) };
    const failed = readJson<FailedRecord>(join(dir, FAILED));
    if (failed) return { state: "failed", reason: failed.reason, at: failed.at, logFile: join(dir, LOG) };
    return { state: "absent" };
  }

  /**
   * Stop: running builds are killed (they fail as cancelled, so a dead provisioner leaves no
   * installer writing into a directory another builder will take over), waits end, and later
   * ensures that would build fail at once. Resolves when every call in flight has settled.
   */
  async close(): Promise<void> {
    this.closing.abort();
    await Promise.allSettled([...this.inFlight.values()].map((f) => f.promise));
  }

  /**
   * Make the environment of `request` exist and say where it is. Concurrent calls for one spec
   * (in this process or others sharing `root`) build it once; every caller's `onLog` sees the
   * build's lines as they are written.
   */
  async ensure(request: EnvironmentRequest, onLog?: LogListener): Promise<EnsuredEnvironment> {
    const { runtime, spec } = parseRequest(request);
    const hash = environmentHash(runtime, spec);
    const dir = this.dirOf(hash);
    const ready = readReady(dir);
    if (ready)
      return { hash, runtime, location: ready.location, interpreter: ready.interpreter, reused: true };

    const running = this.inFlight.get(hash);
    if (running) {
      if (onLog) running.listeners.add(onLog);
      try {
        const { buildMs: _theirs, ...built } = await running.promise;
        return { ...built, reused: true };
      } finally {
        if (onLog) running.listeners.delete(onLog);
      }
    }

    // Registered before the first await so that a concurrent call in this process joins this one.
    const listeners = new Set<LogListener>(onLog ? [onLog] : []);
    const promise = this.provide(hash, runtime, spec, dir, listeners);
    this.inFlight.set(hash, { promise, listeners });
    try {
      return await promise;
    } finally {
      this.inFlight.delete(hash);
    }
  }

  private async provide(
    hash: string,
    runtime: RuntimeKind,
    spec: EnvironmentSpec,
    dir: string,
    listeners: Set<LogListener>,
  ): Promise<EnsuredEnvironment> {
    const plan = await this.plan(runtime, spec, hash, dir);
    if ("base" in plan) return { hash, runtime, ...plan.base, reused: true };
    try {
      return await this.buildOnce(hash, runtime, spec, dir, plan.recipe, listeners);
    } catch (error) {
      if (error instanceof EnvironmentError) throw error;
      // The environment store itself failed (permissions, full disk): still a stable code.
      throw new EnvironmentError("ENV_BUILD_FAILED", `environment store error: ${(error as Error).message}`, {
        hash,
      });
    }
  }

  private dirOf(hash: string): string {
    if (!/^[0-9a-f]{16,64}$/.test(hash)) throw invalidSpec(`'${hash}' is not an environment hash`);
    return join(this.root, hash);
  }

  /** Take the cross-process build lock, or wait for whoever holds it and use what they built. */
  private async buildOnce(
    hash: string,
    runtime: RuntimeKind,
    spec: EnvironmentSpec,
    dir: string,
    recipe: Recipe,
    listeners: Set<LogListener>,
  ): Promise<EnsuredEnvironment> {
    mkdirSync(dir, { recursive: true });
    const waitStartedAt = new Date();
    const follower = new LogFollower(join(dir, LOG), (line) => emit(listeners, line));
    let waited = false;
    let queuedSaid = false;
    // When the current wait on another builder's lock began: that builder is bounded by its build
    // timeout, so a wait much longer than that means something is wrong.
    let lockedSince: number | undefined;
    for (;;) {
      const ready = readReady(dir);
      if (ready) {
        follower.poll();
        return { hash, runtime, location: ready.location, interpreter: ready.interpreter, reused: true };
      }
      // A slot before the lock: a build queued here must not keep other processes from building it.
      const releaseSlot = await this.slots.acquire(() => {
        if (!queuedSaid)
          emit(listeners, `waiting for a build slot (at most ${this.maxConcurrentBuilds} at once)`);
        queuedSaid = true;
      });
      try {
        const lockLost = new AbortController();
        const release = await this.tryLock(dir, (error) => {
          emit(listeners, `! build lock lost: ${error.message}`);
          lockLost.abort();
        });
        if (release) {
          try {
            const builtMeanwhile = readReady(dir);
            if (builtMeanwhile) {
              follower.poll();
              const { location, interpreter } = builtMeanwhile;
              return { hash, runtime, location, interpreter, reused: true };
            }
            const failed = readJson<FailedRecord>(join(dir, FAILED));
            // The build this call waited for failed: report that failure rather than repeat it at once.
            if (waited && failed && new Date(failed.at) >= waitStartedAt)
              throw new EnvironmentError("ENV_BUILD_FAILED", `environment build failed: ${failed.reason}`, {
                hash,
                reason: failed.reason,
                logTail: failed.logTail,
                logFile: join(dir, LOG),
              });
            return await this.build(hash, runtime, spec, dir, recipe, listeners, lockLost.signal);
          } finally {
            await release().catch(() => undefined);
          }
        }
      } finally {
        releaseSlot();
      }
      if (this.closing.signal.aborted)
        throw new EnvironmentError("ENV_BUILD_FAILED", "the environment builder is closing", { hash });
      if (!waited) emit(listeners, `waiting for another builder of environment ${hash}`);
      waited = true;
      lockedSince ??= Date.now();
      follower.poll();
      if (Date.now() - lockedSince > this.buildTimeoutMs() + this.lockStaleMs() * 2)
        throw new EnvironmentError(
          "ENV_BUILD_FAILED",
          "timed out waiting for another build of this environment",
          {
            hash,
            logFile: join(dir, LOG),
          },
        );
      await sleep(POLL_MS);
    }
  }

  private async tryLock(
    dir: string,
    onLost: (error: Error) => void,
  ): Promise<(() => Promise<void>) | undefined> {
    try {
      return await lockfile.lock(dir, {
        lockfilePath: join(dir, LOCK),
        realpath: false,
        stale: this.lockStaleMs(),
        retries: 0,
        // A lost lock (its refresh failed) may already be another builder's: this build stops
        // rather than race it, and must not crash the process either (the default throws).
        onCompromised: onLost,
      });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ELOCKED") return undefined;
      throw error;
    }
  }

  private async lockHeld(dir: string): Promise<boolean> {
    return lockfile
      .check(dir, { lockfilePath: join(dir, LOCK), realpath: false, stale: this.lockStaleMs() })
      .catch(() => false);
  }

  private async build(
    hash: string,
    runtime: RuntimeKind,
    spec: EnvironmentSpec,
    dir: string,
    recipe: Recipe,
    listeners: Set<LogListener>,
    lockLost: AbortSignal,
  ): Promise<EnsuredEnvironment> {
    // Whatever a crashed or failed earlier attempt left behind is not trusted.
    for (const entry of readdirSync(dir))
      if (entry !== LOCK) rmSync(join(dir, entry), { recursive: true, force: true });
    const log = new BuildLog(join(dir, LOG), listeners);
    const started = Date.now();
    try {
      log.line(`building ${runtime} environment ${hash}: ${JSON.stringify(spec)}`);
      for (const note of recipe.notes) log.line(note);
      writeFileSync(join(dir, "spec.json"), `${JSON.stringify({ runtime, spec }, null, 2)}\n`);
      for (const [name, content] of Object.entries(recipe.files)) {
        mkdirSync(dirname(join(dir, name)), { recursive: true });
        writeFileSync(join(dir, name), content);
      }
      const env = buildEnvironmentVariables(this.options.env ?? process.env);
      const deadline = started + this.buildTimeoutMs();
      for (const command of recipe.commands) {
        const outcome = await runBuildCommand(command, log, {
          env,
          deadline,
          signal: AbortSignal.any([this.closing.signal, lockLost]),
        });
        if (!outcome.ok) throw this.failure(hash, dir, log, outcome.reason);
      }
      if (!existsSync(recipe.interpreter))
        throw this.failure(hash, dir, log, `the build finished without ${recipe.interpreter}`);
      const record: ReadyRecord = {
        hash,
        runtime,
        location: recipe.location,
        interpreter: recipe.interpreter,
        builtAt: new Date().toISOString(),
        spec,
      };
      log.line(`environment ${hash} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      writeAtomically(join(dir, READY), JSON.stringify(record, null, 2));
      return {
        hash,
        runtime,
        location: recipe.location,
        interpreter: recipe.interpreter,
        reused: false,
        buildMs: Date.now() - started,
      };
    } catch (error) {
      if (error instanceof EnvironmentError) throw error;
      throw this.failure(hash, dir, log, `build error: ${(error as Error).message}`);
    } finally {
      log.close();
    }
  }

  private failure(hash: string, dir: string, log: BuildLog, reason: string): EnvironmentError {
    log.line(`! build failed: ${reason}`);
    const logTail = log.lastLines();
    const record: FailedRecord = { reason, at: new Date().toISOString(), logTail };
    try {
      writeAtomically(join(dir, FAILED), JSON.stringify(record, null, 2));
    } catch (error) {
      // The failure itself (say, a full or read-only disk) is what the caller needs to hear about.
      log.line(`! could not record the failure: ${(error as Error).message}`);
    }
    return new EnvironmentError("ENV_BUILD_FAILED", `environment build failed: ${reason}`, {
      hash,
      reason,
      logTail,
      logFile: log.file,
    });
  }

  /** Decide how to provide the spec; throws ENV_UNSUPPORTED / VALIDATION_FAILED before touching disk. */
  private async plan(runtime: RuntimeKind, spec: EnvironmentSpec, hash: string, dir: string): Promise<Plan> {
    if (runtime === "node") {
      if (spec.kind === "none")
        return { base: { location: dirname(dirname(process.execPath)), interpreter: process.execPath } };
      if (spec.kind !== "npm")
        throw unsupported(`a ${spec.kind} environment cannot serve a node deployment: use an npm spec`, hash);
      for (const [name, version] of Object.entries(spec.dependencies)) checkNpmDependency(name, version);
      const files = { "package.json": environmentPackageJson(hash, spec.dependencies) };
      // No dependencies: nothing to install, but an npm environment always has its node_modules.
      if (Object.keys(spec.dependencies).length === 0)
        return {
          recipe: {
            location: dir,
            interpreter: process.execPath,
            files: { ...files, "node_modules/.empty": "" },
            commands: [],
            notes: [],
          },
        };
      return {
        recipe: {
          location: dir,
          interpreter: process.execPath,
          files,
          commands: [
            {
              title: "npm install",
              argv: [
                this.options.npm ?? "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--no-update-notifier",
                "--omit=dev",
                ...(this.options.npmArgs ?? []),
              ],
              cwd: dir,
            },
          ],
          notes: [],
        },
      };
    }

    if (spec.kind === "npm")
      throw unsupported("an npm environment cannot serve a python deployment: use a pip or conda spec", hash);
    if (spec.kind === "none") return { base: baseOf(await this.basePythonInterpreter(hash)) };
    if (spec.kind === "pip") {
      spec.requirements.forEach(checkPipRequirement);
      const constraint = spec.python ? minorVersionConstraint(spec.python) : undefined;
      return this.venvPlan(hash, dir, constraint, spec.requirements, []);
    }

    spec.channels.forEach(checkCondaChannel);
    const needs = splitCondaDependencies(spec.dependencies);
    needs.pipRequirements.forEach(checkPipRequirement);
    const tool = this.condaExecutable();
    if (tool) return { recipe: this.condaRecipe(tool, dir, spec.channels, needs, spec.dependencies) };
    if (needs.condaOnly.length > 0)
      throw unsupported(
        `this cluster has no conda or micromamba, which these conda dependencies need: ${needs.condaOnly.join(", ")} ` +
          "(without conda only 'python' and pip packages can be provided, as a venv)",
        hash,
      );
    return this.venvPlan(hash, dir, needs.python, needs.pipRequirements, [
      "no conda/micromamba on this cluster: python + pip dependencies are built as a venv",
    ]);
  }

  private async venvPlan(
    hash: string,
    dir: string,
    constraint: PythonConstraint | undefined,
    requirements: string[],
    notes: string[],
  ): Promise<Plan> {
    const python = await chooseInterpreter(
      await this.basePythonInterpreter(hash),
      constraint,
      probePython,
      hash,
    );
    if (requirements.length === 0) return { base: baseOf(python) };
    const prefix = join(dir, PREFIX);
    const venvPython = join(prefix, "bin", "python");
    const externalPip = canInstallIntoOtherPython(python);
    return {
      recipe: {
        location: prefix,
        interpreter: venvPython,
        files: { "requirements.txt": `${requirements.join("\n")}\n` },
        commands: [
          {
            title: "create the venv",
            argv: [
              python.executable,
              "-m",
              "venv",
              ...(externalPip ? ["--without-pip"] : []),
              ...(this.options.systemSitePackages ? ["--system-site-packages"] : []),
              prefix,
            ],
            cwd: dir,
          },
          externalPip
            ? this.pipInstall([python.executable, "-m", "pip", "--python", venvPython], dir)
            : this.pipInstall([venvPython, "-m", "pip"], dir),
        ],
        notes: [
          ...notes,
          `python ${python.version} (${python.executable}), pip ${python.pip ?? "from ensurepip"}`,
        ],
      },
    };
  }

  private condaRecipe(
    tool: string,
    dir: string,
    channels: string[],
    needs: CondaNeeds,
    dependencies: (string | { pip: string[] })[],
  ): Recipe {
    const prefix = join(dir, PREFIX);
    const python = join(prefix, "bin", "python");
    const condaDependencies = dependencies.filter((d): d is string => typeof d === "string");
    if (!needs.python) condaDependencies.push("python");
    if (needs.pipRequirements.length > 0 && !condaDependencies.some((d) => /^pip\b/.test(d)))
      condaDependencies.push("pip");
    const isMicromamba = /micromamba$/.test(tool);
    const env = this.options.env ?? process.env;
    const commands: BuildCommand[] = [
      {
        title: "create the conda environment",
        argv: [
          tool,
          "create",
          "--yes",
          "--prefix",
          prefix,
          ...(channels.length > 0 ? channels : ["conda-forge"]).flatMap((c) => ["-c", c]),
          ...(isMicromamba && !env.MAMBA_ROOT_PREFIX
            ? ["--root-prefix", join(this.root, ".micromamba")]
            : []),
          ...condaDependencies,
        ],
        cwd: dir,
      },
    ];
    if (needs.pipRequirements.length > 0) commands.push(this.pipInstall([python, "-m", "pip"], dir));
    return {
      location: prefix,
      interpreter: python,
      files:
        needs.pipRequirements.length > 0
          ? { "requirements.txt": `${needs.pipRequirements.join("\n")}\n` }
          : {},
      commands,
      notes: [`conda environment with ${tool}`],
    };
  }

  /** `pip` is how to run pip for the environment: its own, or the base one with `--python`. */
  private pipInstall(pip: [string, ...string[]], dir: string): BuildCommand {
    return {
      title: "pip install",
      argv: [
        ...pip,
        "install",
        "--disable-pip-version-check",
        "--no-input",
        ...(this.options.pipArgs ?? []),
        "-r",
        join(dir, "requirements.txt"),
      ],
      cwd: dir,
    };
  }

  private basePythonInterpreter(hash: string): Promise<PythonInterpreter> {
    const command = this.options.python ?? "python3";
    this.basePython ??= probePython(command).then((found) => {
      if (!found)
        throw unsupported(`no python interpreter: '${command}' does not run (set TESSERA_PYTHON)`, hash);
      return found;
    });
    // A missing interpreter may be installed later: do not remember the failure.
    this.basePython.catch(() => {
      this.basePython = undefined;
    });
    return this.basePython;
  }

  private condaExecutable(): string | undefined {
    if (this.options.micromamba === false) return undefined;
    if (this.options.micromamba) return this.options.micromamba;
    if (this.condaTool === undefined)
      this.condaTool = findOnPath(["micromamba", "mamba", "conda"], this.options.env) ?? null;
    return this.condaTool ?? undefined;
  }

  private get maxConcurrentBuilds(): number {
    return Math.max(1, Math.floor(this.options.maxConcurrentBuilds ?? 2));
  }

  private buildTimeoutMs(): number {
    return this.options.buildTimeoutMs ?? 30 * 60_000;
  }

  private lockStaleMs(): number {
    return Math.max(2000, this.options.lockStaleMs ?? 10_000);
  }
}

function parseRequest(request: EnvironmentRequest): { runtime: RuntimeKind; spec: EnvironmentSpec } {
  const runtime = runtimeKind.safeParse(request.runtime);
  if (!runtime.success) throw invalidSpec(`unknown runtime '${String(request.runtime)}'`);
  const parsed = environmentSpec.safeParse(request.spec ?? { kind: "none" });
  if (!parsed.success)
    throw invalidSpec(
      `invalid environment spec: ${parsed.error.issues.map((i) => `${i.path.join(".") || "spec"}: ${i.message}`).join("; ")}`,
    );
  return { runtime: runtime.data, spec: normaliseEnvironmentSpec(parsed.data) };
}

function baseOf(python: PythonInterpreter): { location: string; interpreter: string } {
  return { location: python.prefix, interpreter: python.executable };
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as T;
  } catch {
    return undefined;
  }
}

/** The ready record, only if what it points at still exists (a half-deleted env is rebuilt). */
function readReady(dir: string): ReadyRecord | undefined {
  const record = readJson<ReadyRecord>(join(dir, READY));
  return record && typeof record.interpreter === "string" && existsSync(record.interpreter)
    ? record
    : undefined;
}

function writeAtomically(file: string, content: string): void {
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, content);
  renameSync(temporary, file);
}

function findOnPath(names: string[], env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const name of names)
    for (const directory of (env.PATH ?? "").split(delimiter).filter(Boolean)) {
      const candidate = join(directory, name);
      try {
        accessSync(candidate, constants.X_OK);
        return candidate;
      } catch {
        // Not here.
      }
    }
  return undefined;
}

function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms));
}
