import type {
  ClusterDriver,
  ClusterSpec,
  EnvironmentHandle,
  EnvironmentRequest,
  ProvisionedCluster,
  ReplicaEvent,
  ReplicaSpec,
  ReplicaStatus,
} from "@tessera/cluster";

/**
 * A ClusterDriver whose replicas are records, not processes, with behaviour read from the
 * deployed code so tests can script outcomes through the public API: code containing
 * `CRASH_ON_START` fails right after start, `NEVER_READY` stays starting; an environment spec
 * naming a `does-not-exist` package fails its build; `gateEnvironments()` holds builds until
 * released. Readiness and crashes are reported asynchronously, as real drivers do. It keeps a
 * timeline of ready replica counts per deployment for assertions about availability.
 */
export class ScriptedDriver implements ClusterDriver {
  readonly kind = "local" as const;
  readonly replicas = new Map<string, ReplicaStatus & { spec: ReplicaSpec }>();
  readonly provisioned = new Set<string>();
  readonly builtEnvironments: string[] = [];
  /** Ready replica count per deployment after every change. */
  readonly readyTimeline = new Map<string, number[]>();
  readonly startedSpecs: ReplicaSpec[] = [];
  private readonly listeners = new Set<(e: ReplicaEvent) => void>();
  private gate: Promise<void> | null = null;
  private openGate: (() => void) | null = null;

  async provisionCluster(spec: ClusterSpec): Promise<ProvisionedCluster> {
    this.provisioned.add(spec.clusterId);
    return { clusterId: spec.clusterId, state: { workDir: `/clusters/${spec.clusterId}` } };
  }

  async destroyCluster(clusterId: string): Promise<void> {
    for (const r of [...this.replicas.values()])
      if (r.clusterId === clusterId) this.replicas.delete(r.replicaId);
    this.provisioned.delete(clusterId);
  }

  gateEnvironments(): () => void {
    this.gate = new Promise((r) => {
      this.openGate = r;
    });
    return () => {
      this.openGate?.();
      this.gate = null;
    };
  }

  async ensureEnvironment(
    env: EnvironmentRequest,
    onLog: (line: string) => void,
  ): Promise<EnvironmentHandle> {
    onLog(`building ${env.spec.kind} environment ${env.hash}`);
    if (this.gate) await this.gate;
    if (JSON.stringify(env.spec).includes("does-not-exist")) {
      onLog("ERROR: No matching distribution found for does-not-exist");
      throw new Error("pip install exited with status 1");
    }
    onLog("done");
    const reused = this.builtEnvironments.includes(env.hash);
    this.builtEnvironments.push(env.hash);
    return { hash: env.hash, location: `/envs/${env.hash}`, ...(reused ? {} : { buildMs: 1500 }) };
  }

  async startReplica(spec: ReplicaSpec): Promise<ReplicaStatus> {
    const existing = this.replicas.get(spec.replicaId);
    if (existing) return existing;
    const status = {
      replicaId: spec.replicaId,
      clusterId: spec.clusterId,
      deploymentId: spec.deploymentId,
      revisionId: spec.revisionId,
      phase: "starting" as const,
      address: null,
      restarts: 0,
      spec,
    };
    this.replicas.set(spec.replicaId, status);
    this.startedSpecs.push(spec);
    const code = Object.values(spec.code.files).join("\n");
    setTimeout(() => {
      const r = this.replicas.get(spec.replicaId);
      if (r?.phase !== "starting") return;
      if (code.includes("CRASH_ON_START")) {
        this.replicas.delete(spec.replicaId);
        this.emit({ ...r, phase: "failed", reason: "exited with code 1: SyntaxError: invalid syntax" });
      } else if (!code.includes("NEVER_READY")) {
        this.emit(
          this.update(r, { phase: "ready", address: `http://127.0.0.1:${20000 + this.replicas.size}` }),
        );
      }
    }, 30);
    return status;
  }

  async stopReplica(_clusterId: string, replicaId: string): Promise<void> {
    const r = this.replicas.get(replicaId);
    if (!r) return;
    this.replicas.delete(replicaId);
    this.emit({ ...r, phase: "stopped" });
  }

  /** The replica's process dies (a crash the controller has to notice and repair). */
  kill(replicaId: string): void {
    const r = this.replicas.get(replicaId);
    if (!r) throw new Error(`no replica ${replicaId}`);
    this.replicas.delete(replicaId);
    this.emit({ ...r, phase: "failed", reason: "killed by signal SIGKILL" });
  }

  async listReplicas(clusterId: string): Promise<ReplicaStatus[]> {
    return [...this.replicas.values()]
      .filter((r) => r.clusterId === clusterId)
      .map(({ spec: _spec, ...status }) => status);
  }

  watch(listener: (event: ReplicaEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Shared by every provisioner of a test, as a real cluster outlives a provisioner. */
  async close(): Promise<void> {}

  readyCount(deploymentId: string): number {
    return [...this.replicas.values()].filter((r) => r.deploymentId === deploymentId && r.phase === "ready")
      .length;
  }

  private update(r: ReplicaStatus & { spec: ReplicaSpec }, changes: Partial<ReplicaStatus>) {
    Object.assign(r, changes);
    return r;
  }

  private emit(status: ReplicaStatus): void {
    const timeline = this.readyTimeline.get(status.deploymentId) ?? [];
    timeline.push(this.readyCount(status.deploymentId));
    this.readyTimeline.set(status.deploymentId, timeline);
    const { spec: _spec, ...plain } = status as ReplicaStatus & { spec?: ReplicaSpec };
    for (const l of this.listeners) l({ ...plain, at: new Date() });
  }
}
