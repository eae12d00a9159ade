import { createHash, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { validateK8s } from "./k8s-validate.js";

/**
 * A small, real HTTP Kubernetes API server for tests: the REST paths and semantics the driver
 * relies on, kept in memory. Objects get uid/resourceVersion/generation; server-side apply
 * creates or merges and leaves an unchanged object (and its resourceVersion) alone; deletes
 * cascade through ownerReferences and namespaces; list + watch stream newline-delimited JSON
 * events, and a watch from a compacted resourceVersion gets a 410 Gone ERROR event. A built-in
 * Deployment -> ReplicaSet -> Pod controller creates pods and (optionally) marks them ready.
 */

type Obj = {
  apiVersion: string;
  kind: string;
  metadata: Record<string, any> & { name: string; namespace?: string };
  [k: string]: any;
};

interface ResourceDef {
  group: string; // "" for core
  version: string;
  resource: string;
  kind: string;
  namespaced: boolean;
}

const RESOURCES: ResourceDef[] = [
  { group: "", version: "v1", resource: "namespaces", kind: "Namespace", namespaced: false },
  { group: "", version: "v1", resource: "pods", kind: "Pod", namespaced: true },
  { group: "", version: "v1", resource: "services", kind: "Service", namespaced: true },
  { group: "", version: "v1", resource: "configmaps", kind: "ConfigMap", namespaced: true },
  { group: "", version: "v1", resource: "serviceaccounts", kind: "ServiceAccount", namespaced: true },
  { group: "", version: "v1", resource: "resourcequotas", kind: "ResourceQuota", namespaced: true },
  { group: "", version: "v1", resource: "limitranges", kind: "LimitRange", namespaced: true },
  {
    group: "",
    version: "v1",
    resource: "persistentvolumeclaims",
    kind: "PersistentVolumeClaim",
    namespaced: true,
  },
  { group: "apps", version: "v1", resource: "deployments", kind: "Deployment", namespaced: true },
  { group: "apps", version: "v1", resource: "replicasets", kind: "ReplicaSet", namespaced: true },
  {
    group: "networking.k8s.io",
    version: "v1",
    resource: "networkpolicies",
    kind: "NetworkPolicy",
    namespaced: true,
  },
];

interface WatchEvent {
  rv: number;
  type: "ADDED" | "MODIFIED" | "DELETED";
  resource: string;
  object: Obj;
}

interface Watcher {
  resource: string;
  namespace?: string;
  selector: [string, string][];
  res: ServerResponse;
}

export interface InjectedFailure {
  verb: string;
  resource: string;
  status: number;
  times: number;
}

const clone = <T>(x: T): T => structuredClone(x);
const sortedJson = (v: unknown): string =>
  JSON.stringify(v, (_k, val) =>
    val && typeof val === "object" && !Array.isArray(val)
      ? Object.fromEntries(Object.entries(val).sort(([a], [b]) => (a < b ? -1 : 1)))
      : val,
  );

export class FakeApiServer {
  private server: Server | null = null;
  private readonly objects = new Map<string, Obj>();
  private rv = 100;
  private history: WatchEvent[] = [];
  /** Events at or below this resourceVersion are forgotten: watching from them answers 410. */
  private compactedThrough = 0;
  private readonly watchers = new Set<Watcher>();
  private readonly failures: InjectedFailure[] = [];
  private podIp = 10;
  /** Every (verb, resource) the server authorised, for the RBAC test. */
  readonly seen = new Set<string>();
  /** Count of requests that changed stored state (create/update/delete), per verb+resource. */
  readonly writes: { verb: string; resource: string; name: string }[] = [];
  /** The label selector of every watch opened, in order. */
  readonly watchSelectors: string[] = [];
  /** When true, the simulated kubelet marks new pods Running and Ready on the next tick. */
  autoReady = true;
  port = 0;

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err) => {
        if (!res.headersSent) this.status(res, 500, "InternalError", String(err?.stack ?? err));
      });
    });
    await new Promise<void>((resolve) => this.server?.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return `http://127.0.0.1:${this.port}`;
  }

  async stop(): Promise<void> {
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }

  kubeconfig(): string {
    return [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      "- name: fake",
      "  cluster:",
      `    server: http://127.0.0.1:${this.port}`,
      // client-node refuses plain HTTP unless TLS verification is explicitly off.
      "    insecure-skip-tls-verify: true",
      "users:",
      "- name: tessera",
      "  user:",
      "    token: test-token",
      "contexts:",
      "- name: fake",
      "  context: {cluster: fake, user: tessera}",
      "current-context: fake",
      "",
    ].join("\n");
  }

  // ------------------------------------------------------------------ test controls

  /** Answer the next `times` requests of (verb, resource) with `status` (e.g. 409 Conflict). */
  failNext(verb: string, resource: string, status: number, times = 1): void {
    this.failures.push({ verb, resource, status, times });
  }

  /** Forget all watch history up to now: resuming any older watch gets 410 Gone. */
  compact(): void {
    this.compactedThrough = this.rv;
    this.history = [];
  }

  /** End every open watch stream (as an apiserver does on timeout or restart). */
  /** Watch streams a client holds open right now. */
  get openWatches(): number {
    return this.watchers.size;
  }

  closeWatches(): void {
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
  }

  get(resource: string, namespace: string | undefined, name: string): Obj | undefined {
    const o = this.objects.get(this.key(resource, namespace, name));
    return o ? clone(o) : undefined;
  }

  list(resource: string, namespace?: string): Obj[] {
    return [...this.objects.entries()]
      .filter(([k]) => k.startsWith(`${resource}/${namespace ?? ""}`))
      .map(([, o]) => clone(o))
      .filter((o) => namespace === undefined || o.metadata.namespace === namespace);
  }

  /** Simulate a container crash and restart of one pod: not ready, restartCount + 1, then ready. */
  restartPod(namespace: string, name: string): void {
    const pod = this.objects.get(this.key("pods", namespace, name));
    if (!pod) throw new Error(`no pod ${namespace}/${name}`);
    const s = pod.status;
    s.containerStatuses = s.containerStatuses.map((c: any) => ({
      ...c,
      ready: false,
      restartCount: c.restartCount + 1,
    }));
    s.conditions = [{ type: "Ready", status: "False" }];
    this.store("pods", pod, "MODIFIED");
    if (this.autoReady) setImmediate(() => this.markReady(namespace, name));
  }

  /** Simulate a container that keeps crashing: waiting in CrashLoopBackOff, not ready. */
  crashLoop(namespace: string, name: string): void {
    const pod = this.objects.get(this.key("pods", namespace, name));
    if (!pod) throw new Error(`no pod ${namespace}/${name}`);
    pod.status.phase = "Running";
    pod.status.conditions = [{ type: "Ready", status: "False" }];
    // A container that crashes from its first start has a status too (never ready).
    pod.status.containerStatuses = (pod.spec.containers ?? []).map((spec: any) => {
      const c = (pod.status.containerStatuses ?? []).find((p: any) => p.name === spec.name);
      return {
        name: spec.name,
        image: spec.image,
        imageID: c?.imageID ?? "",
        ready: false,
        restartCount: (c?.restartCount ?? 0) + 1,
        state: {
          waiting: { reason: "CrashLoopBackOff", message: "back-off 10s restarting failed container" },
        },
      };
    });
    this.store("pods", pod, "MODIFIED");
  }

  markReady(namespace: string, name: string): void {
    const pod = this.objects.get(this.key("pods", namespace, name));
    if (!pod || pod.metadata.deletionTimestamp) return;
    pod.status = {
      ...pod.status,
      phase: "Running",
      podIP: pod.status.podIP ?? `10.244.0.${this.podIp++}`,
      conditions: [{ type: "Ready", status: "True" }],
      containerStatuses: (pod.spec.containers ?? []).map((c: any) => {
        const prev = (pod.status.containerStatuses ?? []).find((p: any) => p.name === c.name);
        return {
          name: c.name,
          ready: true,
          restartCount: prev?.restartCount ?? 0,
          image: c.image,
          imageID: `${c.image}@sha256:${createHash("sha256").update(c.image).digest("hex")}`,
          state: { running: {} },
        };
      }),
    };
    this.store("pods", pod, "MODIFIED");
  }

  // ------------------------------------------------------------------ HTTP

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.headers.authorization !== "Bearer test-token")
      return this.status(res, 401, "Unauthorized", "bad token");
    const url = new URL(req.url ?? "/", "http://x");
    const segs = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    let group = "";
    let version: string;
    let rest: string[];
    if (segs[0] === "api") {
      version = segs[1] ?? "";
      rest = segs.slice(2);
    } else if (segs[0] === "apis") {
      group = segs[1] ?? "";
      version = segs[2] ?? "";
      rest = segs.slice(3);
    } else return this.status(res, 404, "NotFound", `no route ${url.pathname}`);

    if (rest.length === 0 && req.method === "GET") return this.discovery(res, group, version);

    let namespace: string | undefined;
    let resource: string;
    let name: string | undefined;
    if (rest[0] === "namespaces" && rest.length >= 3) {
      namespace = rest[1];
      resource = rest[2] as string;
      name = rest[3];
    } else {
      resource = rest[0] as string;
      name = rest[1];
    }
    const def = RESOURCES.find((r) => r.group === group && r.version === version && r.resource === resource);
    if (!def)
      return this.status(
        res,
        404,
        "NotFound",
        `the server could not find the requested resource ${url.pathname}`,
      );

    const watch = url.searchParams.get("watch");
    const verb =
      req.method === "GET"
        ? name
          ? "get"
          : watch === "true" || watch === "1"
            ? "watch"
            : "list"
        : req.method === "POST"
          ? "create"
          : req.method === "PATCH"
            ? "patch"
            : req.method === "PUT"
              ? "update"
              : req.method === "DELETE"
                ? "delete"
                : "unknown";
    const failure = this.failures.find((f) => f.verb === verb && f.resource === resource && f.times > 0);
    if (failure) {
      failure.times--;
      return this.status(
        res,
        failure.status,
        failure.status === 409 ? "Conflict" : "InjectedFailure",
        `injected ${failure.status}`,
      );
    }
    this.seen.add(`${verb} ${resource}`);
    const body = ["POST", "PATCH", "PUT"].includes(req.method ?? "") ? await readBody(req) : "";
    if (
      (verb === "create" || verb === "patch") &&
      def.namespaced &&
      !this.objects.has(this.key("namespaces", undefined, namespace as string))
    )
      return this.status(res, 404, "NotFound", `namespaces "${namespace}" not found`);

    switch (verb) {
      case "get": {
        const o = this.objects.get(this.key(resource, namespace, name as string));
        return o ? this.json(res, 200, o) : this.notFound(res, def, name as string);
      }
      case "list":
        return this.json(res, 200, {
          apiVersion: group ? `${group}/${version}` : version,
          kind: `${def.kind}List`,
          metadata: { resourceVersion: String(this.rv) },
          items: this.select(resource, namespace, parseSelector(url.searchParams.get("labelSelector"))).map(
            (o) => {
              const { apiVersion: _a, kind: _k, ...rest } = o;
              return rest;
            },
          ),
        });
      case "watch":
        return this.watch(req, res, resource, namespace, url);
      case "create": {
        const obj = JSON.parse(body) as Obj;
        obj.metadata.namespace = def.namespaced ? namespace : undefined;
        if (this.objects.has(this.key(resource, namespace, obj.metadata.name)))
          return this.status(res, 409, "AlreadyExists", `${resource} "${obj.metadata.name}" already exists`);
        return this.json(res, 201, this.create(def, obj));
      }
      case "patch":
        return this.patch(req, res, def, namespace, name as string, body, url);
      case "delete":
        return this.delete(
          res,
          def,
          namespace,
          name as string,
          url.searchParams.get("propagationPolicy") ?? "Background",
        );
      default:
        return this.status(res, 405, "MethodNotAllowed", `${req.method} not supported`);
    }
  }

  private discovery(res: ServerResponse, group: string, version: string) {
    const resources = RESOURCES.filter((r) => r.group === group && r.version === version);
    if (resources.length === 0) return this.status(res, 404, "NotFound", "no such group version");
    return this.json(res, 200, {
      kind: "APIResourceList",
      apiVersion: "v1",
      groupVersion: group ? `${group}/${version}` : version,
      resources: resources.map((r) => ({
        name: r.resource,
        singularName: r.kind.toLowerCase(),
        namespaced: r.namespaced,
        kind: r.kind,
        verbs: ["create", "delete", "get", "list", "patch", "update", "watch"],
      })),
    });
  }

  private patch(
    req: IncomingMessage,
    res: ServerResponse,
    def: ResourceDef,
    namespace: string | undefined,
    name: string,
    body: string,
    url: URL,
  ) {
    const type = (req.headers["content-type"] ?? "").split(";")[0];
    const patch = JSON.parse(body) as Obj;
    const key = this.key(def.resource, namespace, name);
    const existing = this.objects.get(key);
    const wantedRv = patch.metadata?.resourceVersion;
    if (type === "application/apply-patch+yaml") {
      if (!url.searchParams.get("fieldManager"))
        return this.status(res, 400, "BadRequest", "fieldManager is required for apply patch");
      if (patch.metadata?.name !== name)
        return this.status(res, 400, "BadRequest", "name in body does not match URL");
      if (!existing) {
        if (wantedRv) return this.status(res, 409, "Conflict", "object has been deleted");
        // Apply that creates needs the create permission too, as on a real apiserver.
        this.seen.add(`create ${def.resource}`);
        const obj = clone(patch);
        delete obj.metadata.resourceVersion;
        obj.metadata.namespace = def.namespaced ? namespace : undefined;
        return this.json(res, 201, this.create(def, obj));
      }
      if (wantedRv && wantedRv !== existing.metadata.resourceVersion)
        return this.status(
          res,
          409,
          "Conflict",
          `Operation cannot be fulfilled on ${def.resource} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        );
      const next = clone(existing);
      for (const [k, v] of Object.entries(patch)) if (k !== "metadata" && k !== "status") next[k] = clone(v);
      for (const field of ["labels", "annotations"] as const)
        if (existing.metadata[field] || patch.metadata[field])
          next.metadata[field] = { ...existing.metadata[field], ...patch.metadata[field] };
      const invalid = schemaError(next);
      if (invalid) return this.status(res, 422, "Invalid", invalid);
      return this.json(res, 200, this.update(def, existing, next));
    }
    if (type === "application/merge-patch+json") {
      if (!existing) return this.notFound(res, def, name);
      if (wantedRv && wantedRv !== existing.metadata.resourceVersion)
        return this.status(
          res,
          409,
          "Conflict",
          `Operation cannot be fulfilled on ${def.resource} "${name}": the object has been modified`,
        );
      const next = mergePatch(clone(existing), {
        ...patch,
        metadata: { ...patch.metadata, resourceVersion: undefined },
      }) as Obj;
      next.metadata.resourceVersion = existing.metadata.resourceVersion;
      const invalid = schemaError(next);
      if (invalid) return this.status(res, 422, "Invalid", invalid);
      return this.json(res, 200, this.update(def, existing, next));
    }
    return this.status(res, 415, "UnsupportedMediaType", `unsupported patch type ${type}`);
  }

  private delete(
    res: ServerResponse,
    def: ResourceDef,
    namespace: string | undefined,
    name: string,
    policy: string,
  ) {
    const o = this.objects.get(this.key(def.resource, namespace, name));
    if (!o) return this.notFound(res, def, name);
    this.remove(def.resource, o, policy);
    this.reconcileControllers();
    return this.json(res, 200, {
      kind: "Status",
      apiVersion: "v1",
      status: "Success",
      details: { name, kind: def.resource },
    });
  }

  private watch(
    req: IncomingMessage,
    res: ServerResponse,
    resource: string,
    namespace: string | undefined,
    url: URL,
  ) {
    const from = Number(url.searchParams.get("resourceVersion") ?? "0");
    res.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" });
    // A watch client waits for the response headers before it reads events.
    res.flushHeaders();
    if (from && from < this.compactedThrough) {
      res.end(
        `${JSON.stringify({ type: "ERROR", object: { kind: "Status", apiVersion: "v1", status: "Failure", message: `too old resource version: ${from} (${this.compactedThrough})`, reason: "Expired", code: 410 } })}\n`,
      );
      return;
    }
    this.watchSelectors.push(url.searchParams.get("labelSelector") ?? "");
    const w: Watcher = {
      resource,
      namespace,
      selector: parseSelector(url.searchParams.get("labelSelector")),
      res,
    };
    for (const e of this.history) if (e.rv > from) this.deliver(w, e);
    this.watchers.add(w);
    req.on("close", () => this.watchers.delete(w));
  }

  // ------------------------------------------------------------------ storage

  private key(resource: string, namespace: string | undefined, name: string) {
    return `${resource}/${namespace ?? ""}/${name}`;
  }

  private select(resource: string, namespace: string | undefined, selector: [string, string][]) {
    return [...this.objects.values()]
      .filter((o) => this.kindToResource(o) === resource)
      .filter((o) => namespace === undefined || o.metadata.namespace === namespace)
      .filter((o) => matches(o, selector));
  }

  private kindToResource(o: Obj) {
    return RESOURCES.find((r) => r.kind === o.kind)?.resource;
  }

  private create(def: ResourceDef, obj: Obj): Obj {
    if (def.namespaced) {
      if (!obj.metadata.namespace) throw new Error("namespaced object without namespace");
    }
    obj.apiVersion = def.group ? `${def.group}/${def.version}` : def.version;
    obj.kind = def.kind;
    obj.metadata.uid = randomUUID();
    obj.metadata.creationTimestamp = new Date(Date.now() + this.rv).toISOString();
    obj.metadata.generation = 1;
    if (def.kind === "Namespace") {
      obj.metadata.labels = { ...obj.metadata.labels, "kubernetes.io/metadata.name": obj.metadata.name };
      obj.status = { phase: "Active" };
    }
    this.writes.push({ verb: "create", resource: def.resource, name: obj.metadata.name });
    this.store(def.resource, obj, "ADDED");
    this.reconcileControllers();
    return clone(obj);
  }

  private update(def: ResourceDef, before: Obj, next: Obj): Obj {
    const strip = (o: Obj) => ({
      ...o,
      metadata: { ...o.metadata, resourceVersion: undefined, generation: undefined },
    });
    if (sortedJson(strip(before)) === sortedJson(strip(next))) return clone(before);
    if (sortedJson(before.spec) !== sortedJson(next.spec))
      next.metadata.generation = (before.metadata.generation ?? 1) + 1;
    this.writes.push({ verb: "update", resource: def.resource, name: next.metadata.name });
    this.store(def.resource, next, "MODIFIED");
    this.reconcileControllers();
    return clone(next);
  }

  private store(resource: string, obj: Obj, type: WatchEvent["type"]) {
    this.rv++;
    obj.metadata.resourceVersion = String(this.rv);
    if (type === "DELETED")
      this.objects.delete(this.key(resource, obj.metadata.namespace, obj.metadata.name));
    else this.objects.set(this.key(resource, obj.metadata.namespace, obj.metadata.name), obj);
    const event: WatchEvent = { rv: this.rv, type, resource, object: clone(obj) };
    this.history.push(event);
    for (const w of this.watchers) this.deliver(w, event);
  }

  private deliver(w: Watcher, e: WatchEvent) {
    if (w.resource !== e.resource) return;
    if (w.namespace && e.object.metadata.namespace !== w.namespace) return;
    if (!matches(e.object, w.selector)) return;
    w.res.write(`${JSON.stringify({ type: e.type, object: e.object })}\n`);
  }

  /** Delete an object and, unless orphaning, everything that it owns (and, for a namespace, contains). */
  private remove(resource: string, o: Obj, policy: string) {
    this.writes.push({ verb: "delete", resource, name: o.metadata.name });
    if (policy !== "Orphan") {
      for (const [, child] of [...this.objects]) {
        const owned = (child.metadata.ownerReferences ?? []).some(
          (r: { uid: string }) => r.uid === o.metadata.uid,
        );
        const contained = o.kind === "Namespace" && child.metadata.namespace === o.metadata.name;
        const childResource = this.kindToResource(child) as string;
        if (
          (owned || contained) &&
          this.objects.has(this.key(childResource, child.metadata.namespace, child.metadata.name))
        )
          this.remove(childResource, child, policy);
      }
    }
    this.store(resource, o, "DELETED");
  }

  // ------------------------------------------------------------------ controllers

  /** Deployment -> ReplicaSet (per template hash) -> Pods, as kube-controller-manager would. */
  private reconcileControllers() {
    for (const d of [...this.objects.values()].filter((o) => o.kind === "Deployment")) {
      const hash = createHash("sha256").update(sortedJson(d.spec.template)).digest("hex").slice(0, 10);
      const rsName = `${d.metadata.name}-${hash}`;
      const ns = d.metadata.namespace as string;
      const owned = [...this.objects.values()].filter(
        (o) =>
          o.kind === "ReplicaSet" &&
          o.metadata.namespace === ns &&
          o.metadata.ownerReferences?.[0]?.uid === d.metadata.uid,
      );
      for (const rs of owned) {
        const replicas = rs.metadata.name === rsName ? d.spec.replicas : 0;
        if (rs.spec.replicas !== replicas) {
          rs.spec.replicas = replicas;
          this.store("replicasets", rs, "MODIFIED");
        }
      }
      if (!owned.some((rs) => rs.metadata.name === rsName)) {
        const rs: Obj = {
          apiVersion: "apps/v1",
          kind: "ReplicaSet",
          metadata: {
            name: rsName,
            namespace: ns,
            labels: { ...d.spec.template.metadata?.labels, "pod-template-hash": hash },
            ownerReferences: [
              {
                apiVersion: "apps/v1",
                kind: "Deployment",
                name: d.metadata.name,
                uid: d.metadata.uid,
                controller: true,
              },
            ],
            uid: randomUUID(),
            creationTimestamp: new Date().toISOString(),
          },
          spec: { replicas: d.spec.replicas, template: clone(d.spec.template) },
        };
        this.store("replicasets", rs, "ADDED");
      }
    }
    for (const rs of [...this.objects.values()].filter((o) => o.kind === "ReplicaSet"))
      this.reconcileReplicaSet(rs);
  }

  private reconcileReplicaSet(rs: Obj) {
    const ns = rs.metadata.namespace as string;
    const pods = [...this.objects.values()].filter(
      (o) =>
        o.kind === "Pod" &&
        o.metadata.namespace === ns &&
        o.metadata.ownerReferences?.[0]?.uid === rs.metadata.uid &&
        !o.metadata.deletionTimestamp,
    );
    const want = rs.spec.replicas ?? 0;
    for (let i = pods.length; i < want; i++) {
      const name = `${rs.metadata.name}-${randomUUID().slice(0, 5)}`;
      const pod: Obj = {
        apiVersion: "v1",
        kind: "Pod",
        metadata: {
          name,
          namespace: ns,
          labels: {
            ...rs.spec.template.metadata?.labels,
            "pod-template-hash": rs.metadata.labels["pod-template-hash"],
          },
          annotations: { ...rs.spec.template.metadata?.annotations },
          ownerReferences: [
            {
              apiVersion: "apps/v1",
              kind: "ReplicaSet",
              name: rs.metadata.name,
              uid: rs.metadata.uid,
              controller: true,
            },
          ],
          uid: randomUUID(),
          creationTimestamp: new Date(Date.now() + this.rv).toISOString(),
        },
        spec: clone(rs.spec.template.spec),
        status: { phase: "Pending", conditions: [{ type: "Ready", status: "False" }] },
      };
      this.store("pods", pod, "ADDED");
      if (this.autoReady) setImmediate(() => this.markReady(ns, name));
    }
    if (pods.length > want) {
      // ReplicaSet scale-down order: lowest pod-deletion-cost first, then not-ready, then newest.
      const cost = (p: Obj) =>
        Number(p.metadata.annotations?.["controller.kubernetes.io/pod-deletion-cost"] ?? 0);
      const ready = (p: Obj) =>
        (p.status?.conditions ?? []).some((c: any) => c.type === "Ready" && c.status === "True");
      const victims = [...pods]
        .sort(
          (a, b) =>
            cost(a) - cost(b) ||
            Number(ready(a)) - Number(ready(b)) ||
            b.metadata.creationTimestamp.localeCompare(a.metadata.creationTimestamp),
        )
        .slice(0, pods.length - want);
      for (const pod of victims) {
        // Graceful termination: the pod is Terminating first, then gone.
        pod.metadata.deletionTimestamp = new Date().toISOString();
        pod.status.conditions = [{ type: "Ready", status: "False" }];
        this.store("pods", pod, "MODIFIED");
        setImmediate(() => {
          const cur = this.objects.get(this.key("pods", ns, pod.metadata.name));
          if (cur) this.store("pods", cur, "DELETED");
        });
      }
    }
  }

  // ------------------------------------------------------------------ responses

  private json(res: ServerResponse, code: number, body: unknown) {
    res.writeHead(code, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  }

  private status(res: ServerResponse, code: number, reason: string, message: string) {
    this.json(res, code, {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message,
      reason,
      code,
    });
  }

  private notFound(res: ServerResponse, def: ResourceDef, name: string) {
    this.status(res, 404, "NotFound", `${def.resource} "${name}" not found`);
  }
}

/** Like an apiserver, refuse objects that do not match the Kubernetes schema (422 Invalid). */
function schemaError(obj: Obj): string | null {
  try {
    validateK8s(obj);
    return null;
  } catch (err) {
    return `${obj.kind} "${obj.metadata?.name}" is invalid: ${(err as Error).message}`;
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

/** Equality-based label selectors (`a=b,c=d`), which is all the driver uses. */
function parseSelector(s: string | null): [string, string][] {
  if (!s) return [];
  return s.split(",").map((part) => {
    const [k, v] = part.split("=");
    return [k as string, v ?? ""];
  });
}

function matches(o: Obj, selector: [string, string][]) {
  return selector.every(([k, v]) => o.metadata.labels?.[k] === v);
}

function mergePatch(target: any, patch: any): any {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch;
  const out = target && typeof target === "object" && !Array.isArray(target) ? target : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else if (v === undefined) continue;
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}
