/**
 * How many replicas of one deployment the cluster quota still leaves room for, given what the
 * cluster's other deployments are set to run. Pure; the loop feeds it its current view of targets.
 */
export interface ClusterQuota {
  cpus: number;
  memoryMb: number;
  gpus: number;
  maxReplicas: number;
}

export interface ReplicaResources {
  cpus: number;
  memoryMb: number;
  gpus: number;
}

export interface QuotaUser {
  targetReplicas: number;
  resources: ReplicaResources;
}

// Fractional resources (0.3 GPU) summed in floating point must not lose a whole replica.
const EPSILON = 1e-9;

export function quotaMaxReplicas(
  quota: ClusterQuota,
  own: ReplicaResources,
  others: readonly QuotaUser[],
): number {
  let replicas = 0;
  let cpus = 0;
  let memoryMb = 0;
  let gpus = 0;
  for (const o of others) {
    const n = Math.max(0, o.targetReplicas);
    replicas += n;
    cpus += n * o.resources.cpus;
    memoryMb += n * o.resources.memoryMb;
    gpus += n * o.resources.gpus;
  }
  const limits = [quota.maxReplicas - replicas];
  if (own.cpus > 0) limits.push(Math.floor((quota.cpus - cpus) / own.cpus + EPSILON));
  if (own.memoryMb > 0) limits.push(Math.floor((quota.memoryMb - memoryMb) / own.memoryMb + EPSILON));
  if (own.gpus > 0) limits.push(Math.floor((quota.gpus - gpus) / own.gpus + EPSILON));
  return Math.max(0, Math.min(...limits.map((l) => (Number.isFinite(l) ? l : 0))));
}
