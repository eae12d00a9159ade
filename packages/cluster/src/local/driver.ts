import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { TesseraError } from "@tessera/core";
import { builderOptionsFromEnv, EnvironmentBuilder } from "@tessera/env-builder";
import type {
  ClusterDriver,
  ClusterSpec,
  EnvironmentHandle,
  EnvironmentRequest,
  ProvisionedCluster,
  ReplicaEvent,
  ReplicaSpec,
  ReplicaStatus,
} from "../driver.js";
import { detectGpus, GpuAllocator } from "./gpus.js";
import { clusterUid, confineClusterDirs, confineReplicaDir } from "./isolation.js";
import { findExecutable, type HostTools, prepareReplicaLaunch, resolvePython } from "./launch.js";
import type { ReplicaLogLine } from "./logs.js";
import { claimPortSlot, type PortRange, pickPort, releasePortSlot } from "./ports.js";
import { allowedCpus, killProcessesOfUser, type ProcessIdentity } from "./processes.js";
import { type ReplicaRecord, SupervisedReplica } from "./replica.js";
import { type LocalDriverSettings, localDriverSettings } from "./settings.js";

export interface LocalDriverOptions {
  /** `clusters.driver_config`: dataDir, portRangeFrom/To, portsPerCluster, python, drainTimeoutS... */
  driverConfig?: Record<string, unknown>;
  /** Every line a replica writes to stdout/stderr (the provisioner stores them in `replica_logs`). */
  onLog?: (line: ReplicaLogLine) => void;
  /** Background failures (supervision, persistence). */
  onError?: (err: unknown) => void;
  /** Share one builder with the provisioner's build jobs; default: one rooted at `<dataDir>/envs`. */
  environmentBuilder?: EnvironmentBuilder;
  /** The data dir when `driverConfig` names none (e.g. the provisioner's `--data-dir`). */
  dataDir?: string;
  /**
   * When the driver serves one cluster row (as `createDriver(cluster)` makes it), it adopts only
   * that cluster's replicas: drivers of other rows sharing the data dir supervise theirs.
   */
  clusterId?: string;
}

/** cluster.json: the facts of one provisioned cluster. */
interface ClusterRecord {
  clusterId: string;
  orgId: string;
  orgSlug: string;
  name: string;
  quota: ClusterSpec["quota"];
  slot: number;
  ports: PortRange;
  /** The Unix user (and group) of the cluster's replicas when `runAsUid` is set. */
  uid?: number;
}

/** Ids become directory names: nothing that could climb out of the data dir. */
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

function checkId(kind: string, id: string): void {
  if (!SAFE_ID.test(id)) throw new TesseraError("VALIDATION_FAILED", `invalid ${kind} id '${id}'`);
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as T;
  } catch {
    return undefined;
  }
}

