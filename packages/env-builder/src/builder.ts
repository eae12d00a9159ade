import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
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
import { EnvironmentError, invalidSpec } from "./errors.js";
import { type Recipe, type RecipeOptions, RecipePlanner } from "./recipes.js";
import { buildEnvironmentVariables, runBuildCommand } from "./run-command.js";

export interface EnvironmentBuilderOptions extends RecipeOptions {
  /** Where environments live, one directory per hash. */
  root: string;
  /** A build running longer than this is killed and fails; default 30 minutes. */
  buildTimeoutMs?: number;
  /** A build lock not refreshed for this long belongs to a dead builder and is taken over; default 10 s. */
  lockStaleMs?: number;
  /** Builds this process runs at once; more wait their turn (default 2). */
  maxConcurrentBuilds?: number;
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

const READY = "ready.json";
const FAILED = "failed.json";
const LOG = "build.log";
const LOCK = ".lock";
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
  private readonly planner: RecipePlanner;

  constructor(private readonly options: EnvironmentBuilderOptions) {
    this.root = resolve(options.root);
    this.slots = new BuildSlots(this.maxConcurrentBuilds);
    this.planner = new RecipePlanner(options, this.root);
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
    const plan = await this.planner.plan(runtime, spec, hash, dir);
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
  if (!record || typeof record.interpreter !== "string" || typeof record.location !== "string")
    return undefined;
  const essential = record.runtime === "node" ? join(record.location, "node_modules") : record.interpreter;
  return existsSync(essential) ? record : undefined;
}

function writeAtomically(file: string, content: string): void {
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, content);
  renameSync(temporary, file);
}

function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms));
}
