import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, openSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { RUNTIME_ENV, RUNTIME_PATHS } from "@tessera/core";
import type { ReplicaPhase, ReplicaStatus } from "../driver.js";
import type { ReplicaLaunch } from "./launch.js";
import { LogFileFollower, type ReplicaLogStream } from "./logs.js";
import {
  isSameProcessAlive,
  killGroupMembers,
  type ProcessIdentity,
  processIdentity,
  signalReplicaGroup,
} from "./processes.js";
import type { LocalDriverSettings } from "./settings.js";

export interface HealthCheckSettings {
  periodS: number;
  timeoutS: number;
  failureThreshold: number;
  startupTimeoutS: number;
}

/** replica.json: what a driver (this one, or one started later) needs to supervise the replica. */
export interface ReplicaRecord {
  replicaId: string;
  clusterId: string;
  deploymentId: string;
  revisionId: string;
  launch: ReplicaLaunch | null;
  port: number | null;
  process: ProcessIdentity | null;
  /** When the current process started (epoch ms). */
  startedAt: number | null;
  /** Whether the current process has answered ready at least once. */
  everReady: boolean;
  restarts: number;
  quickCrashes: number;
  healthCheck: HealthCheckSettings;
  /** The GPUs given to the replica and the share it asked for (restored on adoption). */
  gpus: number;
  gpuDevices: string[];
  failedReason?: string;
  /** Set once stopReplica began: the SIGKILL deadline (epoch ms). */
  stopDeadline?: number;
  logOffsets?: Partial<Record<ReplicaLogStream, number>>;
}

export interface ReplicaHooks {
  settings: LocalDriverSettings;
  emit(status: ReplicaStatus): void;
  log(stream: ReplicaLogStream, line: string): void;
  onError(err: unknown): void;
  /** A port for the replica (its previous one when still free); serialised per cluster by the driver. */
  pickPort(preferred: number | null): Promise<number>;
  /** Called once the replica is stopped and its directory removed. */
  forget(): void;
}

const LOOP_MS = 200;
const STARTING_PROBE_MS = 100;
const STOP_GRACE_MS = 1000;
const FAILED_LOG_LINES = 10;

/**
 * One replica process under supervision: spawns it (detached, in its own process group, output
 * to files), probes `/-/ready`, restarts it after crashes with exponential backoff, gives up
 * (`failed`) after too many quick crashes, drains it on stop. Survives the driver: a later driver
 * re-attaches to the same process through replica.json (`adopt`).
 */
export class SupervisedReplica {
  phase: ReplicaPhase = "starting";
  reason: string | undefined;
  private child: ChildProcess | null = null;
  private readonly followers: LogFileFollower[];
  private loopTimer: NodeJS.Timeout | null = null;
  private respawnTimer: NodeJS.Timeout | null = null;
  private nextProbeAt = 0;
  private probing = false;
  private probeFailures = 0;
  private killReason: string | null = null;
  private stopWaiters: (() => void)[] = [];
  private detached = false;
  /** The last lines of output, for the reason of a failed replica. */
  private readonly recentLines: string[] = [];

  constructor(
    readonly dir: string,
    readonly record: ReplicaRecord,
    private readonly hooks: ReplicaHooks,
  ) {
    const offsets = record.logOffsets ?? {};
    this.followers = (["stdout", "stderr"] as const).map((stream) => {
      const path = join(dir, `${stream}.log`);
      // Without a saved offset (a driver that died without closing) start at the end: the lines
      // before it went to the previous driver's onLog.
      const offset = offsets[stream] ?? (existsSync(path) ? statSync(path).size : 0);
      return new LogFileFollower(path, stream, offset);
    });
  }

  status(): ReplicaStatus {
    return {
      replicaId: this.record.replicaId,
      clusterId: this.record.clusterId,
      deploymentId: this.record.deploymentId,
      revisionId: this.record.revisionId,
      phase: this.phase,
      address: this.record.port !== null ? `http://127.0.0.1:${this.record.port}` : null,
      restarts: this.record.restarts,
      ...(this.reason ? { reason: this.reason } : {}),
    };
  }

  /** Starts the first process of a new replica. */
  async start(): Promise<void> {
    try {
      await this.spawnProcess();
    } catch (err) {
      this.failBeforeStart(`could not start: ${(err as Error).message}`);
    }
  }

  /** Marks a replica that could not even be prepared (bad code, missing environment) as failed. */
  failBeforeStart(reason: string): void {
    this.record.failedReason = reason;
    this.setPhase("failed", reason);
    this.persist();
  }

  /** Re-attaches to a replica found on disk: its process still running, crashed meanwhile, or failed. */
  adopt(): void {
    const r = this.record;
    if (r.failedReason !== undefined) {
      this.phase = "failed";
      this.reason = r.failedReason;
      return;
    }
    if (!r.launch) {
      this.failBeforeStart("the previous driver stopped before this replica was started");
      return;
    }
    this.startLoop();
    if (r.process && isSameProcessAlive(r.process)) {
      this.phase = r.stopDeadline !== undefined ? "draining" : "starting";
      this.reason = r.stopDeadline !== undefined ? "stopping" : "re-attached after a driver restart";
      this.nextProbeAt = 0;
      return;
    }
    r.process = null;
    this.onExit("exited while no driver was supervising it (exit status unknown)");
  }