function writeJsonAtomic(file: string, value: unknown): void {
  writeFileSync(`${file}.tmp`, JSON.stringify(value, null, 2), { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

/**
 * Runs tenant clusters as local processes: one directory and one slice of the port range per
 * cluster, one process group per replica (the runtime and everything it starts), with OS limits
 * (prlimit memory, taskset CPUs) and a scrubbed environment. State lives in files under the data
 * dir, so a restarted provisioner adopts the replicas still running. See packages/cluster/README.md.
 */
export class LocalDriver implements ClusterDriver {
  readonly kind = "local" as const;
  readonly settings: LocalDriverSettings;
  /** How this host enforces limits; absent tools mean the limit is not enforced (logged once). */
  readonly tools: HostTools;
  private readonly onLog: (line: ReplicaLogLine) => void;
  private readonly onError: (err: unknown) => void;
  private readonly listeners = new Set<(e: ReplicaEvent) => void>();
  private readonly clusters = new Map<string, ClusterRecord>();
  private readonly replicas = new Map<string, Map<string, SupervisedReplica>>();
  private readonly builder: EnvironmentBuilder;
  private readonly gpus: GpuAllocator;
  private readonly ownsBuilder: boolean;
  private readonly adopted: Promise<void>;
  private basePython: Promise<string> | undefined;
  /** Port picking is check-then-bind: serialised so two replicas never get the same port. */
  private portLock: Promise<unknown> = Promise.resolve();
  /** Where the next port search of each cluster starts (round-robin through its slice). */
  private readonly portCursor = new Map<string, number>();
  private closed = false;
  private readonly scope: string | undefined;

  constructor(options: LocalDriverOptions = {}) {
    const config = options.driverConfig ?? {};
    this.settings = localDriverSettings(
      config.dataDir === undefined && options.dataDir ? { ...config, dataDir: options.dataDir } : config,
    );
    this.scope = options.clusterId;
    this.onLog = options.onLog ?? (() => {});
    this.onError = options.onError ?? ((err) => console.error("[local-driver]", err));
    this.tools = {
      prlimit: findExecutable("prlimit"),
      taskset: findExecutable("taskset"),
      cpus: allowedCpus(),
    };
    if (!this.tools.prlimit)
      this.onError(new Error("prlimit not found: replica memory limits are not enforced"));
    if (!this.tools.taskset)
      this.onError(new Error("taskset not found: replica CPU counts are not enforced"));
    this.gpus = new GpuAllocator(this.settings.gpuDevices ?? detectGpus());
    this.ownsBuilder = !options.environmentBuilder;
    this.builder =
      options.environmentBuilder ??
      new EnvironmentBuilder({
        ...builderOptionsFromEnv(),
        root: join(this.settings.dataDir, "envs"),
        python: this.settings.python,
      });
    if (this.settings.runAsUid !== null && process.getuid?.() !== 0)
      throw new TesseraError(
        "VALIDATION_FAILED",
        "local driver config: runAsUid needs a provisioner running as root",
      );
    mkdirSync(this.clustersDir(), { recursive: true });
    // Per-cluster users must be able to walk down to their own cluster directory (not list others).
    if (this.settings.runAsUid !== null)
      for (const dir of [this.settings.dataDir, this.clustersDir()]) chmodSync(dir, 0o711);
    this.adopted = Promise.resolve()
      .then(() => this.adoptFromDisk())
      .catch((err) => this.onError(err));
  }

  // ------------------------------------------------------------------ clusters

  async provisionCluster(spec: ClusterSpec): Promise<ProvisionedCluster> {
    checkId("cluster", spec.clusterId);
    await this.open();
    const dir = this.clusterDir(spec.clusterId);
    const existing = this.cluster(spec.clusterId);
    const { slot, range } = existing
      ? { slot: existing.slot, range: existing.ports }
      : claimPortSlot(this.settings, spec.clusterId);
    const record: ClusterRecord = {
      clusterId: spec.clusterId,
      orgId: spec.orgId,
      orgSlug: spec.orgSlug,
      name: spec.name,
      quota: spec.quota,
      slot,
      ports: range,
      ...(this.settings.runAsUid !== null ? { uid: clusterUid(this.settings.runAsUid, slot) } : {}),
    };
    mkdirSync(join(dir, "replicas"), { recursive: true, mode: 0o700 });
    if (record.uid !== undefined) await confineClusterDirs([dir, join(dir, "replicas")], record.uid);
    writeJsonAtomic(join(dir, "cluster.json"), record);
    this.clusters.set(spec.clusterId, record);
    return {
      clusterId: spec.clusterId,
      state: {
        directory: dir,
        portRange: range,
        ...(record.uid !== undefined ? { uid: record.uid } : {}),
        memoryLimit: this.tools.prlimit ? "prlimit --data" : "not enforced",
        cpuLimit: this.tools.taskset ? "taskset" : "not enforced",
        gpus: this.gpus.devices.length,
      },
    };
  }

  async destroyCluster(clusterId: string): Promise<void> {
    checkId("cluster", clusterId);
    await this.open();
    const record = this.cluster(clusterId);
    const replicas = [...(this.replicas.get(clusterId)?.values() ?? [])];
    await Promise.all(replicas.map((r) => r.stop(this.settings.drainTimeoutS)));
    // With a per-cluster user, nothing of the cluster survives, not even processes that left
    // their replica's process group.
    if (record?.uid !== undefined) killProcessesOfUser(record.uid);
    this.replicas.delete(clusterId);
    this.clusters.delete(clusterId);
    rmSync(this.clusterDir(clusterId), { recursive: true, force: true });
    if (record) releasePortSlot(this.settings.dataDir, record.slot, clusterId);
  }

  // ------------------------------------------------------------------ environments

  async ensureEnvironment(
    env: EnvironmentRequest,
    onLog: (line: string) => void,
  ): Promise<EnvironmentHandle> {
    const ensured = await this.builder.ensure({ runtime: env.runtime, spec: env.spec }, onLog);
    return {
      hash: ensured.hash,
      location: ensured.location,
      ...(ensured.buildMs !== undefined ? { buildMs: ensured.buildMs } : {}),
    };
  }

  // ------------------------------------------------------------------ replicas

  async startReplica(spec: ReplicaSpec): Promise<ReplicaStatus> {
    checkId("cluster", spec.clusterId);
    checkId("replica", spec.replicaId);
    await this.open();
    const cluster = this.cluster(spec.clusterId);
    if (!cluster) throw new TesseraError("NOT_FOUND", `cluster ${spec.clusterId} is not provisioned here`);
    const existing = this.replicas.get(spec.clusterId)?.get(spec.replicaId);
    if (existing) return existing.status();

    const dir = join(this.clusterDir(spec.clusterId), "replicas", spec.replicaId);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const { periodS, timeoutS, failureThreshold, startupTimeoutS } = spec.config.healthCheck;
    const record: ReplicaRecord = {
      replicaId: spec.replicaId,
      clusterId: spec.clusterId,
      deploymentId: spec.deploymentId,
      revisionId: spec.revisionId,
      launch: null,
      port: null,
      process: null,
      startedAt: null,
      everReady: false,
      restarts: 0,
      quickCrashes: 0,
      healthCheck: { periodS, timeoutS, failureThreshold, startupTimeoutS },
      gpus: spec.config.resources.gpus,
      gpuDevices: [],
    };
    const replica = this.track(dir, record);
    const gpuHolder = `${spec.clusterId}/${spec.replicaId}`;
    try {
      // More GPUs than the host has is the revision's problem (a failed replica with the reason);
      // not enough free right now is a capacity problem the caller may retry (OVERLOADED).
      if (!this.gpus.couldEverFit(record.gpus))
        throw new TesseraError(
          "ENV_UNSUPPORTED",
          `this deployment asks for ${record.gpus} GPU(s) per replica; the cluster's host has ${this.gpus.devices.length}`,
        );
      const devices = this.gpus.allocate(gpuHolder, record.gpus);
      if (devices === null)
        throw new TesseraError(
          "OVERLOADED",
          `replica ${spec.replicaId} needs ${record.gpus} GPU(s); not that much is free among this host's ${this.gpus.devices.length}`,
        );
      record.gpuDevices = devices;
      record.port = await this.pickPort(spec.clusterId, null);
      record.launch = await prepareReplicaLaunch({
        spec,
        replicaDir: dir,
        port: record.port,
        drainTimeoutS: this.settings.drainTimeoutS,
        basePython: () => this.resolveBasePython(),
        tools: this.tools,
        gpuDevices: devices,
      });
      if (cluster.uid !== undefined) {
        await confineReplicaDir(dir, cluster.uid);
        record.launch.uid = cluster.uid;
      }
    } catch (err) {
      // Tenant-side problems (code that does not bundle, an environment not built) make a failed
      // replica the controller can report; a malformed request is the caller's error.
      if (err instanceof TesseraError && (err.code === "VALIDATION_FAILED" || err.code === "OVERLOADED")) {
        this.replicas.get(spec.clusterId)?.delete(spec.replicaId);
        this.gpus.release(gpuHolder);
        rmSync(dir, { recursive: true, force: true });
        throw err;
      }
      replica.failBeforeStart((err as Error).message);
      return replica.status();
    }
    // Stopped while its code was being prepared: leave nothing behind.
    if (replica.phase === "stopped") rmSync(dir, { recursive: true, force: true });
    else await replica.start();
    return replica.status();
  }

  async stopReplica(clusterId: string, replicaId: string, opts?: { drainTimeoutS?: number }): Promise<void> {
    await this.open();
    const replica = this.replicas.get(clusterId)?.get(replicaId);
    if (!replica) return;
    await replica.stop(opts?.drainTimeoutS ?? this.settings.drainTimeoutS);
  }

  async listReplicas(clusterId: string): Promise<ReplicaStatus[]> {
    await this.adopted;
    return [...(this.replicas.get(clusterId)?.values() ?? [])].map((r) => r.status());
  }

  /**
   * Drains and stops every replica under this data dir, in every cluster: replicas outlive a
   * provisioner on purpose, so whoever shuts a whole local platform down (`./dev up`, tests) does
   * this last. Returns how many were stopped.
   */
  async stopAllReplicas(opts?: { drainTimeoutS?: number }): Promise<number> {
    await this.open();
    const all = [...this.replicas].flatMap(([clusterId, byId]) =>
      [...byId.keys()].map((replicaId) => ({ clusterId, replicaId })),
    );
    await Promise.all(all.map((r) => this.stopReplica(r.clusterId, r.replicaId, opts)));
    return all.length;
  }

  /** The process serving a replica right now (pid + start time), for operators and tests. */
  async replicaProcess(clusterId: string, replicaId: string): Promise<ProcessIdentity | null> {
    await this.adopted;
    return this.replicas.get(clusterId)?.get(replicaId)?.process ?? null;
  }

  watch(listener: (event: ReplicaEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.adopted;
    for (const cluster of this.replicas.values()) for (const r of cluster.values()) r.detach();
    this.listeners.clear();
    if (this.ownsBuilder) await this.builder.close();
  }

  // ------------------------------------------------------------------ internals

  /** Waits for adoption; a closed driver no longer supervises, so it must not act on replicas. */
  private async open(): Promise<void> {
    await this.adopted;
    if (this.closed) throw new TesseraError("INTERNAL", "the local driver is closed");
  }

  private clustersDir(): string {
    return join(this.settings.dataDir, "clusters");
  }

  private clusterDir(clusterId: string): string {
    return join(this.clustersDir(), clusterId);
  }

  /** A cluster provisioned by this driver, or by an earlier one sharing the data dir. */
  private cluster(clusterId: string): ClusterRecord | undefined {
    let record = this.clusters.get(clusterId);
    if (!record) {
      record = readJson<ClusterRecord>(join(this.clusterDir(clusterId), "cluster.json"));
      if (record) this.clusters.set(clusterId, record);
    }
    return record;
  }

  private track(dir: string, record: ReplicaRecord): SupervisedReplica {
    const { clusterId, replicaId, deploymentId } = record;
    const byId = this.replicas.get(clusterId) ?? new Map<string, SupervisedReplica>();
    this.replicas.set(clusterId, byId);
    const replica: SupervisedReplica = new SupervisedReplica(dir, record, {
      settings: this.settings,
      emit: (status) => this.emit(status),
      log: (stream, line) => {
        try {
          this.onLog({ clusterId, replicaId, deploymentId, line, stream });
        } catch (err) {
          this.onError(err);
        }
      },
      onError: (err) => this.onError(err),
      pickPort: (preferred) => this.pickPort(clusterId, preferred, replicaId),
      forget: () => {
        if (this.replicas.get(clusterId)?.get(replicaId) !== replica) return;
        this.replicas.get(clusterId)?.delete(replicaId);
        this.gpus.release(`${clusterId}/${replicaId}`);
      },
    });
    byId.set(replicaId, replica);
    return replica;
  }

  private pickPort(clusterId: string, preferred: number | null, forReplica?: string): Promise<number> {
    const run = this.portLock.then(async () => {
      const cluster = this.cluster(clusterId);
      if (!cluster) throw new TesseraError("NOT_FOUND", `cluster ${clusterId} is not provisioned here`);
      const taken = new Set<number>();
      for (const [id, r] of this.replicas.get(clusterId) ?? [])
        if (id !== forReplica && r.record.port !== null) taken.add(r.record.port);
      const keep = preferred !== null && !taken.has(preferred) ? preferred : undefined;
      const port = await pickPort(cluster.ports, taken, keep, this.portCursor.get(clusterId));
      if (port !== keep) this.portCursor.set(clusterId, port + 1);
      return port;
    });
    this.portLock = run.catch(() => {});
    return run;
  }

  private resolveBasePython(): Promise<string> {
    this.basePython ??= resolvePython(this.settings.python).catch((err) => {
      this.basePython = undefined;
      throw err;
    });
    return this.basePython;
  }

  private emit(status: ReplicaStatus): void {
    const event: ReplicaEvent = { ...status, at: new Date() };
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.onError(err);
      }
    }
  }

  /** Re-attaches to every replica a previous driver left in the data dir. */
  private adoptFromDisk(): void {
    for (const clusterId of readdirSync(this.clustersDir())) {
      if (this.scope !== undefined && clusterId !== this.scope) continue;
      if (!SAFE_ID.test(clusterId) || !this.cluster(clusterId)) continue;
      const replicasDir = join(this.clusterDir(clusterId), "replicas");
      if (!existsSync(replicasDir)) continue;
      for (const replicaId of readdirSync(replicasDir)) {
        const dir = join(replicasDir, replicaId);
        const record = readJson<ReplicaRecord>(join(dir, "replica.json"));
        if (!record || record.replicaId !== replicaId || record.clusterId !== clusterId) {
          // A replica whose start never got as far as replica.json: nothing runs there.
          rmSync(dir, { recursive: true, force: true });
          continue;
        }
        try {
          this.gpus.restore(`${clusterId}/${replicaId}`, record.gpuDevices ?? [], record.gpus ?? 0);
          // Continue the round-robin after the ports in use, not from the start of the slice.
          if (record.port !== null && record.port >= (this.portCursor.get(clusterId) ?? 0))
            this.portCursor.set(clusterId, record.port + 1);
          this.track(dir, record).adopt();
        } catch (err) {
          this.onError(err);
        }
      }
    }
  }
}
