import { deploymentConfig, environmentHash } from "@tessera/core";
import { describe, expect, it } from "vitest";
import type { ReplicaSpec } from "../src/driver.js";
import {
  clusterObjects,
  DEFAULT_MANIFEST_OPTIONS,
  dnsLabel,
  environmentConfigMap,
  mapGpus,
  namespaceName,
  revisionObjects,
  workloadName,
} from "../src/kubernetes/index.js";
import { assignReplicaIds, podPhase } from "../src/kubernetes/replicas.js";
import { validateK8s } from "./support/k8s-validate.js";

const cluster = {
  clusterId: "0b6c8f2e-1111-4222-8333-944445555666",
  orgId: "7f1d2c3b-aaaa-4bbb-8ccc-dddddddddddd",
  orgSlug: "acme",
  name: "eu-1",
  quota: { cpus: 8, memoryMb: 16384, gpus: 2, maxReplicas: 20 },
};

function replica(over: Partial<ReplicaSpec> = {}, config: Record<string, unknown> = {}): ReplicaSpec {
  const cfg = deploymentConfig.parse({
    runtime: "python",
    entry: "handler:Dedupe",
    environment: { kind: "pip", requirements: ["numpy==1.26.4"] },
    resources: { cpus: 0.5, gpus: 0, memoryMb: 1024 },
    rollout: { maxSurge: 2, maxUnavailable: 1 },
    ...config,
  });
  return {
    clusterId: cluster.clusterId,
    orgId: cluster.orgId,
    replicaId: "r-1",
    deploymentId: "d0000000-0000-4000-8000-000000000001",
    deploymentName: "dedupe",
    applicationName: "custom-service",
    revisionId: "e0000000-0000-4000-8000-000000000002",
    revisionVersion: 3,
    runtime: "python",
    config: cfg,
    code: { files: { "handler.py": "class Dedupe: ...", "lib/util.py": "X = 1" }, encoding: "utf8" },
    environment: { hash: environmentHash("python", cfg.environment), location: "x" },
    extraEnv: { TESSERA_HANDLE_URL: "http://gateway/v1/acme/custom-service", TESSERA_PORT: "1" },
    ...over,
  };
}

