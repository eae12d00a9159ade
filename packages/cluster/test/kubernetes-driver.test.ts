import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deploymentConfig, environmentHash } from "@tessera/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ReplicaEvent, ReplicaSpec } from "../src/driver.js";
import { createDriver } from "../src/factory.js";
import { KubernetesDriver, loadKubeConfig, namespaceName, workloadName } from "../src/kubernetes/index.js";
import { FakeApiServer } from "./support/fake-apiserver.js";
import { validateK8s } from "./support/k8s-validate.js";
import { driverCalls, provisionerRbacGrants } from "./support/rbac.js";
import { waitFor } from "./support/wait-for.js";

const cluster = {
  clusterId: "0b6c8f2e-1111-4222-8333-944445555666",
  orgId: "7f1d2c3b-aaaa-4bbb-8ccc-dddddddddddd",
  orgSlug: "acme",
  name: "eu-1",
  quota: { cpus: 8, memoryMb: 16384, gpus: 1, maxReplicas: 20 },
};
const NS = namespaceName(cluster.orgSlug, cluster.clusterId);
const config = deploymentConfig.parse({
  runtime: "python",
  entry: "handler:Dedupe",
  environment: { kind: "pip", requirements: ["numpy==1.26.4"] },
  resources: { cpus: 0.5, gpus: 0, memoryMb: 512 },
});
const envHash = environmentHash("python", config.environment);

function replica(replicaId: string, revisionVersion = 1): ReplicaSpec {
  return {
    clusterId: cluster.clusterId,
    orgId: cluster.orgId,
    replicaId,
    deploymentId: "d0000000-0000-4000-8000-000000000001",
    deploymentName: "dedupe",
    applicationName: "custom-service",
    revisionId: `e0000000-0000-4000-8000-00000000000${revisionVersion}`,
    revisionVersion,
    runtime: "python",
    config,
    code: { files: { "handler.py": `class Dedupe:\n    version = ${revisionVersion}\n` }, encoding: "utf8" },
    environment: { hash: envHash, location: "" },
  };
}

