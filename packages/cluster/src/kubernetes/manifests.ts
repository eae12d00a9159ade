import {
  type CodeBundle,
  type DeploymentConfig,
  type EnvironmentSpec,
  RUNTIME_ENV,
  RUNTIME_PATHS,
  type RuntimeKind,
  TesseraError,
} from "@tessera/core";
import type { ClusterSpec, ReplicaSpec } from "../driver.js";
import {
  ANNOTATIONS,
  codeConfigMapName,
  ENV_VOLUME_CLAIM,
  envConfigMapName,
  LABELS,
  MANAGED_BY,
  namespaceName,
  REPLICA_SERVICE_ACCOUNT,
  serviceName,
  workloadName,
} from "./names.js";

/**
 * Pure builders of every object the Kubernetes driver applies. Kept free of I/O so tests can
 * validate each one against the Kubernetes schemas, and so a reconcile is "compute the objects,
 * server-side apply them": applying the same objects twice changes nothing.
 */

/** A plain Kubernetes object as sent to the API (JSON). */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

export interface ManifestOptions {
  /** Image registry prefix, e.g. `ghcr.io/acme` -> `ghcr.io/acme/tessera/runtime-python:<tag>`. Empty: Docker Hub. */
  registry: string;
  runtimeTag: string;
  /** Namespace and pod labels of the gateway: the only pods allowed to reach replicas. */
  gatewayNamespace: string;
  gatewayPodLabels: Record<string, string>;
  runtimePort: number;
  /** Where built environments live: a shared claim (built once per hash) or a per-pod emptyDir. */
  envVolume:
    | { kind: "emptyDir"; sizeGi: number }
    | { kind: "claim"; storageClassName?: string; sizeGi: number };
  /**
   * Resource name whole-GPU requests use, and the one fractional requests round up to. Operators
   * who share GPUs set e.g. `nvidia.com/gpu.shared` (time-slicing with renamed resources) or a MIG
   * profile such as `nvidia.com/mig-1g.10gb`.
   */
  gpuResource: string;
  fractionalGpuResource: string;
  /** Grace period pods get to drain in-flight requests after SIGTERM. */
  drainTimeoutS: number;
}

export const DEFAULT_MANIFEST_OPTIONS: ManifestOptions = {
  registry: "",
  runtimeTag: "0.1.0",
  gatewayNamespace: "tessera-system",
  gatewayPodLabels: { "app.kubernetes.io/name": "tessera-gateway" },
  runtimePort: 8000,
  envVolume: { kind: "emptyDir", sizeGi: 10 },
  gpuResource: "nvidia.com/gpu",
  fractionalGpuResource: "nvidia.com/gpu",
  drainTimeoutS: 30,
};

const RUNTIME_UID = 10001;
const CODE_DIR = "/code";
const ENVS_DIR = "/envs";
const ENV_SPEC_DIR = "/env-spec";
/** ConfigMaps are capped at 1 MiB by etcd; leave headroom for metadata. */
const MAX_CODE_BYTES = 950 * 1024;

export function runtimeImage(
  runtime: RuntimeKind,
  o: Pick<ManifestOptions, "registry" | "runtimeTag">,
): string {
  const repo = `tessera/runtime-${runtime}`;
  return `${o.registry ? `${o.registry.replace(/\/+$/, "")}/` : ""}${repo}:${o.runtimeTag}`;
}

export const cpuQuantity = (cpus: number) => `${Math.max(1, Math.round(cpus * 1000))}m`;
export const memoryQuantity = (mb: number) => `${Math.max(1, Math.round(mb))}Mi`;

export function clusterLabels(spec: Pick<ClusterSpec, "clusterId" | "orgId">): Record<string, string> {
  return { [LABELS.managedBy]: MANAGED_BY, [LABELS.orgId]: spec.orgId, [LABELS.clusterId]: spec.clusterId };
}