describe("kubernetes manifests", () => {
  it("cluster objects are valid Kubernetes objects that isolate and bound the namespace", () => {
    const objects = clusterObjects(cluster, {
      ...DEFAULT_MANIFEST_OPTIONS,
      envVolume: { kind: "claim", sizeGi: 20, storageClassName: "nfs" },
    });
    for (const o of objects) validateK8s(o);
    const ns = namespaceName("acme", cluster.clusterId);
    expect(ns).toBe("tessera-acme-0b6c8f2e");
    const byKind = Object.fromEntries(objects.map((o) => [o.kind, o])) as Record<string, any>;
    expect(byKind.Namespace.metadata.labels["pod-security.kubernetes.io/enforce"]).toBe("restricted");
    expect(byKind.Namespace.metadata.labels["tessera.dev/cluster-id"]).toBe(cluster.clusterId);
    expect(byKind.ResourceQuota.spec.hard).toMatchObject({
      "requests.cpu": "8000m",
      "limits.memory": "16384Mi",
      "requests.nvidia.com/gpu": "2",
      pods: "20",
    });
    expect(byKind.NetworkPolicy.spec.podSelector).toEqual({});
    expect(byKind.NetworkPolicy.spec.ingress[0].from[0].namespaceSelector.matchLabels).toEqual({
      "kubernetes.io/metadata.name": "tessera-system",
    });
    expect(byKind.ServiceAccount.automountServiceAccountToken).toBe(false);
    expect(byKind.PersistentVolumeClaim.spec.accessModes).toEqual(["ReadWriteMany"]);
  });

  it("a revision becomes a valid, restricted Deployment with probes, resources, rollout and a Service", () => {
    const spec = replica();
    const { configMap, deployment, service } = revisionObjects(
      "tessera-acme-0b6c8f2e",
      spec,
      ["r-1", "r-2"],
      DEFAULT_MANIFEST_OPTIONS,
    );
    for (const o of [
      configMap,
      deployment,
      service,
      environmentConfigMap("ns", spec.environment.hash, spec.config.environment, {}),
    ])
      validateK8s(o);
    const d = deployment as any;
    expect(d.metadata.name).toBe(workloadName("custom-service", "dedupe", 3));
    expect(d.spec.replicas).toBe(2);
    expect(d.spec.strategy.rollingUpdate).toEqual({ maxSurge: 2, maxUnavailable: 1 });
    const pod = d.spec.template.spec;
    expect(pod.automountServiceAccountToken).toBe(false);
    const c = pod.containers[0];
    expect(c.image).toBe("tessera/runtime-python:0.1.0");
    expect(c.resources.limits).toEqual({ cpu: "500m", memory: "1024Mi" });
    expect(c.readinessProbe.httpGet.path).toBe("/-/ready");
    expect(c.livenessProbe.httpGet.path).toBe("/-/healthz");
    for (const ctr of [...pod.containers, ...pod.initContainers]) {
      expect(ctr.securityContext).toMatchObject({
        runAsNonRoot: true,
        allowPrivilegeEscalation: false,
        capabilities: { drop: ["ALL"] },
        seccompProfile: { type: "RuntimeDefault" },
      });
    }
    expect(pod.initContainers[0].env).toContainEqual({
      name: "TESSERA_ENV_HASH",
      value: spec.environment.hash,
    });
    // Files come back at their relative paths even though ConfigMap keys cannot contain '/'.
    const codeVolume = pod.volumes.find((v: any) => v.name === "code");
    expect(codeVolume.configMap.items.map((i: any) => i.path).sort()).toEqual(["handler.py", "lib/util.py"]);
    expect(c.env).toContainEqual({
      name: "TESSERA_HANDLE_URL",
      value: "http://gateway/v1/acme/custom-service",
    });
    expect((service as any).spec.selector["tessera.dev/deployment-id"]).toBe(spec.deploymentId);
    for (const key of [
      "tessera.dev/org-id",
      "tessera.dev/cluster-id",
      "tessera.dev/deployment-id",
      "tessera.dev/revision-id",
    ])
      expect(d.spec.template.metadata.labels[key]).toBeTruthy();
  });

  it("maps whole GPUs natively and rounds fractional GPUs up with an explanatory annotation", () => {
    expect(mapGpus(0, DEFAULT_MANIFEST_OPTIONS)).toEqual({ resource: null, count: 0 });
    expect(mapGpus(2, DEFAULT_MANIFEST_OPTIONS)).toEqual({ resource: "nvidia.com/gpu", count: 2 });
    const shared = { ...DEFAULT_MANIFEST_OPTIONS, fractionalGpuResource: "nvidia.com/gpu.shared" };
    const frac = mapGpus(0.3, shared);
    expect(frac).toMatchObject({ resource: "nvidia.com/gpu.shared", count: 1 });
    expect(frac.note).toMatch(/time-sliced or MIG/);
    const { deployment } = revisionObjects(
      "ns",
      replica({}, { resources: { cpus: 1, gpus: 0.3, memoryMb: 2048 } }),
      ["a"],
      shared,
    );
    validateK8s(deployment);
    const d = deployment as any;
    expect(d.spec.template.spec.containers[0].resources.limits["nvidia.com/gpu.shared"]).toBe("1");
    expect(d.metadata.annotations["tessera.dev/gpus-requested"]).toBe("0.3");
  });

  it("node runtimes without an environment get no init container; base64 bundles use binaryData", () => {
    const spec = replica(
      {
        runtime: "node",
        code: {
          files: { "handler.ts": Buffer.from("export class A {}").toString("base64") },
          encoding: "base64",
        },
      },
      { runtime: "node", entry: "handler.ts:A", environment: { kind: "none" } },
    );
    const { configMap, deployment } = revisionObjects("ns", spec, [], DEFAULT_MANIFEST_OPTIONS);
    validateK8s(configMap);
    validateK8s(deployment);
    expect((configMap as any).binaryData.f0).toBeTruthy();
    expect((deployment as any).spec.template.spec.initContainers).toEqual([]);
    expect((deployment as any).spec.template.spec.containers[0].image).toBe("tessera/runtime-node:0.1.0");
    expect((deployment as any).spec.replicas).toBe(0);
  });

  it("rejects code bundles too large for a ConfigMap with PAYLOAD_TOO_LARGE", () => {
    const big = replica({ code: { files: { "handler.py": "x".repeat(2 * 1024 * 1024) }, encoding: "utf8" } });
    expect(() => revisionObjects("ns", big, ["a"], DEFAULT_MANIFEST_OPTIONS)).toThrow(
      expect.objectContaining({ code: "PAYLOAD_TOO_LARGE" }),
    );
  });

  it("keeps names within DNS label limits and distinct after shortening", () => {
    const long = "a".repeat(60);
    const a = workloadName(long, "x", 1);
    const b = workloadName(long, "y", 1);
    expect(a.length).toBeLessThanOrEqual(47);
    expect(a).not.toBe(b);
    expect(dnsLabel(["9lives", "Foo_Bar"])).toMatch(/^[a-z][a-z0-9-]*[a-z0-9]$/);
  });

  it("pairs replica ids with pods stickily and reads pod phases", () => {
    const pod = (name: string, t: number, extra: Record<string, unknown> = {}) => ({
      metadata: { name, creationTimestamp: new Date(t).toISOString(), annotations: {}, ...extra },
      status: { phase: "Running", conditions: [{ type: "Ready", status: "True" }] },
    });
    const claimed = pod("p-old", 1, { annotations: { "tessera.dev/replica-id": "b" } });
    const { byReplica, toAnnotate } = assignReplicaIds(["a", "b"], [pod("p-new", 2), claimed]);
    expect(byReplica.get("b")?.metadata?.name).toBe("p-old");
    expect(byReplica.get("a")?.metadata?.name).toBe("p-new");
    expect(toAnnotate.map((x) => x.replicaId)).toEqual(["a"]);
    expect(
      podPhase({
        status: {
          phase: "Pending",
          containerStatuses: [{ name: "runtime", state: { waiting: { reason: "CrashLoopBackOff" } } }],
        },
      }).phase,
    ).toBe("failed");
    expect(podPhase({ metadata: { deletionTimestamp: "2026-01-01T00:00:00Z" } }).phase).toBe("draining");
    expect(
      podPhase({ status: { phase: "Running", conditions: [{ type: "Ready", status: "False" }] } }).phase,
    ).toBe("starting");
  });
});