  /** SIGTERM (the runtime drains), SIGKILL after `drainTimeoutS`; resolves once the process is gone. */
  stop(drainTimeoutS: number): Promise<void> {
    if (this.phase === "stopped") return Promise.resolve();
    const done = new Promise<void>((resolve) => this.stopWaiters.push(resolve));
    if (this.respawnTimer) clearTimeout(this.respawnTimer);
    this.respawnTimer = null;
    const deadline = Date.now() + drainTimeoutS * 1000 + STOP_GRACE_MS;
    this.record.stopDeadline = Math.min(this.record.stopDeadline ?? deadline, deadline);
    if (!this.record.process) {
      this.finishStopped();
      return done;
    }
    this.persist();
    this.setPhase("draining", "stopping");
    signalReplicaGroup(this.record.process, "SIGTERM");
    this.startLoop();
    return done;
  }

  /** Stops supervising (driver close) without touching the process; a later driver adopts it. */
  detach(): void {
    this.detached = true;
    if (this.loopTimer) clearTimeout(this.loopTimer);
    if (this.respawnTimer) clearTimeout(this.respawnTimer);
    this.loopTimer = this.respawnTimer = null;
    this.pollLogs();
    for (const f of this.followers) f.close();
    this.child?.removeAllListeners("exit");
    this.child = null;
    if (this.phase !== "stopped") this.persist();
  }

  /** The process currently serving this replica (for operators and tests). */
  get process(): ProcessIdentity | null {
    return this.record.process;
  }

  // ---------------------------------------------------------------- process lifecycle

  private async spawnProcess(): Promise<void> {
    const r = this.record;
    if (!r.launch || this.detached || r.stopDeadline !== undefined) return;
    r.port = await this.hooks.pickPort(r.port);
    r.launch.env[RUNTIME_ENV.PORT] = String(r.port);
    if (this.detached || r.stopDeadline !== undefined) return;
    const out = openSync(join(this.dir, "stdout.log"), "a", 0o600);
    const err = openSync(join(this.dir, "stderr.log"), "a", 0o600);
    let child: ChildProcess;
    try {
      // detached: a session (and process group) of its own, so it outlives the provisioner and
      // one signal reaches everything tenant code started.
      child = spawn(r.launch.command, r.launch.args, {
        cwd: r.launch.cwd,
        env: r.launch.env,
        detached: true,
        stdio: ["ignore", out, err],
        ...(r.launch.uid !== undefined ? { uid: r.launch.uid, gid: r.launch.uid } : {}),
      });
    } finally {
      closeSync(out);
      closeSync(err);
    }
    child.unref();
    this.child = child;
    r.startedAt = Date.now();
    r.everReady = false;
    r.process =
      child.pid !== undefined ? (processIdentity(child.pid) ?? { pid: child.pid, startTime: "" }) : null;
    this.probeFailures = 0;
    this.nextProbeAt = 0;
    child.once("error", (e) => {
      if (this.child === child) this.onExit(`could not start: ${e.message}`);
    });
    child.once("exit", (code, signal) => {
      if (this.child === child) this.onExit(signal ? `killed by ${signal}` : `exited with code ${code}`);
    });
    this.persist();
    this.setPhase("starting", r.restarts > 0 ? `restarted (${r.restarts})` : undefined);
    this.startLoop();
  }

  private onExit(how: string): void {
    const r = this.record;
    this.pollLogs();
    // Whatever tenant code started in the replica's group goes with it (a stray child could hold
    // the port or memory, or outlive a stop by ignoring SIGTERM).
    if (r.process) killGroupMembers(r.process.pid);
    this.child = null;
    r.process = null;
    if (r.stopDeadline !== undefined) {
      this.finishStopped();
      return;
    }
    if (this.detached) return;
    const s = this.hooks.settings;
    const cause = this.killReason ? `${this.killReason}; ${how}` : how;
    this.killReason = null;
    const uptime = r.startedAt === null ? 0 : Date.now() - r.startedAt;
    r.quickCrashes = !r.everReady || uptime < s.quickCrashMs ? r.quickCrashes + 1 : 1;
    if (r.quickCrashes >= s.maxQuickCrashes) {
      const tail = this.logTail();
      r.failedReason = `${cause}; crashed ${r.quickCrashes} times in a row soon after starting, not restarted${tail ? `; last output:\n${tail}` : ""}`;
      this.stopLoop();
      this.persist();
      this.setPhase("failed", r.failedReason);
      return;
    }
    r.restarts += 1;
    const delay = Math.min(s.restartBackoffMs * 2 ** (r.quickCrashes - 1), s.restartBackoffMaxMs);
    this.persist();
    this.setPhase("starting", `${cause}; restarting in ${delay} ms (restart ${r.restarts})`);
    this.respawnTimer = setTimeout(() => {
      this.respawnTimer = null;
      this.spawnProcess().catch((e) => {
        this.hooks.onError(e);
        this.failBeforeStart(`restart failed: ${(e as Error).message}`);
      });
    }, delay);
  }