/** The namespace and everything that isolates and bounds it. Order matters: namespace first. */
export function clusterObjects(spec: ClusterSpec, o: ManifestOptions): K8sObject[] {
  const ns = namespaceName(spec.orgSlug, spec.clusterId);
  const labels = clusterLabels(spec);
  const q = spec.quota;
  const hard: Record<string, string> = {
    "requests.cpu": cpuQuantity(q.cpus),
    "limits.cpu": cpuQuantity(q.cpus),
    "requests.memory": memoryQuantity(q.memoryMb),
    "limits.memory": memoryQuantity(q.memoryMb),
    // Fractional GPU requests round up to whole devices, so the quota does too.
    [`requests.${o.gpuResource}`]: String(Math.ceil(q.gpus)),
    pods: String(q.maxReplicas),
  };
  if (o.fractionalGpuResource !== o.gpuResource)
    hard[`requests.${o.fractionalGpuResource}`] = String(Math.ceil(q.gpus));
  const objects: K8sObject[] = [
    {
      apiVersion: "v1",
      kind: "Namespace",
      metadata: {
        name: ns,
        labels: {
          ...labels,
          "pod-security.kubernetes.io/enforce": "restricted",
          "pod-security.kubernetes.io/enforce-version": "latest",
          "pod-security.kubernetes.io/warn": "restricted",
          "pod-security.kubernetes.io/audit": "restricted",
        },
        annotations: { [ANNOTATIONS.orgSlug]: spec.orgSlug, [ANNOTATIONS.clusterName]: spec.name },
      },
    },
    {
      apiVersion: "v1",
      kind: "ResourceQuota",
      metadata: { name: "tessera-quota", namespace: ns, labels },
      spec: { hard },
    },
    {
      // Every container must carry requests/limits for the quota to admit it; the defaults
      // cover any container that does not say, and max keeps one pod within the whole quota.
      apiVersion: "v1",
      kind: "LimitRange",
      metadata: { name: "tessera-limits", namespace: ns, labels },
      spec: {
        limits: [
          {
            type: "Container",
            default: {
              cpu: cpuQuantity(Math.min(1, q.cpus)),
              memory: memoryQuantity(Math.min(512, q.memoryMb)),
            },
            defaultRequest: {
              cpu: cpuQuantity(Math.min(0.1, q.cpus)),
              memory: memoryQuantity(Math.min(128, q.memoryMb)),
            },
            max: { cpu: cpuQuantity(q.cpus), memory: memoryQuantity(q.memoryMb) },
          },
        ],
      },
    },
    {
      // Default deny: nothing reaches replicas except the gateway's pods. Egress stays open
      // because environment builds download packages and handles call back through the gateway.
      apiVersion: "networking.k8s.io/v1",
      kind: "NetworkPolicy",
      metadata: { name: "tessera-gateway-only", namespace: ns, labels },
      spec: {
        podSelector: {},
        policyTypes: ["Ingress"],
        ingress: [
          {
            from: [
              {
                namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": o.gatewayNamespace } },
                podSelector: { matchLabels: o.gatewayPodLabels },
              },
            ],
            ports: [{ protocol: "TCP", port: o.runtimePort }],
          },
        ],
      },
    },
    {
      apiVersion: "v1",
      kind: "ServiceAccount",
      metadata: { name: REPLICA_SERVICE_ACCOUNT, namespace: ns, labels },
      automountServiceAccountToken: false,
    },
  ];
  if (o.envVolume.kind === "claim") {
    objects.push({
      apiVersion: "v1",
      kind: "PersistentVolumeClaim",
      metadata: { name: ENV_VOLUME_CLAIM, namespace: ns, labels },
      spec: {
        // Every replica pod mounts it, on any node: it must be ReadWriteMany (NFS, CephFS, EFS...).
        accessModes: ["ReadWriteMany"],
        resources: { requests: { storage: `${o.envVolume.sizeGi}Gi` } },
        ...(o.envVolume.storageClassName ? { storageClassName: o.envVolume.storageClassName } : {}),
      },
    });
  }
  return objects;
}

/**
 * The files the in-pod builder (`tessera-build-env` in the runtime images) installs from. Rendered
 * here so the builder stays a few lines of shell: requirements.txt for pip, environment.yml for
 * conda (micromamba), package.json for npm.
 */
