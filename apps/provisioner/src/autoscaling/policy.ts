import type { AutoscalingConfig } from "@tessera/core";

/**
 * The autoscaling policy: a pure function of (config, metrics window, current replicas, now, the
 * previous call's state). No I/O, no clock: everything it needs comes in, everything it wants to
 * remember goes out in `state`, so it can be tested on its own and its state persisted anywhere.
 *
 * Semantics follow Ray Serve's default policy: desired = ceil(average ongoing requests /
 * targetOngoingRequests), clamped to [minReplicas, maxReplicas] and the cluster quota; a change is
 * applied only after the desired value has stayed on the same side of the current value for the
 * upscale / downscale delay. Scaling from zero skips the delay (a request is waiting).
 */

/** One point of the metrics window: total ongoing requests of the deployment across gateways. */
export interface OngoingPoint {
  /** Epoch milliseconds. */
  at: number;
  ongoing: number;
}

/**
 * What the policy remembers between calls: since when (epoch ms) the proposed value has been
 * above / below the current one, and since when traffic has been zero. `null` = not now.
 */
export interface PolicyState {
  upSince: number | null;
  downSince: number | null;
  zeroSince: number | null;
}

export const INITIAL_POLICY_STATE: PolicyState = Object.freeze({
  upSince: null,
  downSince: null,
  zeroSince: null,
});

/**
 * Why the decision is what it is. Changes: `upscale`, `downscale`, `scale_to_zero`, `cold_start`,
 * `bounds` (config min/max moved), `quota` (cluster quota shrank below current). No change:
 * `steady`, `upscale_pending`, `downscale_pending`. (`wake` is used by the wake path, not here.)
 */
export type ScalingReason =
  | "upscale"
  | "downscale"
  | "scale_to_zero"
  | "cold_start"
  | "bounds"
  | "quota"
  | "wake"
  | "steady"
  | "upscale_pending"
  | "downscale_pending";

export interface PolicyInput {
  config: Pick<
    AutoscalingConfig,
    "minReplicas" | "maxReplicas" | "targetOngoingRequests" | "upscaleDelayS" | "downscaleDelayS"
  >;
  /**
   * Samples of total ongoing requests, evenly spaced in time (the loop buckets them), oldest
   * first, covering the look-back period. An empty window means no traffic was seen.
   */
  window: readonly OngoingPoint[];
  currentReplicas: number;
  /** Epoch milliseconds. */
  now: number;
  state?: PolicyState | null;
  /** Most replicas the cluster quota leaves room for (undefined = no quota bound). */
  quotaMaxReplicas?: number;
}

export interface PolicyDecision {
  desired: number;
  reason: ScalingReason;
  state: PolicyState;
  /** Average total ongoing requests over the window. */
  avgOngoing: number;
  /** ceil(avgOngoing / targetOngoingRequests) before any clamping. */
  rawDesired: number;
  /** rawDesired clamped to [min, max] and the quota: what the policy is heading for. */
  proposed: number;
  /** Upper bound applied: min(maxReplicas, quotaMaxReplicas). */
  upperBound: number;
}

// Guards ceil() against float noise: 6 / 2 computed as 3.0000000001 must stay 3.
const EPSILON = 1e-9;

export function averageOngoing(window: readonly OngoingPoint[]): number {
  if (window.length === 0) return 0;
  let sum = 0;
  for (const p of window) sum += Math.max(0, Number.isFinite(p.ongoing) ? p.ongoing : 0);
  return sum / window.length;
}

export function decideReplicas(input: PolicyInput): PolicyDecision {
  const { config, window, now } = input;
  const current = Math.max(0, Math.floor(input.currentReplicas));
  const prev = input.state ?? INITIAL_POLICY_STATE;

  const quota =
    input.quotaMaxReplicas === undefined
      ? Number.POSITIVE_INFINITY
      : Math.max(0, Math.floor(input.quotaMaxReplicas));
  const upper = Math.min(config.maxReplicas, quota);
  // The quota wins over minReplicas: a cluster cannot run more than it is allowed to.
  const lower = Math.min(config.minReplicas, upper);

  const avgOngoing = averageOngoing(window);
  const hasTraffic = avgOngoing > 0;
  const rawDesired = hasTraffic ? Math.ceil(avgOngoing / config.targetOngoingRequests - EPSILON) : 0;
  const proposed = Math.min(upper, Math.max(lower, rawDesired));

  const zeroSince = hasTraffic ? null : (prev.zeroSince ?? now);
  const base = { avgOngoing, rawDesired, proposed, upperBound: upper };
  const decide = (
    desired: number,
    reason: ScalingReason,
    upSince: number | null,
    downSince: number | null,
  ) => ({
    ...base,
    desired,
    reason,
    state: { upSince, downSince, zeroSince },
  });

  // Out of bounds (config or quota changed): operator intent, applied at once.
  if (current > upper) return decide(upper, upper < config.maxReplicas ? "quota" : "bounds", null, null);
  if (current < lower) return decide(lower, "bounds", null, null);

  // Cold start: a request is waiting for a deployment with no replicas; waiting out a delay
  // would only time it out.
  if (current === 0 && hasTraffic) {
    const desired = Math.min(upper, Math.max(1, proposed));
    return desired > 0 ? decide(desired, "cold_start", null, null) : decide(0, "quota", null, null);
  }

  if (proposed > current) {
    const upSince = prev.upSince ?? now;
    if (now - upSince >= config.upscaleDelayS * 1000) return decide(proposed, "upscale", null, null);
    return decide(current, "upscale_pending", upSince, null);
  }

  if (proposed < current) {
    const downSince = prev.downSince ?? now;
    const downReady = now - downSince >= config.downscaleDelayS * 1000;
    if (proposed === 0) {
      // Zero needs zero traffic for the whole delay, not just "below current" for it.
      if (zeroSince !== null && now - zeroSince >= config.downscaleDelayS * 1000)
        return decide(0, "scale_to_zero", null, null);
      if (downReady && current > 1) return decide(1, "downscale", null, null);
      return decide(current, "downscale_pending", null, downSince);
    }
    if (downReady) return decide(proposed, "downscale", null, null);
    return decide(current, "downscale_pending", null, downSince);
  }

  return decide(current, "steady", null, null);
}

/** Whether a decision changes the replica count (and so must be written and acted on). */
export function isChange(decision: PolicyDecision, currentReplicas: number): boolean {
  return decision.desired !== currentReplicas;
}
