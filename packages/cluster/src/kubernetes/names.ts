import { createHash } from "node:crypto";

/** Label and annotation keys the driver writes; the gateway/operators can select on them too. */
export const LABELS = {
  managedBy: "app.kubernetes.io/managed-by",
  orgId: "tessera.dev/org-id",
  clusterId: "tessera.dev/cluster-id",
  deploymentId: "tessera.dev/deployment-id",
  revisionId: "tessera.dev/revision-id",
  /** The Kubernetes Deployment a pod belongs to: the selector of that Deployment. */
  workload: "tessera.dev/workload",
  envHash: "tessera.dev/env-hash",
} as const;

export const ANNOTATIONS = {
  /** JSON array of the replica ids the controller asked for on this revision's Deployment. */
  replicaIds: "tessera.dev/replica-ids",
  /** On a pod: which controller replica id the pod currently stands for. */
  replicaId: "tessera.dev/replica-id",
  gpuRequested: "tessera.dev/gpus-requested",
  gpuSharing: "tessera.dev/gpu-sharing",
  orgSlug: "tessera.dev/org-slug",
  clusterName: "tessera.dev/cluster-name",
  /** Kubernetes' own ReplicaSet scale-down hint: the lowest cost pod is removed first. */
  podDeletionCost: "controller.kubernetes.io/pod-deletion-cost",
} as const;

export const MANAGED_BY = "tessera";
export const FIELD_MANAGER = "tessera";

const shortHash = (s: string, n = 8) => createHash("sha256").update(s).digest("hex").slice(0, n);

/**
 * A DNS-1035 label (what Services and namespaces need, and what keeps pod names short): lower
 * case alphanumerics and '-', starting with a letter, at most `max` characters. Names that had to
 * be shortened or altered get a hash of the original appended so two inputs never collide.
 */
export function dnsLabel(parts: string[], max = 63): string {
  const raw = parts.join("-");
  const cleaned = raw
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/-+/g, "-")
    .replace(/^-+|-+$/g, "");
  const name = /^[a-z]/.test(cleaned) ? cleaned : `t-${cleaned}`;
  if (name === raw && name.length <= max) return name;
  const suffix = shortHash(raw);
  return `${name.slice(0, max - suffix.length - 1).replace(/-+$/, "")}-${suffix}`;
}

/** `tessera-<org slug>-<first 8 of the cluster id>`: readable, unique per cluster. */
export function namespaceName(orgSlug: string, clusterId: string): string {
  return dnsLabel(["tessera", orgSlug, clusterId.replace(/-/g, "").slice(0, 8)]);
}

/**
 * One Kubernetes Deployment per (tessera deployment, revision). Kept to 47 characters so that
 * ReplicaSet (`-<10 char hash>`) and pod (`-<5 chars>`) names derived from it stay DNS labels.
 */
export function workloadName(
  applicationName: string,
  deploymentName: string,
  revisionVersion: number,
): string {
  return dnsLabel([applicationName, deploymentName, `v${revisionVersion}`], 47);
}

/** One Service per tessera deployment, across its revisions. */
export function serviceName(applicationName: string, deploymentName: string): string {
  return dnsLabel([applicationName, deploymentName], 63);
}

export const codeConfigMapName = (revisionId: string) => dnsLabel(["code", revisionId]);
export const envConfigMapName = (hash: string) => dnsLabel(["env", hash]);
export const REPLICA_SERVICE_ACCOUNT = "tessera-replica";
export const ENV_VOLUME_CLAIM = "tessera-envs";
