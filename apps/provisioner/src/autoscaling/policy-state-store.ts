import type { Redis } from "ioredis";
import type { PolicyState } from "./policy.js";

/**
 * Hysteresis state survives provisioner restarts in Redis (the look-back window alone cannot
 * tell that load has been low for a 10-minute downscale delay). Each entry records the replica
 * count it was computed for: when the count changed behind the loop's back (a wake, the operator)
 * the entry no longer applies and the policy starts fresh.
 */
export interface StoredPolicyState extends PolicyState {
  forReplicas: number;
}

const TTL_MS = 24 * 3600 * 1000;

export function policyStateKey(prefix: string, deploymentId: string): string {
  return `${prefix}autoscaler:state:${deploymentId}`;
}

function isTime(v: unknown): v is number | null {
  return v === null || (typeof v === "number" && Number.isFinite(v));
}

export function decodePolicyState(raw: string | null): StoredPolicyState | null {
  if (!raw) return null;
  try {
    const v = JSON.parse(raw) as Record<string, unknown>;
    if (
      typeof v.forReplicas !== "number" ||
      !isTime(v.upSince) ||
      !isTime(v.downSince) ||
      !isTime(v.zeroSince)
    )
      return null;
    return { forReplicas: v.forReplicas, upSince: v.upSince, downSince: v.downSince, zeroSince: v.zeroSince };
  } catch {
    return null;
  }
}

export async function loadPolicyStates(
  redis: Redis,
  prefix: string,
  ids: readonly string[],
): Promise<Map<string, StoredPolicyState>> {
  const out = new Map<string, StoredPolicyState>();
  if (ids.length === 0) return out;
  const values = await redis.mget(...ids.map((id) => policyStateKey(prefix, id)));
  ids.forEach((id, i) => {
    const s = decodePolicyState(values[i] ?? null);
    if (s) out.set(id, s);
  });
  return out;
}

export async function savePolicyStates(
  redis: Redis,
  prefix: string,
  states: ReadonlyMap<string, StoredPolicyState>,
): Promise<void> {
  if (states.size === 0) return;
  const pipeline = redis.pipeline();
  for (const [id, s] of states) pipeline.set(policyStateKey(prefix, id), JSON.stringify(s), "PX", TTL_MS);
  await pipeline.exec();
}

export async function clearPolicyState(redis: Redis, prefix: string, deploymentId: string): Promise<void> {
  await redis.del(policyStateKey(prefix, deploymentId));
}
