import {
  ApiException,
  type KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  Watch,
} from "@kubernetes/client-node";
import { TesseraError } from "@tessera/core";
import type {
  ClusterDriver,
  ClusterSpec,
  EnvironmentHandle,
  EnvironmentRequest,
  ProvisionedCluster,
  ReplicaEvent,
  ReplicaSpec,
  ReplicaStatus,
} from "../driver.js";
import {
  clusterObjects,
  DEFAULT_MANIFEST_OPTIONS,
  environmentConfigMap,
  type K8sObject,
  type ManifestOptions,
  revisionObjects,
} from "./manifests.js";
import {
  ANNOTATIONS,
  codeConfigMapName,
  ENV_VOLUME_CLAIM,
  FIELD_MANAGER,
  LABELS,
  MANAGED_BY,
  namespaceName,
  workloadName,
} from "./names.js";
import { assignReplicaIds, type PodLike, replicaStatus } from "./replicas.js";

export interface KubernetesDriverOptions extends Partial<ManifestOptions> {
  kubeConfig: KubeConfig;
  /** Attempts for calls answered 409 Conflict (or 429/5xx) before giving up. */
  retryAttempts?: number;
  retryBaseDelayMs?: number;
  /** Where background failures (watch, annotation writes) are reported. */
  onError?: (err: unknown) => void;
  /**
   * When this driver serves one cluster row (as `createDriver(cluster)` makes it), its pod watch
   * is narrowed to that cluster's pods; without it, one watch covers every tessera pod.
   */
  clusterId?: string;
}

const MANAGED_SELECTOR = `${LABELS.managedBy}=${MANAGED_BY}`;
/** Lower than the default 0 of every other pod: the ReplicaSet removes this pod first on scale-down. */
const STOPPING_DELETION_COST = "-1000000";

interface DeploymentObject extends K8sObject {
  spec?: { replicas?: number };
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });

const statusCode = (err: unknown): number | undefined =>
  err instanceof ApiException
    ? err.code
    : typeof (err as { statusCode?: unknown })?.statusCode === "number"
      ? (err as { statusCode: number }).statusCode
      : undefined;

/**
 * Runs tenant clusters on Kubernetes: one namespace per cluster, one Deployment per revision of
 * a tessera deployment, a Service per tessera deployment. See ./README.md for how
 * the controller's replica ids map onto Deployments and pods.
 */
export class KubernetesDriver implements ClusterDriver {
  readonly kind = "kubernetes" as const;
  private readonly api: KubernetesObjectApi;
  private readonly watcher: Watch;
  private readonly opts: ManifestOptions;
  private readonly retryAttempts: number;
  private readonly retryBaseDelayMs: number;
  private readonly onError: (err: unknown) => void;
  private readonly namespaces = new Map<string, string>();
  private readonly watchSelector: string;
  private readonly locks = new Map<string, Promise<unknown>>();

  private readonly listeners = new Set<(e: ReplicaEvent) => void>();
  private readonly lastEmitted = new Map<string, string>();
  private readonly podCache = new Map<string, PodLike>();
  private readonly pendingAssignments = new Set<string>();
  private watchLoop: Promise<void> | null = null;
  private watchAbort: AbortController | null = null;
  /** Ends the current watch loop (no listener left, or close). */
  private watchStop: AbortController | null = null;
  private readonly closing = new AbortController();
  /** Times the pod watch started over from a fresh list (after 410 Gone). Exposed for operators/tests. */
  relists = 0;

  constructor(options: KubernetesDriverOptions) {
    const { kubeConfig, retryAttempts, retryBaseDelayMs, onError, clusterId, ...manifest } = options;
    this.watchSelector = clusterId
      ? `${MANAGED_SELECTOR},${LABELS.clusterId}=${clusterId}`
      : MANAGED_SELECTOR;
    this.api = KubernetesObjectApi.makeApiClient(kubeConfig);
    this.watcher = new Watch(kubeConfig);
    this.opts = {
      ...DEFAULT_MANIFEST_OPTIONS,
      ...Object.fromEntries(Object.entries(manifest).filter(([, v]) => v !== undefined)),
    };
    this.retryAttempts = retryAttempts ?? 6;
    this.retryBaseDelayMs = retryBaseDelayMs ?? 100;
    this.onError = onError ?? ((err) => console.error("[kubernetes-driver]", err));
  }

