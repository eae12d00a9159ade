/**
 * Control-plane jobs: the API enqueues them, the provisioner's workers run them. Every job names
 * the row it acts on; workers re-read desired state from Postgres, so a duplicated or retried job
 * converges instead of acting twice.
 */
export type ControlJob =
  | { kind: "provisionCluster"; clusterId: string }
  | { kind: "destroyCluster"; clusterId: string }
  | { kind: "buildEnvironment"; envHash: string; clusterId: string }
  | { kind: "deployRevision"; revisionId: string }
  | { kind: "scaleDeployment"; deploymentId: string }
  | { kind: "deleteDeployment"; deploymentId: string }
  | { kind: "deleteApplication"; applicationId: string };

export type ControlJobKind = ControlJob["kind"];

export interface JobQueue {
  /**
   * Enqueue a job. `dedupeKey` defaults to kind + subject id; enqueueing the same key again while
   * the first is pending is a no-op. Returns the job record id (a `jobs` row) for progress.
   */
  enqueue(job: ControlJob, opts?: { dedupeKey?: string; orgId?: string | null }): Promise<{ jobId: string }>;
}

export function jobSubjectId(job: ControlJob): string {
  switch (job.kind) {
    case "provisionCluster":
    case "destroyCluster":
      return job.clusterId;
    case "buildEnvironment":
      return job.envHash;
    case "deployRevision":
      return job.revisionId;
    case "scaleDeployment":
    case "deleteDeployment":
      return job.deploymentId;
    case "deleteApplication":
      return job.applicationId;
  }
}

export const CONTROL_QUEUE = "control";

/**
 * Things the control plane tells the data plane right away (over Redis pub/sub in production):
 * the gateway also re-reads Postgres periodically, so a lost notice only delays, never breaks.
 */
export type PlatformNotice =
  | { kind: "apiKeyRevoked"; prefix: string }
  | { kind: "routingChanged"; deploymentId: string };

export type PlatformNotifier = (notice: PlatformNotice) => Promise<void>;

/** Job counts of one BullMQ queue, for the operators' view. */
export interface QueueDepth {
  queue: string;
  waiting: number;
  active: number;
  delayed: number;
  failed: number;
  completed: number;
  paused: number;
}

/** Read access to the provisioner's queues (BullMQ in production), handed to the API for admins. */
export interface QueueMonitor {
  depths(): Promise<QueueDepth[]>;
}
