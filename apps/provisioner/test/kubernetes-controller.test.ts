import { namespaceName, workloadName } from "@tessera/cluster";
import { driverCalls, FakeApiServer, provisionerRbacGrants, validateK8s } from "@tessera/cluster/testing";
import { applications, auditLog, clusters, deployments, jobs, replicas, revisions } from "@tessera/db";
import { and, eq, inArray } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defaultDriverFactory, type Provisioner } from "../src/index.js";
import { createTestPlatform, type TestPlatform, waitFor } from "./support/platform.js";

/**
 * The unchanged controller on the kubernetes driver: the real provisioner (BullMQ worker,
 * reconcile loop, the production driver factory) serves a cluster row with `driver: kubernetes`
 * whose kubeconfig points at an in-memory Kubernetes API server, driven through the tRPC API.
 */
const server = new FakeApiServer();
let platform: TestPlatform;
let provisioner: Provisioner;
let api: Awaited<ReturnType<TestPlatform["user"]>>["api"];
let operator: Awaited<ReturnType<TestPlatform["user"]>>["api"];
let orgId: string;
let clusterId: string;
let applicationId: string;
let ns: string;

const APP = "shop";
const DEP = "dedupe";
const config = (numReplicas: number) => ({
  runtime: "python",
  entry: "handler:Dedupe",
  environment: { kind: "pip", requirements: ["numpy==1.26.4"] },
  resources: { cpus: 0.5, gpus: 0, memoryMb: 256 },
  numReplicas,
  rollout: { maxSurge: 1, maxUnavailable: 0 },
});
const code = (version: number) => ({
  files: {
    "handler.py": `class Dedupe:\n    version = ${version}\n    def __call__(self, body):\n        return body\n`,
  },
});

const db = () => platform.tdb.db;

async function jobDone(jobId: string) {
  return waitFor(`job ${jobId} to finish`, async () => {
    const [row] = await db().select().from(jobs).where(eq(jobs.id, jobId));
    return row?.state === "succeeded" || row?.state === "failed" ? row : undefined;
  });
}

async function activeReplicas(deploymentId: string) {
  return db()
    .select()
    .from(replicas)
    .where(
      and(
        eq(replicas.deploymentId, deploymentId),
        inArray(replicas.state, ["starting", "ready", "draining"]),
      ),
    );
}

/** Every pod of the workload, with the replica id the driver paired it with. */
const podsOf = (workload: string) =>
  server.list("pods", ns).filter((p) => p.metadata.labels?.["tessera.dev/workload"] === workload);

/** The replica rows are ready, and their addresses are exactly the pod IPs of the workload. */
async function readyOnPods(deploymentId: string, revisionId: string, workload: string, n: number) {
  return waitFor(`${n} ready replicas of ${workload} on its pods`, async () => {
    const rows = await activeReplicas(deploymentId);
    const pods = podsOf(workload).filter((p) => p.status?.podIP);
    const podAddresses = pods.map((p) => `http://${p.status.podIP}:8000`).sort();
    const ready = rows.filter((r) => r.state === "ready" && r.revisionId === revisionId);
    return rows.length === n &&
      ready.length === n &&
      pods.length === n &&
      JSON.stringify(ready.map((r) => r.address).sort()) === JSON.stringify(podAddresses)
      ? ready
      : undefined;
  });
}

beforeAll(async () => {
  await server.start();
  // The production factory: what a provisioner makes of a `driver: kubernetes` row.
  platform = await createTestPlatform("k8sctl", () => (cluster) => defaultDriverFactory({})(cluster));
  const u = await platform.user("ops@example.com");
  api = u.api;
  orgId = u.orgId;
  operator = (await platform.user("operator@example.com", { platformAdmin: true })).api;
  provisioner = platform.startProvisioner();
  await provisioner.ready;
});

afterAll(async () => {
  await platform?.close();
  await server.stop();
});

