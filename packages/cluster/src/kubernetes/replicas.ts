import type { ReplicaPhase, ReplicaStatus } from "../driver.js";
import { ANNOTATIONS, LABELS } from "./names.js";

/** The parts of a Pod the driver reads (works for typed client objects and raw watch JSON alike). */
export interface PodLike {
  metadata?: {
    name?: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    creationTimestamp?: string | Date;
    deletionTimestamp?: string | Date;
  };
  status?: {
    phase?: string;
    podIP?: string;
    reason?: string;
    message?: string;
    conditions?: { type?: string; status?: string }[];
    containerStatuses?: {
      name?: string;
      ready?: boolean;
      restartCount?: number;
      state?: {
        waiting?: { reason?: string; message?: string };
        terminated?: { reason?: string; exitCode?: number };
      };
    }[];
    initContainerStatuses?: {
      name?: string;
      state?: {
        waiting?: { reason?: string; message?: string };
        terminated?: { reason?: string; exitCode?: number };
      };
    }[];
  };
}

/** Waiting reasons that will not fix themselves: the replica is failed, not starting. */
const FATAL_WAITING = new Set([
  "CrashLoopBackOff",
  "ImagePullBackOff",
  "ErrImagePull",
  "InvalidImageName",
  "CreateContainerConfigError",
  "CreateContainerError",
  "RunContainerError",
]);

export function podPhase(pod: PodLike): { phase: ReplicaPhase; reason?: string } {
  if (pod.metadata?.deletionTimestamp) return { phase: "draining", reason: "pod is terminating" };
  const s = pod.status ?? {};
  if (s.phase === "Succeeded") return { phase: "stopped", reason: "process exited" };
  if (s.phase === "Failed") return { phase: "failed", reason: s.reason ?? s.message ?? "pod failed" };
  for (const c of [...(s.initContainerStatuses ?? []), ...(s.containerStatuses ?? [])]) {
    const waiting = c.state?.waiting;
    if (waiting?.reason && FATAL_WAITING.has(waiting.reason))
      return {
        phase: "failed",
        reason: `${c.name}: ${waiting.reason}${waiting.message ? `: ${waiting.message}` : ""}`,
      };
    const term = c.state?.terminated;
    if (c.name === "build-env" && term && term.exitCode !== 0)
      return { phase: "failed", reason: `environment build failed (exit ${term.exitCode})` };
  }
  const ready = s.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
  if (s.phase === "Running" && ready) return { phase: "ready" };
  return { phase: "starting" };
}

export function podRestarts(pod: PodLike): number {
  return (pod.status?.containerStatuses ?? []).reduce((n, c) => n + (c.restartCount ?? 0), 0);
}

export function podAddress(pod: PodLike, port: number): string | null {
  const ip = pod.status?.podIP;
  if (!ip) return null;
  return ip.includes(":") ? `http://[${ip}]:${port}` : `http://${ip}:${port}`;
}

const createdAt = (p: PodLike) => {
  const t = p.metadata?.creationTimestamp;
  return t ? new Date(t).getTime() : 0;
};

/**
 * Pair the controller's replica ids with the pods of one revision's Deployment. Pods keep the id
 * annotated on them; live pods without one take the unclaimed ids oldest-first. Returns the
 * pairing and the pods whose annotation must be written so the pairing survives a restart.
 */
export function assignReplicaIds(
  replicaIds: string[],
  pods: PodLike[],
): { byReplica: Map<string, PodLike>; toAnnotate: { pod: PodLike; replicaId: string }[] } {
  const wanted = new Set(replicaIds);
  const byReplica = new Map<string, PodLike>();
  const free: PodLike[] = [];
  const sorted = [...pods].sort(
    (a, b) => createdAt(a) - createdAt(b) || (a.metadata?.name ?? "").localeCompare(b.metadata?.name ?? ""),
  );
  for (const pod of sorted) {
    const id = pod.metadata?.annotations?.[ANNOTATIONS.replicaId];
    if (id && wanted.has(id) && !byReplica.has(id)) byReplica.set(id, pod);
    else if (!pod.metadata?.deletionTimestamp && !id) free.push(pod);
  }
  const toAnnotate: { pod: PodLike; replicaId: string }[] = [];
  for (const id of replicaIds) {
    if (byReplica.has(id)) continue;
    const pod = free.shift();
    if (!pod) break;
    byReplica.set(id, pod);
    toAnnotate.push({ pod, replicaId: id });
  }
  return { byReplica, toAnnotate };
}

export function replicaStatus(
  ids: { replicaId: string; clusterId: string; deploymentId: string; revisionId: string },
  pod: PodLike | undefined,
  port: number,
): ReplicaStatus {
  if (!pod)
    return {
      ...ids,
      phase: "starting",
      address: null,
      restarts: 0,
      reason: "waiting for a pod to be scheduled",
    };
  const { phase, reason } = podPhase(pod);
  return {
    ...ids,
    phase,
    address: podAddress(pod, port),
    restarts: podRestarts(pod),
    ...(reason ? { reason } : {}),
  };
}

export const podLabel = (pod: PodLike, key: keyof typeof LABELS) => pod.metadata?.labels?.[LABELS[key]];
