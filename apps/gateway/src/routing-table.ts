import { trafficSplit } from "@tessera/core";
import type { Database } from "@tessera/db";
import { applications, deployments, organisations, replicas, revisions } from "@tessera/db";
import { and, eq, inArray, isNotNull, isNull } from "drizzle-orm";
import { DB_CALL_TIMEOUT_MS, withTimeout } from "./deadline.js";
import type { Log } from "./log.js";

/** One ready replica the router may send requests to. */
export interface ReplicaEndpoint {
  id: string;
  /** `http://host:port`. */
  address: string;
  revisionId: string;
}

/** Per-deployment router limits, read from the live revision's config (defaults as in @tessera/core). */
export interface DeploymentLimits {
  maxOngoingRequests: number;
  maxQueuedRequests: number;
  requestTimeoutMs: number;
  maxBodyBytes: number;
}

export interface DeploymentRoute {
  id: string;
  orgId: string;
  applicationId: string;
  name: string;
  liveRevisionId: string | null;
  /** The live revision's version, matched by the revision pin header. */
  liveVersion?: number | null;
  /** A running canary: its revision and share of requests (see `chooseServingRevision`). */
  canary?: CanaryRoute | null;
  limits: DeploymentLimits;
  /** The operator set `numReplicas: 0` (or the deployment is in state `parked`): answer at once, never wake. */
  parked: boolean;
  replicas: ReplicaEndpoint[];
}

export interface CanaryRoute {
  revisionId: string;
  version: number;
  percent: number;
}

export interface ApplicationRoute {
  id: string;
  orgId: string;
  orgSlug: string;
  name: string;
  /** The deployment served at `/v1/{org}/{app}/...`; null when the application names none. */
  ingress: DeploymentRoute | null;
  deployments: Map<string, DeploymentRoute>;
}

export interface RoutingSnapshot {
  /** Keyed by `${orgSlug}/${appName}`. */
  applications: Map<string, ApplicationRoute>;
  deployments: Map<string, DeploymentRoute>;
  loadedAt: number;
}

export const EMPTY_SNAPSHOT: RoutingSnapshot = {
  applications: new Map(),
  deployments: new Map(),
  loadedAt: 0,
};

export function applicationKey(orgSlug: string, appName: string): string {
  return `${orgSlug}/${appName}`;
}

const DEFAULT_LIMITS: DeploymentLimits = {
  maxOngoingRequests: 8,
  maxQueuedRequests: 100,
  requestTimeoutMs: 60_000,
  maxBodyBytes: 10 * 1024 * 1024,
};

function positive(value: unknown, fallback: number): number {
  return typeof value === "number" && Number.isFinite(value) && value >= 0 ? value : fallback;
}

/** Revision configs are validated when deployed; still, a bad row must not take the gateway down. */
export function limitsOf(config: Record<string, unknown> | null): DeploymentLimits {
  if (!config) return DEFAULT_LIMITS;
  return {
    maxOngoingRequests: Math.max(1, positive(config.maxOngoingRequests, DEFAULT_LIMITS.maxOngoingRequests)),
    maxQueuedRequests: positive(config.maxQueuedRequests, DEFAULT_LIMITS.maxQueuedRequests),
    requestTimeoutMs:
      positive(config.requestTimeoutS, DEFAULT_LIMITS.requestTimeoutMs / 1000) * 1000 ||
      DEFAULT_LIMITS.requestTimeoutMs,
    maxBodyBytes: positive(config.maxBodyBytes, DEFAULT_LIMITS.maxBodyBytes),
  };
}

/**
 * Parked = the operator pinned the deployment at zero replicas. `deployments.scaling` wins over the
 * revision's config (the same precedence as the autoscaler's `resolveScaling`); an autoscaled
 * deployment at zero is merely asleep and gets woken instead.
 */
export function isParked(
  state: string,
  scaling: Record<string, unknown>,
  config: Record<string, unknown> | null,
): boolean {
  if (state === "parked") return true;
  const source =
    scaling.autoscaling !== undefined || scaling.numReplicas !== undefined ? scaling : (config ?? {});
  return source.autoscaling === undefined && source.numReplicas === 0;
}