describe("controller on the kubernetes driver", () => {
  let depId: string;
  let v1: string;
  let v2: string;

  it("a tenant's kubernetes cluster waits for the operator's driver config; only operators may set it", async () => {
    const created = await api.clusters.create({ orgId, name: "eu-1", driver: "kubernetes" });
    clusterId = created.cluster.id;
    const [org] = await api.orgs.list();
    ns = namespaceName(org!.slug, clusterId);
    if (!process.env.KUBERNETES_SERVICE_HOST) {
      // No kubeconfig and not inside a pod: the reason says so, and nothing was created.
      const failed = await waitFor("provisioning to fail", async () => {
        const [c] = await db().select().from(clusters).where(eq(clusters.id, clusterId));
        return c?.state === "failed" ? c : undefined;
      });
      expect(failed.stateReason).toMatch(/kubeconfig/);
      expect(server.get("namespaces", undefined, ns)).toBeUndefined();
    }
    const driverConfig = { kubeconfig: server.kubeconfig(), drainTimeoutS: 5 };
    await expect(api.admin.setClusterDriverConfig({ clusterId, driverConfig })).rejects.toMatchObject({
      code: "FORBIDDEN",
    });
    // Unknown keys are refused, not stored: a typo must not silently fall back to a default.
    const withUnknownKey = { kubeconfig: "x", shell: "rm" };
    await expect(
      operator.admin.setClusterDriverConfig({ clusterId, driverConfig: withUnknownKey }),
    ).rejects.toMatchObject({ code: "BAD_REQUEST" });
    await operator.admin.setClusterDriverConfig({ clusterId, driverConfig });
    const [audit] = await db()
      .select()
      .from(auditLog)
      .where(and(eq(auditLog.action, "admin.setClusterDriverConfig"), eq(auditLog.targetId, clusterId)));
    expect(audit?.orgId).toBe(orgId);
    expect(audit?.details).toMatchObject({ driverConfigKeys: ["kubeconfig", "drainTimeoutS"] });
    expect(JSON.stringify(audit?.details)).not.toContain("test-token");
    await expect(
      operator.admin.setClusterDriverConfig({
        clusterId: "00000000-0000-4000-8000-000000000000",
        driverConfig,
      }),
    ).rejects.toMatchObject({ code: "NOT_FOUND" });
    // The tenant's view never carries the credential.
    const seen = await api.clusters.get({ orgId, clusterId });
    expect(JSON.stringify(seen)).not.toContain("test-token");
    expect(seen).not.toHaveProperty("driverConfig");
    applicationId = (await api.applications.create({ orgId, clusterId, name: APP })).id;
  });

  it("provisions the tenant namespace with its guard rails, all schema-valid", async () => {
    const row = await waitFor("cluster ready", async () => {
      const [c] = await db().select().from(clusters).where(eq(clusters.id, clusterId));
      if (c?.state === "failed") throw new Error(`cluster failed: ${c.stateReason}`);
      return c?.state === "ready" ? c : undefined;
    });
    expect(row.driverState).toMatchObject({ namespace: ns, serviceAccount: "tessera-replica" });
    const namespace = server.get("namespaces", undefined, ns);
    expect(namespace?.metadata.labels["tessera.dev/cluster-id"]).toBe(clusterId);
    expect(namespace?.metadata.labels["tessera.dev/org-id"]).toBe(orgId);
    validateK8s(namespace as never);
    for (const [resource, name] of [
      ["resourcequotas", "tessera-quota"],
      ["limitranges", "tessera-limits"],
      ["networkpolicies", "tessera-gateway-only"],
      ["serviceaccounts", "tessera-replica"],
    ] as const) {
      const stored = server.get(resource, ns, name);
      expect(stored, `${resource}/${name}`).toBeDefined();
      validateK8s(stored as never);
    }
  });

  it("a quota change through the API is applied to the namespace's ResourceQuota", async () => {
    const quota = { cpus: 6, memoryMb: 8192, gpus: 0, maxReplicas: 12 };
    const r = await api.clusters.update({ orgId, clusterId, quota });
    expect((await jobDone(r.jobId)).state).toBe("succeeded");
    const stored = server.get("resourcequotas", ns, "tessera-quota");
    expect(stored?.spec.hard).toMatchObject({ "requests.cpu": "6000m", pods: "12" });
    validateK8s(stored as never);
  });

  it("deploys through the API: a Deployment and Service per revision, replicas ready on pod addresses", async () => {
    const r = await api.deployments.deploy({
      orgId,
      applicationId,
      name: DEP,
      config: config(2),
      code: code(1),
      prevVersion: 0,
    });
    depId = r.deployment.id;
    v1 = r.revision.id;
    const job = await jobDone(r.jobId);
    expect(job).toMatchObject({ state: "succeeded", kind: "deployRevision" });
    const workload = workloadName(APP, DEP, 1);
    const dep = server.get("deployments", ns, workload);
    expect(dep?.spec.replicas).toBe(2);
    expect(dep?.metadata.labels["tessera.dev/revision-id"]).toBe(v1);
    expect(dep?.spec.strategy).toMatchObject({ type: "RollingUpdate" });
    validateK8s(dep as never);
    const services = server.list("services", ns);
    expect(services).toHaveLength(1);
    validateK8s(services[0] as never);
    const env = server.get("configmaps", ns, `env-${r.revision.envHash}`);
    expect(env?.data["requirements.txt"]).toBe("numpy==1.26.4\n");
    validateK8s(env as never);

    const ready = await readyOnPods(depId, v1, workload, 2);
    for (const rep of ready) expect(rep.address).toMatch(/^http:\/\/10\.244\.\d+\.\d+:8000$/);
    const [row] = await db().select().from(deployments).where(eq(deployments.id, depId));
    expect(row).toMatchObject({ liveRevisionId: v1, state: "ready" });
    expect(platform.routingNotices).toContain(depId);
  });

  it("scaling patches the Deployment's replicas up and down", async () => {
    const up = await api.deployments.updateScaling({ orgId, deploymentId: depId, numReplicas: 3 });
    expect((await jobDone(up.jobId)).state).toBe("succeeded");
    const workload = workloadName(APP, DEP, 1);
    await waitFor("spec.replicas 3", () => server.get("deployments", ns, workload)?.spec.replicas === 3);
    await readyOnPods(depId, v1, workload, 3);

    const down = await api.deployments.updateScaling({ orgId, deploymentId: depId, numReplicas: 1 });
    expect((await jobDone(down.jobId)).state).toBe("succeeded");
    await waitFor("spec.replicas 1", () => server.get("deployments", ns, workload)?.spec.replicas === 1);
    const [left] = await readyOnPods(depId, v1, workload, 1);
    const ids = JSON.parse(
      server.get("deployments", ns, workload)?.metadata.annotations["tessera.dev/replica-ids"],
    );
    expect(ids).toEqual([left!.id]);
  });

  it("a restarted provisioner adopts the running pods instead of starting new ones", async () => {
    const workload = workloadName(APP, DEP, 1);
    const [before] = await activeReplicas(depId);
    const podNames = podsOf(workload).map((p) => p.metadata.name);
    await provisioner.close({ force: true });
    provisioner = platform.startProvisioner();
    await provisioner.ready;
    const up = await api.deployments.updateScaling({ orgId, deploymentId: depId, numReplicas: 2 });
    expect((await jobDone(up.jobId)).state).toBe("succeeded");
    const ready = await readyOnPods(depId, v1, workload, 2);
    expect(ready.map((r) => r.id)).toContain(before!.id);
    expect(ready.find((r) => r.id === before!.id)?.address).toBe(before!.address);
    expect(podsOf(workload).map((p) => p.metadata.name)).toEqual(expect.arrayContaining(podNames));
  });

  it("a new revision rolls out as its own Deployment; the old one is removed once it is live", async () => {
    const r = await api.deployments.deploy({
      orgId,
      applicationId,
      name: DEP,
      config: config(2),
      code: code(2),
      prevVersion: 1,
    });
    v2 = r.revision.id;
    expect((await jobDone(r.jobId)).state).toBe("succeeded");
    const [row] = await db().select().from(deployments).where(eq(deployments.id, depId));
    expect(row).toMatchObject({ liveRevisionId: v2 });
    const workload = workloadName(APP, DEP, 2);
    validateK8s(server.get("deployments", ns, workload) as never);
    expect(server.get("configmaps", ns, `code-${v2}`)?.data).toBeDefined();
    await readyOnPods(depId, v2, workload, 2);
    await waitFor("v1 Deployment, pods and code gone", () =>
      server.get("deployments", ns, workloadName(APP, DEP, 1)) === undefined &&
      podsOf(workloadName(APP, DEP, 1)).length === 0 &&
      server.get("configmaps", ns, `code-${v1}`) === undefined
        ? true
        : undefined,
    );
    expect(server.list("services", ns)).toHaveLength(1);
  });

  it("a pod restarted by Kubernetes keeps its replica row, which follows the new state", async () => {
    const workload = workloadName(APP, DEP, 2);
    const pod = podsOf(workload)[0]!;
    const replicaId = pod.metadata.annotations?.["tessera.dev/replica-id"];
    expect(replicaId).toBeDefined();
    server.restartPod(ns, pod.metadata.name);
    await waitFor("restart recorded on the row", async () => {
      const [r] = await db().select().from(replicas).where(eq(replicas.id, replicaId));
      return r?.state === "ready" && r.restarts >= 1 ? r : undefined;
    });
  });

  it("a revision whose pods crash-loop fails with the reason, and the live one keeps serving", async () => {
    const live = await readyOnPods(depId, v2, workloadName(APP, DEP, 2), 2);
    server.autoReady = false;
    try {
      const r = await api.deployments.deploy({
        orgId,
        applicationId,
        name: DEP,
        config: config(2),
        code: code(3),
        prevVersion: 2,
      });
      const workload = workloadName(APP, DEP, 3);
      await waitFor("a v3 pod crash-looping", () => {
        const pods = podsOf(workload);
        for (const p of pods)
          if (p.status?.containerStatuses?.[0]?.state?.waiting?.reason !== "CrashLoopBackOff")
            server.crashLoop(ns, p.metadata.name);
        return pods.length > 0;
      });
      const job = await jobDone(r.jobId);
      expect(job.state).toBe("failed");
      const [failed] = await db().select().from(revisions).where(eq(revisions.id, r.revision.id));
      expect(failed).toMatchObject({ state: "failed" });
      expect(failed?.failureReason).toMatch(/CrashLoopBackOff/);
      const [row] = await db().select().from(deployments).where(eq(deployments.id, depId));
      expect(row).toMatchObject({ liveRevisionId: v2 });
      await waitFor("v3 Deployment removed", () =>
        server.get("deployments", ns, workload) === undefined ? true : undefined,
      );
    } finally {
      server.autoReady = true;
    }
    const still = await readyOnPods(depId, v2, workloadName(APP, DEP, 2), 2);
    expect(still.map((r) => r.id).sort()).toEqual(live.map((r) => r.id).sort());
  });

  it("re-pointing a cluster at another Kubernetes API provisions it there with a new driver", async () => {
    const other = new FakeApiServer();
    await other.start();
    try {
      const c = await api.clusters.create({ orgId, name: "eu-2", driver: "kubernetes" });
      const [org] = await api.orgs.list();
      const ns2 = namespaceName(org!.slug, c.cluster.id);
      await operator.admin.setClusterDriverConfig({
        clusterId: c.cluster.id,
        driverConfig: { kubeconfig: server.kubeconfig() },
      });
      await waitFor("eu-2 on the first API", () => server.get("namespaces", undefined, ns2));
      await waitFor("eu-2 ready", async () => {
        const [row] = await db().select().from(clusters).where(eq(clusters.id, c.cluster.id));
        return row?.state === "ready" ? row : undefined;
      });
      await operator.admin.setClusterDriverConfig({
        clusterId: c.cluster.id,
        driverConfig: { kubeconfig: other.kubeconfig() },
      });
      await waitFor("eu-2 provisioned again", async () => {
        const [row] = await db().select().from(clusters).where(eq(clusters.id, c.cluster.id));
        return row?.state === "ready" ? row : undefined;
      });
      expect(other.get("namespaces", undefined, ns2)).toBeDefined();
      for (const [resource, name] of [
        ["resourcequotas", "tessera-quota"],
        ["networkpolicies", "tessera-gateway-only"],
      ] as const)
        validateK8s(other.get(resource, ns2, name) as never);
      const del = await api.clusters.delete({ orgId, clusterId: c.cluster.id });
      expect((await jobDone(del.jobId)).state).toBe("succeeded");
      expect(other.get("namespaces", undefined, ns2)).toBeUndefined();
    } finally {
      await other.stop();
    }
  });

  it("deleting the deployment, then the application and cluster, cascades through Kubernetes", async () => {
    const del = await api.deployments.delete({ orgId, deploymentId: depId });
    expect((await jobDone(del.jobId)).state).toBe("succeeded");
    await waitFor("no Deployments, pods or Services left", () =>
      server.list("deployments", ns).length === 0 &&
      server.list("pods", ns).length === 0 &&
      server.list("services", ns).length === 0
        ? true
        : undefined,
    );
    expect(await activeReplicas(depId)).toEqual([]);

    const delApp = await api.applications.delete({ orgId, applicationId });
    expect((await jobDone(delApp.jobId)).state).toBe("succeeded");
    await waitFor("application deleted", async () => {
      const [a] = await db().select().from(applications).where(eq(applications.id, applicationId));
      return a?.deletedAt ? a : undefined;
    });
    const delCluster = await api.clusters.delete({ orgId, clusterId });
    expect((await jobDone(delCluster.jobId)).state).toBe("succeeded");
    await waitFor("namespace gone", () => (server.get("namespaces", undefined, ns) ? undefined : true));
    expect(server.list("configmaps", ns)).toEqual([]);
    const [c] = await db().select().from(clusters).where(eq(clusters.id, clusterId));
    expect(c?.state).toBe("deleted");
  });

  it("every Kubernetes call the controller's work caused is granted by the provisioner's RBAC", () => {
    const granted = provisionerRbacGrants();
    const used = driverCalls(server.seen);
    expect(used.length).toBeGreaterThan(10);
    expect(used.filter((u) => !granted.has(u))).toEqual([]);
  });
});