  private finishStopped(): void {
    this.stopLoop();
    this.pollLogs();
    for (const f of this.followers) f.close();
    this.setPhase("stopped", undefined);
    rmSync(this.dir, { recursive: true, force: true });
    this.hooks.forget();
    for (const resolve of this.stopWaiters.splice(0)) resolve();
  }

  private kill(reason: string): void {
    if (!this.record.process) return;
    this.killReason = reason;
    signalReplicaGroup(this.record.process, "SIGKILL");
  }

  // ---------------------------------------------------------------- supervision loop

  private startLoop(): void {
    if (this.loopTimer || this.detached) return;
    const tick = () => {
      this.loopTimer = null;
      try {
        this.supervise();
      } catch (err) {
        this.hooks.onError(err);
      }
      if (this.phase !== "stopped" && this.phase !== "failed" && !this.detached)
        this.loopTimer = setTimeout(tick, LOOP_MS);
    };
    this.loopTimer = setTimeout(tick, 0);
  }

  private stopLoop(): void {
    if (this.loopTimer) clearTimeout(this.loopTimer);
    this.loopTimer = null;
  }

  private supervise(): void {
    this.pollLogs();
    const r = this.record;
    if (!r.process) return;
    // An adopted process is not our child: no exit event, so watch /proc instead.
    if (!this.child && !isSameProcessAlive(r.process)) {
      this.onExit("exited (not a child of this driver: exit status unknown)");
      return;
    }
    if (r.stopDeadline !== undefined) {
      if (Date.now() >= r.stopDeadline) signalReplicaGroup(r.process, "SIGKILL");
      return;
    }
    if (
      !r.everReady &&
      r.startedAt !== null &&
      Date.now() - r.startedAt > r.healthCheck.startupTimeoutS * 1000
    ) {
      this.kill(`not ready within ${r.healthCheck.startupTimeoutS} s`);
      return;
    }
    if (!this.probing && Date.now() >= this.nextProbeAt) {
      this.probing = true;
      this.probe()
        .catch((err) => this.hooks.onError(err))
        .finally(() => {
          this.probing = false;
        });
    }
  }

  private async probe(): Promise<void> {
    const r = this.record;
    const hc = r.healthCheck;
    const pid = r.process?.pid;
    let answer: { status: number; reason?: string } | null = null;
    try {
      const res = await fetch(`http://127.0.0.1:${r.port}${RUNTIME_PATHS.ready}`, {
        signal: AbortSignal.timeout(hc.timeoutS * 1000),
      });
      const body = (await res.json().catch(() => ({}))) as { reason?: unknown };
      answer = { status: res.status, ...(typeof body.reason === "string" ? { reason: body.reason } : {}) };
    } catch {
      answer = null;
    }
    // The process changed (restart, stop) while the probe was in flight: its answer is stale.
    if (r.process?.pid !== pid || r.stopDeadline !== undefined || this.detached) return;
    this.nextProbeAt = Date.now() + (r.everReady ? hc.periodS * 1000 : STARTING_PROBE_MS);
    if (answer?.status === 200) {
      this.probeFailures = 0;
      if (!r.everReady) {
        r.everReady = true;
        this.persist();
      }
      if (this.phase !== "ready") this.setPhase("ready", undefined);
      return;
    }
    if (!r.everReady) return; // still starting: the startup timeout decides
    this.probeFailures += 1;
    if (this.probeFailures < hc.failureThreshold) return;
    if (answer === null) this.kill(`no answer to ${hc.failureThreshold} health checks in a row`);
    else if (this.phase === "ready")
      this.setPhase(
        "starting",
        `not ready: ${answer.reason ?? `${RUNTIME_PATHS.ready} answered ${answer.status}`}`,
      );
  }

  // ---------------------------------------------------------------- bookkeeping

  private setPhase(phase: ReplicaPhase, reason: string | undefined): void {
    this.phase = phase;
    this.reason = reason;
    this.hooks.emit(this.status());
  }

  private pollLogs(): void {
    for (const f of this.followers)
      for (const line of f.poll()) {
        this.hooks.log(f.stream, line);
        this.recentLines.push(line);
        if (this.recentLines.length > FAILED_LOG_LINES) this.recentLines.shift();
      }
  }

  private logTail(): string {
    return this.recentLines.join("\n");
  }

  /** Writes replica.json atomically (0600: the launch environment may hold a handle token). */
  persist(): void {
    if (this.phase === "stopped" || !existsSync(this.dir)) return;
    this.record.logOffsets = Object.fromEntries(this.followers.map((f) => [f.stream, f.resumeOffset]));
    const file = join(this.dir, "replica.json");
    writeFileSync(`${file}.tmp`, JSON.stringify(this.record), { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  }
}