/** Reads every live application, deployment and ready replica into one immutable snapshot. */
export async function loadRoutingSnapshot(db: Database): Promise<RoutingSnapshot> {
  const rows = await db
    .select({
      appId: applications.id,
      appName: applications.name,
      ingress: applications.ingressDeployment,
      orgId: organisations.id,
      orgSlug: organisations.slug,
      deploymentId: deployments.id,
      deploymentName: deployments.name,
      state: deployments.state,
      scaling: deployments.scaling,
      liveRevisionId: deployments.liveRevisionId,
      liveVersion: revisions.version,
      traffic: deployments.traffic,
      config: revisions.config,
    })
    .from(applications)
    .innerJoin(organisations, eq(organisations.id, applications.orgId))
    .leftJoin(deployments, and(eq(deployments.applicationId, applications.id), isNull(deployments.deletedAt)))
    .leftJoin(revisions, eq(revisions.id, deployments.liveRevisionId))
    .where(isNull(applications.deletedAt));

  const snapshot: RoutingSnapshot = { applications: new Map(), deployments: new Map(), loadedAt: Date.now() };
  const ingressNames = new Map<string, string | null>();
  const canaries = new Map<string, { deploymentId: string; percent: number }>();
  for (const row of rows) {
    const key = applicationKey(row.orgSlug, row.appName);
    let app = snapshot.applications.get(key);
    if (!app) {
      app = {
        id: row.appId,
        orgId: row.orgId,
        orgSlug: row.orgSlug,
        name: row.appName,
        ingress: null,
        deployments: new Map(),
      };
      snapshot.applications.set(key, app);
      ingressNames.set(key, row.ingress);
    }
    if (!row.deploymentId || !row.deploymentName || row.state === "deleting" || row.state === "deleted")
      continue;
    const route: DeploymentRoute = {
      id: row.deploymentId,
      orgId: row.orgId,
      applicationId: row.appId,
      name: row.deploymentName,
      liveRevisionId: row.liveRevisionId,
      liveVersion: row.liveVersion,
      canary: null,
      limits: limitsOf(row.config),
      parked: isParked(row.state ?? "", row.scaling ?? {}, row.config),
      replicas: [],
    };
    app.deployments.set(route.name, route);
    snapshot.deployments.set(route.id, route);
    // Validated when written; a malformed split is ignored rather than taking the table down.
    const split = row.traffic ? trafficSplit.safeParse(row.traffic) : null;
    if (split?.success && row.liveRevisionId)
      canaries.set(split.data.canaryRevisionId, {
        deploymentId: route.id,
        percent: split.data.canaryPercent,
      });
  }
  if (canaries.size > 0) {
    const canaryRevisions = await db
      .select({ id: revisions.id, version: revisions.version, deploymentId: revisions.deploymentId })
      .from(revisions)
      .where(inArray(revisions.id, [...canaries.keys()]));
    for (const rev of canaryRevisions) {
      const canary = canaries.get(rev.id);
      const route =
        canary && canary.deploymentId === rev.deploymentId && snapshot.deployments.get(rev.deploymentId);
      if (route) route.canary = { revisionId: rev.id, version: rev.version, percent: canary.percent };
    }
  }
  for (const [key, app] of snapshot.applications) {
    const ingress = ingressNames.get(key);
    // An application of a single deployment needs no explicit ingress.
    app.ingress = ingress
      ? (app.deployments.get(ingress) ?? null)
      : app.deployments.size === 1
        ? app.deployments.values().next().value!
        : null;
  }

  const ids = [...snapshot.deployments.keys()];
  if (ids.length > 0) {
    const ready = await db
      .select({
        id: replicas.id,
        deploymentId: replicas.deploymentId,
        revisionId: replicas.revisionId,
        address: replicas.address,
      })
      .from(replicas)
      .where(
        and(inArray(replicas.deploymentId, ids), eq(replicas.state, "ready"), isNotNull(replicas.address)),
      );
    for (const r of ready) {
      snapshot.deployments
        .get(r.deploymentId)
        ?.replicas.push({ id: r.id, address: r.address!.replace(/\/+$/, ""), revisionId: r.revisionId });
    }
    // A stable order keeps router state stable across refreshes.
    for (const d of snapshot.deployments.values()) d.replicas.sort((a, b) => (a.id < b.id ? -1 : 1));
  }
  return snapshot;
}

export interface RoutingTableOptions {
  /** Full reload period: the safety net for lost pub/sub notices. */
  refreshIntervalMs?: number;
  /** Deadline of one reload (default DB_CALL_TIMEOUT_MS). */
  dbTimeoutMs?: number;
  log: Log;
}

/**
 * The gateway's view of where traffic goes. Reloaded in full on every change notice and
 * periodically; a failed reload keeps the last snapshot, so the data plane outlives Postgres.
 */
export class RoutingTable {
  snapshot: RoutingSnapshot = EMPTY_SNAPSHOT;
  lastError: string | null = null;
  private readonly listeners: ((s: RoutingSnapshot) => void)[] = [];
  private running: Promise<boolean> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly db: Database,
    private readonly options: RoutingTableOptions,
  ) {}

  onChange(listener: (s: RoutingSnapshot) => void): void {
    this.listeners.push(listener);
  }

  start(): Promise<boolean> {
    const period = this.options.refreshIntervalMs ?? 10_000;
    this.timer = setInterval(() => void this.refresh(), period);
    this.timer.unref();
    return this.refresh();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /**
   * Reloads now. Notices arriving during a reload coalesce into one more reload after it, so a
   * burst of replica changes costs two queries, and the last one always sees the final state.
   * Resolves true when the snapshot is current.
   */
  refresh(): Promise<boolean> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      let ok = false;
      do {
        this.again = false;
        ok = await this.reloadOnce();
      } while (this.again);
      this.running = null;
      return ok;
    })();
    return this.running;
  }

  private async reloadOnce(): Promise<boolean> {
    try {
      this.snapshot = await withTimeout(
        loadRoutingSnapshot(this.db),
        this.options.dbTimeoutMs ?? DB_CALL_TIMEOUT_MS,
        "loading the routing table",
      );
      if (this.lastError) this.options.log("info", "routing table reloaded after failures");
      this.lastError = null;
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (this.lastError !== message)
        this.options.log("warn", "routing table reload failed; serving the last known table", {
          err: message,
        });
      this.lastError = message;
      return false;
    }
    for (const listener of this.listeners) listener(this.snapshot);
    return true;
  }
}
