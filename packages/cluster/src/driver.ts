import type { CodeBundle, DeploymentConfig, EnvironmentSpec, RuntimeKind } from "@tessera/core";

/**
 * The one seam between the controller and where replicas actually run. The controller only
 * ever talks to this interface, so the local (process) and kubernetes drivers are swappable per
 * cluster without the controller changing. Every method is idempotent: calling it again with the
 * same arguments converges to the same state and never duplicates work.
 */
export interface ClusterDriver {
  readonly kind: "local" | "kubernetes";

  /** Create (or adopt, if it already exists) the isolated space of one tenant cluster. */
  provisionCluster(spec: ClusterSpec): Promise<ProvisionedCluster>;
  /** Stop every replica of the cluster and remove its space. Unknown clusters are a no-op. */
  destroyCluster(clusterId: string): Promise<void>;

  /**
   * Make an environment available to replicas of this cluster (built once per hash and reused).
   * Log lines are passed to `onLog` as the build runs.
   */
  ensureEnvironment(env: EnvironmentRequest, onLog: (line: string) => void): Promise<EnvironmentHandle>;

  /** Start one replica; resolves once the process/pod is created (not necessarily ready). */
  startReplica(spec: ReplicaSpec): Promise<ReplicaStatus>;
  /** Drain then stop a replica: in-flight requests finish within `drainTimeoutS`. Unknown ids are a no-op. */
  stopReplica(clusterId: string, replicaId: string, opts?: { drainTimeoutS?: number }): Promise<void>;
  /** The replicas the driver knows of in one cluster, with their current state. */
  listReplicas(clusterId: string): Promise<ReplicaStatus[]>;

  /**
   * Subscribe to replica state changes (crash, restart, ready...). Returns an unsubscribe
   * function; once no listener is left the driver holds no watch of its own (a user may drop it).
   */
  watch(listener: (event: ReplicaEvent) => void): () => void;

  /** Release driver resources (timers, watches). Does not stop replicas. */
  close(): Promise<void>;
}

export interface ClusterSpec {
  clusterId: string;
  orgId: string;
  orgSlug: string;
  name: string;
  quota: { cpus: number; memoryMb: number; gpus: number; maxReplicas: number };
  driverConfig?: Record<string, unknown>;
}

export interface ProvisionedCluster {
  clusterId: string;
  /** Driver-specific facts to keep in `clusters.driver_state` (directory, port range, namespace...). */
  state: Record<string, unknown>;
}

export interface EnvironmentRequest {
  clusterId: string;
  hash: string;
  runtime: RuntimeKind;
  spec: EnvironmentSpec;
}

export interface EnvironmentHandle {
  hash: string;
  /** Where the environment lives (venv dir, node_modules parent dir, or image/volume reference). */
  location: string;
  /** Wall time of the build when this call built it (absent when it was reused): metered as build time. */
  buildMs?: number;
}

export interface ReplicaSpec {
  clusterId: string;
  orgId: string;
  replicaId: string;
  deploymentId: string;
  deploymentName: string;
  applicationName: string;
  revisionId: string;
  revisionVersion: number;
  runtime: RuntimeKind;
  config: DeploymentConfig;
  code: CodeBundle;
  environment: EnvironmentHandle;
  /** Extra environment variables for the replica (handle URL/token...). Never platform secrets. */
  extraEnv?: Record<string, string>;
}

export type ReplicaPhase = "starting" | "ready" | "draining" | "stopped" | "failed";

export interface ReplicaStatus {
  replicaId: string;
  clusterId: string;
  deploymentId: string;
  revisionId: string;
  phase: ReplicaPhase;
  /** `http://host:port` once known. */
  address: string | null;
  restarts: number;
  reason?: string;
}

export type ReplicaEvent = ReplicaStatus & { at: Date };
