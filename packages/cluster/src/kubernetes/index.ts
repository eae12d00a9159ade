export { KubernetesDriver, type KubernetesDriverOptions } from "./driver.js";
export { loadKubeConfig } from "./kubeconfig.js";
export * from "./manifests.js";
export * from "./names.js";
export { assignReplicaIds, podPhase, replicaStatus } from "./replicas.js";