describe("KubernetesDriver against a Kubernetes API server", () => {
  const server = new FakeApiServer();
  let driver: KubernetesDriver;
  const drivers: KubernetesDriver[] = [];
  const events: ReplicaEvent[] = [];
  const errors: unknown[] = [];
  const newDriver = () => {
    const d = new KubernetesDriver({
      kubeConfig: loadKubeConfig({ kubeconfig: server.kubeconfig() }),
      retryBaseDelayMs: 5,
      envVolume: { kind: "claim", sizeGi: 20, storageClassName: "nfs" },
      onError: (e) => errors.push(e),
    });
    drivers.push(d);
    return d;
  };
  const podsOf = (workload: string) =>
    server.list("pods", NS).filter((p) => p.metadata.labels?.["tessera.dev/workload"] === workload);

  beforeAll(async () => {
    await server.start();
    driver = newDriver();
  });
  afterAll(async () => {
    for (const d of drivers) await d.close();
    await server.stop();
  });

  it("createDriver picks the kubernetes driver from the cluster row and rejects unknown drivers", async () => {
    const d = createDriver({ driver: "kubernetes", driverConfig: { kubeconfig: server.kubeconfig() } });
    expect(d.kind).toBe("kubernetes");
    await d.close();
    const path = join(mkdtempSync(join(tmpdir(), "kubeconfig-")), "config");
    writeFileSync(path, server.kubeconfig());
    const byPath = createDriver({ driver: "kubernetes", driverConfig: { kubeconfig: path } });
    expect(await byPath.listReplicas(cluster.clusterId)).toEqual([]);
    await byPath.close();
    if (!process.env.KUBERNETES_SERVICE_HOST)
      expect(() => createDriver({ driver: "kubernetes" })).toThrow(
        expect.objectContaining({ code: "VALIDATION_FAILED" }),
      );
    expect(() => createDriver({ driver: "nomad" })).toThrow(
      expect.objectContaining({ code: "VALIDATION_FAILED" }),
    );
    expect(() =>
      createDriver({ driver: "kubernetes", driverConfig: { kubeconfig: "/no/such/file" } }),
    ).toThrow(expect.objectContaining({ code: "VALIDATION_FAILED" }));
    // The same contract the operator API checks: a typo is an error, not a silent default.
    expect(() =>
      createDriver({
        driver: "kubernetes",
        driverConfig: { kubeconfig: server.kubeconfig(), envStorgeClass: "nfs" },
      }),
    ).toThrow(
      expect.objectContaining({
        code: "VALIDATION_FAILED",
        message: expect.stringMatching(/envStorgeClass/),
      }),
    );
  });

  it("provisions the namespace and its guard rails, and a second provision changes nothing", async () => {
    const result = await driver.provisionCluster(cluster);
    expect(result.state.namespace).toBe(NS);
    const ns = server.get("namespaces", undefined, NS);
    expect(ns?.metadata.labels["pod-security.kubernetes.io/enforce"]).toBe("restricted");
    for (const [resource, name] of [
      ["resourcequotas", "tessera-quota"],
      ["limitranges", "tessera-limits"],
      ["networkpolicies", "tessera-gateway-only"],
      ["serviceaccounts", "tessera-replica"],
    ] as const) {
      const stored = server.get(resource, NS, name);
      expect(stored, `${resource}/${name}`).toBeDefined();
      validateK8s(stored as never);
    }
    const writes = server.writes.length;
    const rv = server.get("resourcequotas", NS, "tessera-quota")?.metadata.resourceVersion;
    await newDriver().provisionCluster(cluster);
    expect(server.writes.length).toBe(writes);
    expect(server.get("resourcequotas", NS, "tessera-quota")?.metadata.resourceVersion).toBe(rv);
  });

  it("records an environment for the in-pod builder; unknown clusters are NOT_FOUND", async () => {
    const logs: string[] = [];
    const handle = await driver.ensureEnvironment(
      { clusterId: cluster.clusterId, hash: envHash, runtime: "python", spec: config.environment },
      (l) => logs.push(l),
    );
    expect(handle.hash).toBe(envHash);
    expect(handle.location).toContain(envHash);
    expect(server.get("configmaps", NS, `env-${envHash}`)?.data["requirements.txt"]).toBe("numpy==1.26.4\n");
    expect(logs.join("\n")).toMatch(/build-env init container/);
    await expect(
      driver.ensureEnvironment(
        {
          clusterId: "00000000-0000-4000-8000-000000000000",
          hash: envHash,
          runtime: "python",
          spec: config.environment,
        },
        () => {},
      ),
    ).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("starts replicas as one Deployment per revision, derives ready replicas from pods, and re-applying is a no-op", async () => {
    await driver.startReplica(replica("r1"));
    const first = await driver.startReplica(replica("r2"));
    expect(first.replicaId).toBe("r2");
    const workload = workloadName("custom-service", "dedupe", 1);
    const dep = server.get("deployments", NS, workload);
    expect(dep?.spec.replicas).toBe(2);
    expect(JSON.parse(dep?.metadata.annotations["tessera.dev/replica-ids"])).toEqual(["r1", "r2"]);
    validateK8s(dep as never);
    const ready = await waitFor("two ready replicas", async () => {
      const list = await driver.listReplicas(cluster.clusterId);
      return list.length === 2 && list.every((r) => r.phase === "ready") ? list : null;
    });
    for (const r of ready) expect(r.address).toMatch(/^http:\/\/10\.244\.0\.\d+:8000$/);
    expect(new Set(ready.map((r) => r.address)).size).toBe(2);

    // The pairing replica id -> pod lives on the pods, so a fresh driver (provisioner restart) sees the same.
    const again = await newDriver().listReplicas(cluster.clusterId);
    expect(Object.fromEntries(again.map((r) => [r.replicaId, r.address]))).toEqual(
      Object.fromEntries(ready.map((r) => [r.replicaId, r.address])),
    );

    const writes = server.writes.length;
    const rv = server.get("deployments", NS, workload)?.metadata.resourceVersion;
    await driver.startReplica(replica("r1"));
    await driver.startReplica(replica("r2"));
    expect(server.writes.slice(writes)).toEqual([]);
    expect(server.get("deployments", NS, workload)?.metadata.resourceVersion).toBe(rv);
  });

  it("retries 409 conflicts, including a real concurrent update of the replica list", async () => {
    server.failNext("patch", "deployments", 409, 2);
    await driver.startReplica(replica("r3"));
    const workload = workloadName("custom-service", "dedupe", 1);
    expect(server.get("deployments", NS, workload)?.spec.replicas).toBe(3);

    // Two provisioner processes (no shared lock) add different replicas at once: the
    // resourceVersion precondition turns the lost update into a 409, and the retry keeps both.
    const other = newDriver();
    await Promise.all([driver.startReplica(replica("r4")), other.startReplica(replica("r5"))]);
    const ids = JSON.parse(
      server.get("deployments", NS, workload)?.metadata.annotations["tessera.dev/replica-ids"],
    );
    expect(ids.sort()).toEqual(["r1", "r2", "r3", "r4", "r5"]);
    expect(server.get("deployments", NS, workload)?.spec.replicas).toBe(5);
    await waitFor(
      "five ready",
      async () =>
        (await driver.listReplicas(cluster.clusterId)).filter((r) => r.phase === "ready").length === 5,
    );
  });

  it("stopReplica removes exactly the pod that stands for the replica", async () => {
    const before = await driver.listReplicas(cluster.clusterId);
    const victim = before.find((r) => r.replicaId === "r3");
    const others = before.filter((r) => r.replicaId !== "r3" && r.replicaId !== "r4" && r.replicaId !== "r5");
    await driver.stopReplica(cluster.clusterId, "r3");
    await driver.stopReplica(cluster.clusterId, "r4");
    await driver.stopReplica(cluster.clusterId, "r5");
    await driver.stopReplica(cluster.clusterId, "no-such-replica");
    const workload = workloadName("custom-service", "dedupe", 1);
    await waitFor("two pods left", () => podsOf(workload).length === 2);
    const addresses = podsOf(workload).map((p) => `http://${p.status.podIP}:8000`);
    expect(addresses).not.toContain(victim?.address);
    const after = await driver.listReplicas(cluster.clusterId);
    expect(after.map((r) => [r.replicaId, r.address]).sort()).toEqual(
      others.map((r) => [r.replicaId, r.address]).sort(),
    );
  });

  it("watch follows pods, and resumes after 410 Gone by listing again", async () => {
    driver.watch((e) => events.push(e));
    const workload = workloadName("custom-service", "dedupe", 2);
    await driver.startReplica(replica("v2-a", 2));
    const readyEvent = await waitFor("v2-a ready event", () =>
      events.find((e) => e.replicaId === "v2-a" && e.phase === "ready"),
    );
    expect(readyEvent.revisionId).toBe(replica("v2-a", 2).revisionId);
    expect(readyEvent.address).toMatch(/^http:\/\/10\.244/);

    const pod = podsOf(workload)[0];
    server.restartPod(NS, pod?.metadata.name as string);
    await waitFor("restart seen", () =>
      events.find((e) => e.replicaId === "v2-a" && e.restarts === 1 && e.phase === "ready"),
    );

    // The watch breaks, a change lands while the driver is away, and the server forgets that
    // history: resuming from the driver's resourceVersion must answer 410 Gone.
    const relists = driver.relists;
    server.closeWatches();
    server.restartPod(NS, pod?.metadata.name as string);
    server.compact();
    await waitFor("relist after 410", () => driver.relists > relists);
    await waitFor("change made during the outage", () =>
      events.find((e) => e.replicaId === "v2-a" && e.restarts === 2),
    );
    // ...and the new watch is live again.
    await driver.startReplica(replica("v2-b", 2));
    await waitFor("v2-b ready via the resumed watch", () =>
      events.find((e) => e.replicaId === "v2-b" && e.phase === "ready"),
    );

    // An in-place template change of the revision (here: handle env) rolls its pods with the
    // Deployment's RollingUpdate; the replica ids follow onto the new pods.
    const oldPods = podsOf(workload).map((p) => p.metadata.name);
    await driver.startReplica({ ...replica("v2-a", 2), extraEnv: { TESSERA_HANDLE_URL: "http://gw.new" } });
    const rolled = await waitFor("replicas on new pods, ready", async () => {
      const list = (await driver.listReplicas(cluster.clusterId)).filter(
        (r) => r.revisionId === replica("x", 2).revisionId,
      );
      const names = podsOf(workload).map((p) => p.metadata.name);
      return list.length === 2 &&
        list.every((r) => r.phase === "ready") &&
        names.every((n) => !oldPods.includes(n))
        ? list
        : null;
    });
    expect(rolled.map((r) => r.replicaId).sort()).toEqual(["v2-a", "v2-b"]);
    await waitFor("watch reports v2-b ready on a new address", () =>
      events.findLast(
        (e) =>
          e.replicaId === "v2-b" &&
          e.phase === "ready" &&
          e.address === rolled.find((r) => r.replicaId === "v2-b")?.address,
      ),
    );

    // A crash-looping container is a failed replica.
    const crashing = podsOf(workload).find(
      (p) => p.metadata.annotations?.["tessera.dev/replica-id"] === "v2-b",
    );
    server.crashLoop(NS, crashing?.metadata.name as string);
    const failed = await waitFor("v2-b failed", () =>
      events.find((e) => e.replicaId === "v2-b" && e.phase === "failed"),
    );
    expect(failed.reason).toMatch(/CrashLoopBackOff/);
    server.markReady(NS, crashing?.metadata.name as string);
    await waitFor("v2-b recovered", () => events.findLast((e) => e.replicaId === "v2-b")?.phase === "ready");

    // A driver made for one cluster row watches only that cluster's pods.
    const scopedEvents: ReplicaEvent[] = [];
    const scoped = createDriver({
      id: cluster.clusterId,
      driver: "kubernetes",
      driverConfig: { kubeconfig: server.kubeconfig() },
    });
    drivers.push(scoped as KubernetesDriver);
    scoped.watch((e) => scopedEvents.push(e));
    await waitFor("scoped driver sees the cluster's replicas", () =>
      scopedEvents.some((e) => e.replicaId === "v2-b"),
    );
    // The events above can come from the initial list, before the watch request is sent.
    const scopedSelector = `app.kubernetes.io/managed-by=tessera,tessera.dev/cluster-id=${cluster.clusterId}`;
    await waitFor("scoped driver watches with the cluster selector", () =>
      server.watchSelectors.includes(scopedSelector),
    );
    await scoped.close();

    await driver.stopReplica(cluster.clusterId, "v2-a");
    await waitFor("v2-a stopped", () => events.find((e) => e.replicaId === "v2-a" && e.phase === "stopped"));
    expect(events.some((e) => e.replicaId === "v2-a" && e.phase === "draining")).toBe(true);
  });

  it("a driver whose last listener unsubscribes closes its watch, and watches again on the next subscribe", async () => {
    const d = newDriver();
    const baseline = server.openWatches;
    const seen: ReplicaEvent[] = [];
    const unsubscribe = d.watch((e) => seen.push(e));
    await waitFor("watch open", () => server.openWatches === baseline + 1);
    unsubscribe();
    await waitFor("watch closed", () => server.openWatches === baseline);
    const again = d.watch((e) => seen.push(e));
    await waitFor("watch open again", () => server.openWatches === baseline + 1);
    again();
    await d.close();
    await waitFor("watch closed after close", () => server.openWatches === baseline);
  });

  it("stopping the last replica of a revision deletes its Deployment, pods and code; the Service goes with the last revision", async () => {
    const v2 = workloadName("custom-service", "dedupe", 2);
    await driver.stopReplica(cluster.clusterId, "v2-b");
    expect(server.get("deployments", NS, v2)).toBeUndefined();
    expect(server.list("replicasets", NS).filter((r) => r.metadata.name.startsWith(v2))).toEqual([]);
    await waitFor("v2 pods gone", () => podsOf(v2).length === 0);
    expect(server.get("configmaps", NS, `code-${replica("x", 2).revisionId}`)).toBeUndefined();
    expect(server.list("services", NS)).toHaveLength(1);
    await driver.stopReplica(cluster.clusterId, "r1");
    await driver.stopReplica(cluster.clusterId, "r2");
    expect(server.list("services", NS)).toHaveLength(0);
    expect(server.list("deployments", NS)).toHaveLength(0);
    expect(await driver.listReplicas(cluster.clusterId)).toEqual([]);
  });

  it("destroyCluster cascades through the namespace and is a no-op the second time", async () => {
    await driver.startReplica(replica("z1", 3));
    await waitFor("z1 pod", () => podsOf(workloadName("custom-service", "dedupe", 3)).length === 1);
    await driver.destroyCluster(cluster.clusterId);
    expect(server.get("namespaces", undefined, NS)).toBeUndefined();
    expect(server.list("pods", NS)).toEqual([]);
    expect(server.list("configmaps", NS)).toEqual([]);
    await driver.destroyCluster(cluster.clusterId);
    expect(await newDriver().listReplicas(cluster.clusterId)).toEqual([]);
    expect(errors.filter((e) => !String(e).includes("pod watch"))).toEqual([]);
  });

  it("the provisioner's RBAC grants every (verb, resource) the driver used, and nothing it did not", () => {
    const granted = provisionerRbacGrants();
    const used = driverCalls(server.seen);
    const missing = used.filter((u) => !granted.has(u));
    expect(missing).toEqual([]);
    // Exactly: a grant the driver never exercised is either a test gap or excess privilege.
    const unused = [...granted].filter((g) => !server.seen.has(g));
    expect(unused).toEqual([]);
  });
});