export function environmentFiles(spec: EnvironmentSpec): Record<string, string> {
  const files: Record<string, string> = { kind: spec.kind, "spec.json": JSON.stringify(spec) };
  switch (spec.kind) {
    case "none":
      break;
    case "pip":
      files["requirements.txt"] = `${spec.requirements.join("\n")}\n`;
      if (spec.python) files["python-version"] = spec.python;
      break;
    case "conda": {
      // JSON is valid YAML, and it spares us quoting rules for arbitrary requirement strings.
      files["environment.yml"] = JSON.stringify(
        { channels: spec.channels, dependencies: spec.dependencies },
        null,
        2,
      );
      break;
    }
    case "npm":
      files["package.json"] = JSON.stringify(
        { name: "tessera-env", private: true, dependencies: spec.dependencies },
        null,
        2,
      );
      break;
  }
  return files;
}

export function environmentConfigMap(
  namespace: string,
  hash: string,
  spec: EnvironmentSpec,
  labels: Record<string, string>,
): K8sObject {
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name: envConfigMapName(hash), namespace, labels: { ...labels, [LABELS.envHash]: hash } },
    data: environmentFiles(spec),
    immutable: true,
  };
}

/**
 * ConfigMap keys cannot hold '/', so files are stored under `f0..fN` and the volume's `items`
 * put each back at its relative path. Base64 bundles go to binaryData unchanged.
 */
export function codeConfigMap(
  namespace: string,
  spec: ReplicaSpec,
  labels: Record<string, string>,
): { configMap: K8sObject; items: { key: string; path: string }[] } {
  const paths = Object.keys(spec.code.files).sort();
  const items = paths.map((path, i) => ({ key: `f${i}`, path }));
  const entries = Object.fromEntries(items.map(({ key, path }) => [key, spec.code.files[path] as string]));
  const size = Object.values(entries).reduce((n, v) => n + Buffer.byteLength(v), 0);
  if (size > MAX_CODE_BYTES)
    throw new TesseraError(
      "PAYLOAD_TOO_LARGE",
      `code bundle is ${size} bytes; the kubernetes driver delivers code in a ConfigMap, limited to ${MAX_CODE_BYTES} bytes`,
    );
  const isBase64 = (spec.code as CodeBundle).encoding === "base64";
  return {
    configMap: {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: codeConfigMapName(spec.revisionId), namespace, labels },
      ...(isBase64 ? { binaryData: entries } : { data: entries }),
      immutable: true,
    },
    items,
  };
}

export interface GpuMapping {
  resource: string | null;
  count: number;
  /** Set when the request was fractional and had to be rounded up to whole devices. */
  note?: string;
}

/**
 * Kubernetes cannot request a fraction of a device. Whole numbers map 1:1; a fraction rounds up
 * to whole devices of `fractionalGpuResource`, which only shares a physical GPU if the operator
 * configured NVIDIA time-slicing or MIG for that resource name.
 */
export function mapGpus(
  gpus: number,
  o: Pick<ManifestOptions, "gpuResource" | "fractionalGpuResource">,
): GpuMapping {
  if (gpus <= 0) return { resource: null, count: 0 };
  if (Number.isInteger(gpus)) return { resource: o.gpuResource, count: gpus };
  const count = Math.ceil(gpus);
  return {
    resource: o.fractionalGpuResource,
    count,
    note:
      `requested ${gpus} GPU; Kubernetes schedules whole devices, so this asks for ${count} x ${o.fractionalGpuResource}. ` +
      "The fraction is only honoured when that resource is a time-sliced or MIG share (NVIDIA device plugin config).",
  };
}

function containerSecurityContext() {
  return {
    runAsNonRoot: true,
    runAsUser: RUNTIME_UID,
    runAsGroup: RUNTIME_UID,
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ["ALL"] },
    seccompProfile: { type: "RuntimeDefault" },
  };
}

export function replicaLabels(spec: ReplicaSpec, workload: string): Record<string, string> {
  return {
    [LABELS.managedBy]: MANAGED_BY,
    [LABELS.orgId]: spec.orgId,
    [LABELS.clusterId]: spec.clusterId,
    [LABELS.deploymentId]: spec.deploymentId,
    [LABELS.revisionId]: spec.revisionId,
    [LABELS.workload]: workload,
  };
}