  // ------------------------------------------------------------------ clusters

  async provisionCluster(spec: ClusterSpec): Promise<ProvisionedCluster> {
    const objects = clusterObjects(spec, this.opts);
    for (const obj of objects) await this.apply(obj);
    const namespace = objects[0]?.metadata.name as string;
    this.namespaces.set(spec.clusterId, namespace);
    return {
      clusterId: spec.clusterId,
      state: {
        namespace,
        serviceAccount: "tessera-replica",
        envVolume: this.opts.envVolume.kind === "claim" ? `pvc/${ENV_VOLUME_CLAIM}` : "emptyDir",
        gatewayNamespace: this.opts.gatewayNamespace,
      },
    };
  }

  async destroyCluster(clusterId: string): Promise<void> {
    const namespace = await this.namespaceOf(clusterId, false);
    if (!namespace) return;
    // Foreground: the namespace object stays (Terminating) until everything in it is gone.
    await this.call(() =>
      this.api.delete(
        { apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } },
        undefined,
        undefined,
        undefined,
        undefined,
        "Foreground",
      ),
    ).catch((err) => {
      if (statusCode(err) !== 404) throw err;
    });
    this.namespaces.delete(clusterId);
  }

  // ------------------------------------------------------------------ environments

  /**
   * The driver cannot run a build itself: it stores the rendered spec in a ConfigMap keyed by the
   * hash, and every replica pod of that environment runs the `build-env` init container, which
   * builds into `<envs>/<hash>` unless a complete build is there. With a shared claim it is built
   * once per cluster; with emptyDir (no RWX storage) once per pod.
   */
  async ensureEnvironment(
    env: EnvironmentRequest,
    onLog: (line: string) => void,
  ): Promise<EnvironmentHandle> {
    if (env.spec.kind === "none") return { hash: env.hash, location: "image" };
    if (env.runtime === "node" && env.spec.kind !== "npm")
      throw new TesseraError("ENV_UNSUPPORTED", `a node replica cannot use a ${env.spec.kind} environment`);
    if (env.runtime === "python" && env.spec.kind === "npm")
      throw new TesseraError("ENV_UNSUPPORTED", "a python replica cannot use an npm environment");
    const namespace = await this.namespaceOf(env.clusterId, true);
    await this.apply(
      environmentConfigMap(namespace as string, env.hash, env.spec, {
        [LABELS.managedBy]: MANAGED_BY,
        [LABELS.clusterId]: env.clusterId,
      }),
    );
    const where =
      this.opts.envVolume.kind === "claim" ? `pvc/${ENV_VOLUME_CLAIM}/${env.hash}` : `emptyDir/${env.hash}`;
    onLog(
      `environment ${env.hash} (${env.spec.kind}) recorded in ConfigMap env-${env.hash} of namespace ${namespace}`,
    );
    onLog(
      this.opts.envVolume.kind === "claim"
        ? `it is built by the build-env init container of the first replica pod into ${where} and reused by later pods`
        : `it is built by the build-env init container of every replica pod (no shared volume configured) into ${where}`,
    );
    return { hash: env.hash, location: `${namespace}/${where}` };
  }

  // ------------------------------------------------------------------ replicas

  async startReplica(spec: ReplicaSpec): Promise<ReplicaStatus> {
    const namespace = (await this.namespaceOf(spec.clusterId, true)) as string;
    const workload = workloadName(spec.applicationName, spec.deploymentName, spec.revisionVersion);
    await this.locked(`${namespace}/${workload}`, () =>
      this.call(async () => {
        const existing = await this.readDeployment(namespace, workload);
        const ids = existing ? replicaIdsOf(existing) : [];
        if (!ids.includes(spec.replicaId)) ids.push(spec.replicaId);
        const { configMap, deployment, service } = revisionObjects(namespace, spec, ids, this.opts);
        await this.apply(configMap);
        await this.apply(service);
        // The resourceVersion makes the apply conditional: a concurrent writer of the replica-id
        // list turns this into 409 Conflict, and the whole read-modify-apply is retried.
        if (existing?.metadata.resourceVersion)
          deployment.metadata.resourceVersion = existing.metadata.resourceVersion as string;
        await this.apply(deployment, false);
      }),
    );
    const statuses = await this.workloadStatuses(namespace, workload);
    return (
      statuses.find((s) => s.replicaId === spec.replicaId) ?? {
        replicaId: spec.replicaId,
        clusterId: spec.clusterId,
        deploymentId: spec.deploymentId,
        revisionId: spec.revisionId,
        phase: "starting",
        address: null,
        restarts: 0,
      }
    );
  }

  async stopReplica(clusterId: string, replicaId: string, _opts?: { drainTimeoutS?: number }): Promise<void> {
    const namespace = await this.namespaceOf(clusterId, false);
    if (!namespace) return;
    const deployments = await this.listDeployments(namespace);
    const owner = deployments.find((d) => replicaIdsOf(d).includes(replicaId));
    if (!owner) return;
    const workload = owner.metadata.name;
    await this.locked(`${namespace}/${workload}`, async () => {
      const { byReplica } = assignReplicaIds(
        replicaIdsOf(owner),
        await this.listPods(namespace, `${LABELS.workload}=${workload}`),
      );
      const pod = byReplica.get(replicaId);
      if (pod?.metadata?.name) {
        // Scale-down removes the lowest pod-deletion-cost pod first, so the pod that stands for
        // this replica is the one Kubernetes drains (SIGTERM, grace period) and removes.
        await this.mergePatch({
          apiVersion: "v1",
          kind: "Pod",
          metadata: {
            name: pod.metadata.name,
            namespace,
            annotations: { [ANNOTATIONS.podDeletionCost]: STOPPING_DELETION_COST },
          },
        }).catch((err) => {
          if (statusCode(err) !== 404) throw err;
        });
      }
      await this.call(async () => {
        const current = await this.readDeployment(namespace, workload);
        if (!current) return;
        const ids = replicaIdsOf(current).filter((id) => id !== replicaId);
        if (ids.length === 0) {
          await this.deleteRevision(namespace, current);
          return;
        }
        await this.mergePatch({
          apiVersion: "apps/v1",
          kind: "Deployment",
          metadata: {
            name: workload,
            namespace,
            resourceVersion: current.metadata.resourceVersion as string,
            annotations: { [ANNOTATIONS.replicaIds]: JSON.stringify(ids) },
          },
          spec: { replicas: ids.length },
        });
      });
    });
  }

  async listReplicas(clusterId: string): Promise<ReplicaStatus[]> {
    const namespace = await this.namespaceOf(clusterId, false);
    if (!namespace) return [];
    const [deployments, pods] = await Promise.all([
      this.listDeployments(namespace),
      this.listPods(namespace, MANAGED_SELECTOR),
    ]);
    const out: ReplicaStatus[] = [];
    for (const d of deployments) {
      const podsOf = pods.filter((p) => p.metadata?.labels?.[LABELS.workload] === d.metadata.name);
      out.push(...(await this.statusesFor(d, podsOf)));
    }
    return out;
  }

  // ------------------------------------------------------------------ watch

  watch(listener: (event: ReplicaEvent) => void): () => void {
    this.listeners.add(listener);
    if (!this.watchLoop) {
      const stop = new AbortController();
      this.watchStop = stop;
      this.watchLoop = this.runWatch(AbortSignal.any([this.closing.signal, stop.signal])).catch((err) =>
        this.onError(err),
      );
    }
    return () => {
      this.listeners.delete(listener);
      // Nobody listens: end the pod watch, so a driver its user dropped holds no connection.
      if (this.listeners.size === 0) this.stopWatch();
    };
  }

  async close(): Promise<void> {
    this.closing.abort();
    const loop = this.watchLoop;
    this.stopWatch();
    await loop;
    this.listeners.clear();
  }

  private stopWatch(): void {
    this.watchStop?.abort();
    this.watchAbort?.abort();
    this.watchStop = null;
    this.watchAbort = null;
    this.watchLoop = null;
  }

  /**
   * List pods, then watch from the list's resourceVersion. A `410 Gone` (the server no longer
   * has that version) means events were missed: list again and diff against the cache, which
   * emits whatever changed meanwhile, then watch from the new version.
   */
  private async runWatch(stop: AbortSignal): Promise<void> {
    let resourceVersion: string | undefined;
    let failures = 0;
    while (!stop.aborted) {
      try {
        if (!resourceVersion) resourceVersion = await this.relist();
        const outcome = await new Promise<{ gone: boolean; err?: unknown }>((resolve) => {
          let gone = false;
          // Aborting a watch does not always reach its done callback; closing must not wait on it.
          stop.addEventListener("abort", () => resolve({ gone: false }), { once: true });
          this.watcher
            .watch(
              "/api/v1/pods",
              { labelSelector: this.watchSelector, resourceVersion, allowWatchBookmarks: true },
              (type, obj) => {
                if (type === "ERROR") {
                  if (obj?.code === 410) gone = true;
                  else this.onError(new Error(`pod watch error: ${obj?.message ?? JSON.stringify(obj)}`));
                  return;
                }
                const rv = obj?.metadata?.resourceVersion;
                if (rv) resourceVersion = rv;
                if (type === "BOOKMARK") return;
                this.onPod(type, obj as PodLike);
              },
              (err) => resolve({ gone: gone || statusCode(err) === 410, err }),
            )
            .then((ctrl) => {
              if (stop.aborted) ctrl.abort();
              else this.watchAbort = ctrl;
            });
        });
        if (stop.aborted) return;
        if (outcome.gone) {
          resourceVersion = undefined;
          failures = 0;
          continue;
        }
        if (outcome.err) throw outcome.err;
        failures = 0;
      } catch (err) {
        if (stop.aborted) return;
        failures++;
        this.onError(err);
        await sleep(Math.min(30_000, this.retryBaseDelayMs * 2 ** Math.min(failures, 8)), stop);
      }
    }
  }

  private async relist(): Promise<string> {
    this.relists++;
    const list = (await this.call(() =>
      this.api.list("v1", "Pod", undefined, undefined, undefined, undefined, undefined, this.watchSelector),
    )) as unknown as { items: PodLike[]; metadata?: { resourceVersion?: string } };
    const seen = new Set<string>();
    for (const pod of list.items) {
      seen.add(podKey(pod));
      this.onPod("MODIFIED", pod);
    }
    for (const [key, pod] of this.podCache) if (!seen.has(key)) this.onPod("DELETED", pod);
    return list.metadata?.resourceVersion ?? "";
  }

  private onPod(type: string, pod: PodLike): void {
    const key = podKey(pod);
    if (type === "DELETED") this.podCache.delete(key);
    else this.podCache.set(key, pod);
    const labels = pod.metadata?.labels ?? {};
    const replicaId = pod.metadata?.annotations?.[ANNOTATIONS.replicaId];
    const workload = labels[LABELS.workload];
    if (!replicaId) {
      if (type !== "DELETED" && pod.metadata?.namespace && workload)
        this.scheduleAssignment(pod.metadata.namespace, workload);
      return;
    }
    // A departed pod frees its replica id for a successor that may already be waiting unpaired
    // (in-place rollouts, evictions).
    if (type === "DELETED" && pod.metadata?.namespace && workload)
      this.scheduleAssignment(pod.metadata.namespace, workload);
    const ids = {
      replicaId,
      clusterId: labels[LABELS.clusterId] ?? "",
      deploymentId: labels[LABELS.deploymentId] ?? "",
      revisionId: labels[LABELS.revisionId] ?? "",
    };
    const status: ReplicaStatus =
      type === "DELETED"
        ? { ...ids, phase: "stopped", address: null, restarts: 0, reason: "pod deleted" }
        : replicaStatus(ids, pod, this.opts.runtimePort);
    const fingerprint = JSON.stringify([
      status.phase,
      status.address,
      status.restarts,
      status.reason,
      status.replicaId,
    ]);
    if (this.lastEmitted.get(key) === fingerprint) return;
    if (type === "DELETED") this.lastEmitted.delete(key);
    else this.lastEmitted.set(key, fingerprint);
    const event: ReplicaEvent = { ...status, at: new Date() };
    for (const l of this.listeners) {
      try {
        l(event);
      } catch (err) {
        this.onError(err);
      }
    }
  }

  /** New pods carry no replica id yet; pair them (and annotate) once, batched per workload. */
  private scheduleAssignment(namespace: string, workload: string): void {
    const key = `${namespace}/${workload}`;
    if (this.pendingAssignments.has(key)) return;
    this.pendingAssignments.add(key);
    setImmediate(() => {
      this.pendingAssignments.delete(key);
      if (this.closing.signal.aborted) return;
      this.workloadStatuses(namespace, workload).catch((err) => this.onError(err));
    });
  }

  // ------------------------------------------------------------------ helpers

  private async workloadStatuses(namespace: string, workload: string): Promise<ReplicaStatus[]> {
    const d = await this.readDeployment(namespace, workload);
    if (!d) return [];
    return this.statusesFor(d, await this.listPods(namespace, `${LABELS.workload}=${workload}`));
  }

  private async statusesFor(d: DeploymentObject, pods: PodLike[]): Promise<ReplicaStatus[]> {
    const ids = replicaIdsOf(d);
    const { byReplica, toAnnotate } = assignReplicaIds(ids, pods);
    for (const { pod, replicaId } of toAnnotate) {
      if (!pod.metadata?.name) continue;
      await this.mergePatch({
        apiVersion: "v1",
        kind: "Pod",
        metadata: {
          name: pod.metadata.name,
          namespace: d.metadata.namespace,
          annotations: { [ANNOTATIONS.replicaId]: replicaId },
        },
      }).catch((err) => {
        // The pod may have gone meanwhile; the next list pairs the id with its successor.
        if (statusCode(err) !== 404) this.onError(err);
      });
    }
    const labels = d.metadata.labels ?? {};
    const base = {
      clusterId: labels[LABELS.clusterId] ?? "",
      deploymentId: labels[LABELS.deploymentId] ?? "",
      revisionId: labels[LABELS.revisionId] ?? "",
    };
    return ids.map((replicaId) =>
      replicaStatus({ ...base, replicaId }, byReplica.get(replicaId), this.opts.runtimePort),
    );
  }

  private async deleteRevision(namespace: string, d: DeploymentObject): Promise<void> {
    const ignore404 = (err: unknown) => {
      if (statusCode(err) !== 404) throw err;
    };
    // Background: the Deployment goes now, the garbage collector removes its ReplicaSets and pods.
    await this.api
      .delete(
        { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: d.metadata.name, namespace } },
        undefined,
        undefined,
        undefined,
        undefined,
        "Background",
      )
      .catch(ignore404);
    const revisionId = d.metadata.labels?.[LABELS.revisionId];
    if (revisionId)
      await this.api
        .delete({
          apiVersion: "v1",
          kind: "ConfigMap",
          metadata: { name: codeConfigMapName(revisionId), namespace },
        })
        .catch(ignore404);
    const deploymentId = d.metadata.labels?.[LABELS.deploymentId];
    if (!deploymentId) return;
    const siblings = (await this.listDeployments(namespace)).filter(
      (o) => o.metadata.labels?.[LABELS.deploymentId] === deploymentId && o.metadata.name !== d.metadata.name,
    );
    if (siblings.length > 0) return;
    const services = (await this.call(() =>
      this.api.list(
        "v1",
        "Service",
        namespace,
        undefined,
        undefined,
        undefined,
        undefined,
        `${LABELS.deploymentId}=${deploymentId}`,
      ),
    )) as unknown as { items: K8sObject[] };
    for (const s of services.items)
      await this.api
        .delete({ apiVersion: "v1", kind: "Service", metadata: { name: s.metadata.name, namespace } })
        .catch(ignore404);
  }

  private async namespaceOf(clusterId: string, required: boolean): Promise<string | undefined> {
    const cached = this.namespaces.get(clusterId);
    if (cached) return cached;
    const list = (await this.call(() =>
      this.api.list(
        "v1",
        "Namespace",
        undefined,
        undefined,
        undefined,
        undefined,
        undefined,
        `${LABELS.clusterId}=${clusterId}`,
      ),
    )) as unknown as { items: K8sObject[] };
    const ns = list.items.find(
      (n) => !(n as { metadata: { deletionTimestamp?: unknown } }).metadata.deletionTimestamp,
    )?.metadata.name;
    if (ns) this.namespaces.set(clusterId, ns);
    else if (required)
      throw new TesseraError("NOT_FOUND", `cluster ${clusterId} has no namespace: provision it first`);
    return ns;
  }

  private async readDeployment(namespace: string, name: string): Promise<DeploymentObject | null> {
    try {
      return (await this.call(() =>
        this.api.read({ apiVersion: "apps/v1", kind: "Deployment", metadata: { name, namespace } }),
      )) as unknown as DeploymentObject;
    } catch (err) {
      if (statusCode(err) === 404 || (err instanceof TesseraError && err.code === "NOT_FOUND")) return null;
      throw err;
    }
  }

  private async listDeployments(namespace: string): Promise<DeploymentObject[]> {
    const list = (await this.call(() =>
      this.api.list(
        "apps/v1",
        "Deployment",
        namespace,
        undefined,
        undefined,
        undefined,
        undefined,
        MANAGED_SELECTOR,
      ),
    )) as unknown as { items: DeploymentObject[] };
    return list.items;
  }

  private async listPods(namespace: string, selector: string): Promise<PodLike[]> {
    const list = (await this.call(() =>
      this.api.list("v1", "Pod", namespace, undefined, undefined, undefined, undefined, selector),
    )) as unknown as { items: PodLike[] };
    return list.items;
  }

  /** Server-side apply as field manager `tessera`, forced: we own every field we send. */
  private async apply(obj: K8sObject, retry = true): Promise<void> {
    const send = () =>
      this.api.patch(obj, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
    await (retry ? this.call(send) : send());
  }

  private mergePatch(obj: K8sObject): Promise<unknown> {
    return this.api.patch(obj, undefined, undefined, FIELD_MANAGER, undefined, PatchStrategy.MergePatch);
  }

  /** Retry on 409 Conflict, 429 and 5xx with exponential backoff; other errors surface at once. */
  private async call<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        const code = statusCode(err);
        const retriable = code === 409 || code === 429 || (code !== undefined && code >= 500);
        if (!retriable || attempt >= this.retryAttempts || this.closing.signal.aborted) throw err;
        await sleep(this.retryBaseDelayMs * 2 ** (attempt - 1) * (0.5 + Math.random() / 2));
      }
    }
  }

  /** Serialises read-modify-write of one Deployment's replica list within this process. */
  private async locked<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(key) ?? Promise.resolve();
    const run = prev.catch(() => undefined).then(fn);
    this.locks.set(key, run);
    try {
      return await run;
    } finally {
      if (this.locks.get(key) === run) this.locks.delete(key);
    }
  }
}

function replicaIdsOf(d: DeploymentObject): string[] {
  const raw = d.metadata.annotations?.[ANNOTATIONS.replicaIds];
  if (!raw) return [];
  try {
    const parsed: unknown = JSON.parse(raw);
    return Array.isArray(parsed) ? parsed.filter((x): x is string => typeof x === "string") : [];
  } catch {
    return [];
  }
}

const podKey = (pod: PodLike) => `${pod.metadata?.namespace ?? ""}/${pod.metadata?.name ?? ""}`;

export { namespaceName };
