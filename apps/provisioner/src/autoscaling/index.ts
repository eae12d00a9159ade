export {
  type AutoscalerHandle,
  type AutoscalerOptions,
  type AutoscalerStats,
  startAutoscaler,
} from "./autoscaler.js";
export {
  averageOngoing,
  decideReplicas,
  INITIAL_POLICY_STATE,
  isChange,
  type OngoingPoint,
  type PolicyDecision,
  type PolicyInput,
  type PolicyState,
  type ScalingReason,
} from "./policy.js";
export { policyStateKey } from "./policy-state-store.js";
export { type ClusterQuota, quotaMaxReplicas, type ReplicaResources } from "./quota.js";
export { type EffectiveScaling, replicaResources, resolveScaling } from "./scaling-source.js";
export { aggregateOngoingSamples, type WindowOptions } from "./window.js";