/**
 * The Deployment of one revision of one tessera deployment, its code ConfigMap, and the
 * per-deployment Service. `replicaIds` are the controller's replica ids: their count is the
 * Deployment's `replicas`.
 */
export function revisionObjects(
  namespace: string,
  spec: ReplicaSpec,
  replicaIds: string[],
  o: ManifestOptions,
): { configMap: K8sObject; deployment: K8sObject; service: K8sObject } {
  const c: DeploymentConfig = spec.config;
  const workload = workloadName(spec.applicationName, spec.deploymentName, spec.revisionVersion);
  const labels = replicaLabels(spec, workload);
  const { configMap, items } = codeConfigMap(namespace, spec, labels);
  const gpu = mapGpus(c.resources.gpus, o);
  const cpu = cpuQuantity(c.resources.cpus);
  const memory = memoryQuantity(c.resources.memoryMb);
  const resources = {
    requests: { cpu, memory, ...(gpu.resource ? { [gpu.resource]: String(gpu.count) } : {}) },
    limits: { cpu, memory, ...(gpu.resource ? { [gpu.resource]: String(gpu.count) } : {}) },
  };
  const image = runtimeImage(spec.runtime, o);
  const hasEnv = spec.config.environment.kind !== "none";
  const envDir = hasEnv ? `${ENVS_DIR}/${spec.environment.hash}` : "";

  const env: { name: string; value?: string; valueFrom?: unknown }[] = [
    { name: RUNTIME_ENV.PORT, value: String(o.runtimePort) },
    { name: RUNTIME_ENV.HOST, value: "0.0.0.0" },
    { name: RUNTIME_ENV.CODE_DIR, value: CODE_DIR },
    { name: RUNTIME_ENV.ENTRY, value: c.entry },
    { name: RUNTIME_ENV.USER_CONFIG, value: JSON.stringify(c.userConfig) },
    { name: RUNTIME_ENV.DEPLOYMENT, value: spec.deploymentName },
    { name: RUNTIME_ENV.REVISION, value: spec.revisionId },
    // A Deployment's pods are interchangeable, so the pod name is the per-process identity;
    // the controller's replica id is attached to the pod as an annotation instead.
    { name: RUNTIME_ENV.REPLICA, valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
    { name: RUNTIME_ENV.APPLICATION, value: spec.applicationName },
    { name: RUNTIME_ENV.MAX_BODY_BYTES, value: String(c.maxBodyBytes) },
    { name: RUNTIME_ENV.EXPOSE_TRACEBACKS, value: c.exposeTracebacks ? "1" : "0" },
    { name: RUNTIME_ENV.DRAIN_TIMEOUT_S, value: String(o.drainTimeoutS) },
    { name: "TESSERA_ENV_DIR", value: envDir },
    { name: "HOME", value: "/tmp" },
    { name: "PYTHONDONTWRITEBYTECODE", value: "1" },
  ];
  // Extra variables never replace the runtime contract's (and a duplicate name would make the
  // apply fail: `env` is a list keyed by name).
  const taken = new Set(env.map((e) => e.name));
  for (const [name, value] of Object.entries(spec.extraEnv ?? {}).sort(([a], [b]) => (a < b ? -1 : 1)))
    if (!taken.has(name)) env.push({ name, value });

  const hc = c.healthCheck;
  const probe = (path: string) => ({
    httpGet: { path, port: "http" },
    periodSeconds: Math.max(1, Math.round(hc.periodS)),
    timeoutSeconds: Math.max(1, Math.ceil(hc.timeoutS)),
    failureThreshold: hc.failureThreshold,
  });

  const volumes: Record<string, unknown>[] = [
    { name: "code", configMap: { name: configMap.metadata.name, items } },
    { name: "tmp", emptyDir: { sizeLimit: "1Gi" } },
  ];
  const initContainers: Record<string, unknown>[] = [];
  if (hasEnv) {
    volumes.push(
      o.envVolume.kind === "claim"
        ? { name: "envs", persistentVolumeClaim: { claimName: ENV_VOLUME_CLAIM } }
        : { name: "envs", emptyDir: { sizeLimit: `${o.envVolume.sizeGi}Gi` } },
      { name: "env-spec", configMap: { name: envConfigMapName(spec.environment.hash) } },
    );
    initContainers.push({
      // Builds the environment into <envs>/<hash> unless a complete build is already there
      // (shared claim), under a lock so concurrent pods build it once.
      name: "build-env",
      image,
      command: ["tessera-build-env"],
      env: [
        { name: "TESSERA_ENV_HASH", value: spec.environment.hash },
        { name: "TESSERA_ENV_DIR", value: envDir },
        { name: "TESSERA_ENV_SPEC_DIR", value: ENV_SPEC_DIR },
        { name: "HOME", value: "/tmp" },
      ],
      resources,
      securityContext: containerSecurityContext(),
      volumeMounts: [
        { name: "envs", mountPath: ENVS_DIR },
        { name: "env-spec", mountPath: ENV_SPEC_DIR, readOnly: true },
        { name: "tmp", mountPath: "/tmp" },
      ],
    });
  }

  const annotations: Record<string, string> = { [ANNOTATIONS.replicaIds]: JSON.stringify(replicaIds) };
  if (gpu.note) {
    annotations[ANNOTATIONS.gpuRequested] = String(c.resources.gpus);
    annotations[ANNOTATIONS.gpuSharing] = gpu.note;
  }
  const startupPeriod = Math.max(1, Math.round(hc.periodS));

  const deployment: K8sObject = {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: workload, namespace, labels, annotations },
    spec: {
      replicas: replicaIds.length,
      revisionHistoryLimit: 2,
      progressDeadlineSeconds: Math.max(60, Math.ceil(hc.startupTimeoutS) + 60),
      selector: { matchLabels: { [LABELS.workload]: workload } },
      strategy: {
        type: "RollingUpdate",
        rollingUpdate: { maxSurge: c.rollout.maxSurge, maxUnavailable: c.rollout.maxUnavailable },
      },
      template: {
        metadata: {
          labels,
          annotations: gpu.note ? { [ANNOTATIONS.gpuSharing]: gpu.note } : {},
        },
        spec: {
          serviceAccountName: REPLICA_SERVICE_ACCOUNT,
          automountServiceAccountToken: false,
          // Service links would put every Service's address in the tenant's environment.
          enableServiceLinks: false,
          terminationGracePeriodSeconds: o.drainTimeoutS + 5,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: RUNTIME_UID,
            runAsGroup: RUNTIME_UID,
            fsGroup: RUNTIME_UID,
            seccompProfile: { type: "RuntimeDefault" },
          },
          initContainers,
          containers: [
            {
              name: "runtime",
              image,
              ports: [{ name: "http", containerPort: o.runtimePort, protocol: "TCP" }],
              env,
              resources,
              securityContext: containerSecurityContext(),
              startupProbe: {
                ...probe(RUNTIME_PATHS.healthz),
                failureThreshold: Math.max(1, Math.ceil(hc.startupTimeoutS / startupPeriod)),
              },
              livenessProbe: probe(RUNTIME_PATHS.healthz),
              readinessProbe: probe(RUNTIME_PATHS.ready),
              volumeMounts: [
                { name: "code", mountPath: CODE_DIR, readOnly: true },
                { name: "tmp", mountPath: "/tmp" },
                ...(hasEnv ? [{ name: "envs", mountPath: ENVS_DIR, readOnly: true }] : []),
              ],
            },
          ],
          volumes,
        },
      },
    },
  };

  const deploymentLabels = { ...labels };
  delete deploymentLabels[LABELS.revisionId];
  delete deploymentLabels[LABELS.workload];
  const service: K8sObject = {
    apiVersion: "v1",
    kind: "Service",
    metadata: {
      name: serviceName(spec.applicationName, spec.deploymentName),
      namespace,
      labels: deploymentLabels,
    },
    spec: {
      type: "ClusterIP",
      selector: { [LABELS.deploymentId]: spec.deploymentId, [LABELS.managedBy]: MANAGED_BY },
      ports: [{ name: "http", port: 80, targetPort: "http", protocol: "TCP" }],
    },
  };
  return { configMap, deployment, service };
}
