import { randomUUID } from "node:crypto";
import type { ClusterDriver, EnvironmentHandle, ReplicaEvent, ReplicaStatus } from "@tessera/cluster";
import { type DeploymentConfig, deploymentConfig, type PlatformNotifier, splitReplicas } from "@tessera/core";
import {
  applications,
  clusters,
  type Database,
  type DeploymentState,
  deployments,
  organisations,
  type RevisionState,
  replicas,
  revisions,
} from "@tessera/db";
import { and, asc, eq, inArray, isNull, ne, or, sql } from "drizzle-orm";
import type { Redis } from "ioredis";
import { acquireOrRenewLease, releaseLease } from "../autoscaling/leader-lease.js";
import { type BuildCharge, EnvironmentBuilds } from "./environment-builds.js";
import { componentLog, type Log } from "./log.js";
import { type HandleSettings, replicaHandleEnv } from "./replica-env.js";
import {
  ACTIVE_REPLICA_STATES,
  activeReplicaRows,
  applyObservation,
  isServing,
  type ObservedReplica,
  type ReplicaRow,
} from "./replica-rows.js";

export type ClusterRow = typeof clusters.$inferSelect;
type DeploymentRow = typeof deployments.$inferSelect;

/** A revision without its (possibly large) code bundle. */
interface RevisionView {
  id: string;
  version: number;
  config: Record<string, unknown>;
  envHash: string;
  state: RevisionState;
  failureReason: string | null;
  createdAt: Date;
}

interface DeploymentView {
  dep: DeploymentRow;
  cluster: ClusterRow;
  orgSlug: string;
  applicationName: string;
}

export interface ControllerOptions {
  db: Database;
  notify: PlatformNotifier;
  /** The driver of one cluster; called once per cluster (the same instance may serve several). */
  driverFor: (cluster: ClusterRow) => ClusterDriver;
  /** With Redis, provisioners sharing it never reconcile the same deployment at once. */
  redis?: Redis;
  prefix?: string;
  handles?: HandleSettings;
  /** Period of the full reconcile of every cluster. Default 3000 ms. */
  intervalMs?: number;
  /** Upper bound on a replica's drain on stop. Default 30 s. */
  maxDrainS?: number;
  /**
   * How long a replica marked draining keeps running before it is stopped, so gateways have
   * reloaded their routing tables and send it nothing new (requests already on their way would
   * otherwise meet a closing socket). Default 2000 ms.
   */
  routingGraceMs?: number;
  log?: Log;
}

const ROLLING_OUT: RevisionState[] = ["pending", "building", "starting"];

/**
 * Reconciles desired state (Postgres) to actual state (cluster drivers), one deployment at a time:
 * replica rows follow what drivers report, the live revision runs `targetReplicas` replicas,
 * unhealthy replicas are replaced, a desired revision is rolled out replica by replica
 * (`rollout.maxSurge` / `maxUnavailable`) and promoted once enough of it is ready, or rolled back
 * with its failure reason. Every pass re-reads everything, so a pass interrupted anywhere (a
 * killed provisioner) is finished by the next one, which also re-adopts running replicas.
 */
export class Controller {
  private readonly db: Database;
  private readonly log: Log;
  private readonly drivers = new Map<string, ClusterDriver>();
  /** The driver and driver config each cached driver was made from. */
  private readonly driverMadeFor = new Map<string, string>();
  private readonly watched = new Map<ClusterDriver, () => void>();
  private readonly locks = new Map<string, Promise<void>>();
  private readonly kicks = new Map<string, NodeJS.Timeout>();
  private readonly waiters = new Map<string, Set<() => void>>();
  private readonly lastEvents = new Map<string, ReplicaEvent>();
  private readonly notReadySince = new Map<string, number>();
  private readonly stopping = new Map<string, Promise<void>>();
  private readonly holder = randomUUID();
  /** Warnings given once per subject (a reconcile pass every few seconds would repeat them). */
  private readonly warned = new Set<string>();
  readonly builds: EnvironmentBuilds;
  private timer: NodeJS.Timeout | null = null;
  private tickInFlight: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(private readonly options: ControllerOptions) {
    this.db = options.db;
    this.log = options.log ?? componentLog("controller");
    this.builds = new EnvironmentBuilds(this.db, this.log, () => this.kickAll());
  }

  // ------------------------------------------------------------------ loop

  /** True once `close` was called: work in flight should stop following and let others take over. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Reconciles everything now, then every `intervalMs`. */
  start(): void {
    const run = () => {
      if (this.closed) return;
      this.tickInFlight = this.reconcileAll()
        .catch((err) => this.log("error", "reconcile pass failed", { err: String(err) }))
        .finally(() => {
          if (!this.closed) this.timer = setTimeout(run, this.options.intervalMs ?? 3000);
        });
    };
    run();
  }

  /** Stops the loop; replicas keep running (the next provisioner adopts them). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const t of this.kicks.values()) clearTimeout(t);
    await this.tickInFlight;
    await Promise.all([...this.locks.values()]);
    await Promise.allSettled([...this.stopping.values()]);
    for (const unwatch of this.watched.values()) unwatch();
    await Promise.allSettled([...this.watched.keys()].map((d) => d.close()));
  }

  /** One pass over every cluster: provision, destroy, adopt/stop orphans, reconcile deployments. */
  async reconcileAll(): Promise<void> {
    // Events of replicas no row follows (orphans) would otherwise pile up.
    const staleBefore = Date.now() - 10 * 60_000;
    for (const [id, e] of this.lastEvents) if (e.at.getTime() < staleBefore) this.lastEvents.delete(id);
    const all = await this.db.select().from(clusters).where(ne(clusters.state, "deleted"));
    for (const cluster of all) {
      if (this.closed) return;
      try {
        if (cluster.deletedAt) {
          await this.destroyCluster(cluster.id);
          continue;
        }
        if (cluster.state === "pending" || cluster.state === "provisioning")
          await this.provisionCluster(cluster.id);
        await this.stopOrphans(cluster);
        const deps = await this.db
          .select({ id: deployments.id })
          .from(deployments)
          .where(
            and(
              eq(deployments.clusterId, cluster.id),
              or(isNull(deployments.deletedAt), ne(deployments.state, "deleted")),
            ),
          );
        for (const d of deps) await this.reconcileDeployment(d.id);
      } catch (err) {
        this.log("error", "cluster reconcile failed", { clusterId: cluster.id, err: String(err) });
      }
    }
  }

  // ------------------------------------------------------------------ clusters

  private driverOf(cluster: ClusterRow): ClusterDriver {
    const madeFor = JSON.stringify([cluster.driver, cluster.driverConfig]);
    if (this.driverMadeFor.get(cluster.id) !== madeFor) this.forgetDriver(cluster.id);
    let driver = this.drivers.get(cluster.id);
    if (!driver) {
      driver = this.options.driverFor(cluster);
      this.drivers.set(cluster.id, driver);
      this.driverMadeFor.set(cluster.id, madeFor);
      if (!this.watched.has(driver))
        this.watched.set(
          driver,
          driver.watch((event) => this.onReplicaEvent(event)),
        );
    }
    return driver;
  }

  /**
   * The cluster is gone, or an operator changed where it runs (its driver config): the next call
   * makes a driver from the row again. The old one is unsubscribed unless another cluster still
   * uses it (the factory may share one driver between clusters, so it is never closed here).
   */
  private forgetDriver(clusterId: string): void {
    const old = this.drivers.get(clusterId);
    this.drivers.delete(clusterId);
    this.driverMadeFor.delete(clusterId);
    if (!old || [...this.drivers.values()].includes(old)) return;
    this.watched.get(old)?.();
    this.watched.delete(old);
  }

  private async clusterRow(clusterId: string): Promise<ClusterRow | undefined> {
    const [row] = await this.db.select().from(clusters).where(eq(clusters.id, clusterId));
    return row;
  }

  /** Creates or adopts the cluster's space; a failure is recorded on the cluster and thrown. */
  async provisionCluster(clusterId: string): Promise<void> {
    const cluster = await this.clusterRow(clusterId);
    if (!cluster || cluster.deletedAt) return;
    const [org] = await this.db
      .select({ slug: organisations.slug })
      .from(organisations)
      .where(eq(organisations.id, cluster.orgId));
    if (cluster.state === "pending")
      await this.db.update(clusters).set({ state: "provisioning" }).where(eq(clusters.id, clusterId));
    try {
      const provisioned = await this.driverOf(cluster).provisionCluster({
        clusterId,
        orgId: cluster.orgId,
        orgSlug: org?.slug ?? cluster.orgId,
        name: cluster.name,
        quota: cluster.quota,
        driverConfig: cluster.driverConfig,
      });
      await this.db
        .update(clusters)
        .set({ state: "ready", stateReason: null, driverState: provisioned.state })
        .where(and(eq(clusters.id, clusterId), isNull(clusters.deletedAt)));
    } catch (err) {
      await this.db
        .update(clusters)
        .set({ state: "failed", stateReason: errorMessage(err) })
        .where(and(eq(clusters.id, clusterId), isNull(clusters.deletedAt)));
      throw err;
    }
  }

  async destroyCluster(clusterId: string): Promise<void> {
    const cluster = await this.clusterRow(clusterId);
    if (!cluster?.deletedAt || cluster.state === "deleted") return;
    await this.driverOf(cluster).destroyCluster(clusterId);
    await this.db
      .update(replicas)
      .set({ state: "stopped", stoppedAt: new Date(), stateReason: "cluster deleted" })
      .where(and(eq(replicas.clusterId, clusterId), inArray(replicas.state, ACTIVE_REPLICA_STATES)));
    await this.db.update(clusters).set({ state: "deleted" }).where(eq(clusters.id, clusterId));
    // Its driver (and the watch it holds) has nothing left to serve.
    this.forgetDriver(clusterId);
  }

  /** Builds (or finds) an environment on a cluster ahead of the replicas that will need it. */
  async buildEnvironment(clusterId: string, hash: string) {
    const cluster = await this.clusterRow(clusterId);
    if (!cluster || cluster.deletedAt) return { state: "failed" as const, reason: "cluster not found" };
    return this.builds.finished(this.driverOf(cluster), clusterId, hash);
  }

  /** Replicas a driver runs that no active row accounts for (a row written off while it ran). */
  private async stopOrphans(cluster: ClusterRow): Promise<void> {
    if (cluster.state !== "ready") return;
    const driver = this.driverOf(cluster);
    const listed = await driver.listReplicas(cluster.id);
    if (listed.length === 0) return;
    // Rows are read after the listing: a replica is only started after its row exists.
    const rows = await this.db
      .select({ id: replicas.id })
      .from(replicas)
      .where(and(eq(replicas.clusterId, cluster.id), inArray(replicas.state, ACTIVE_REPLICA_STATES)));
    const known = new Set(rows.map((r) => r.id));
    for (const s of listed) {
      if (known.has(s.replicaId) || s.phase === "stopped") continue;
      this.log("info", "stopping a replica no deployment accounts for", { replicaId: s.replicaId });
      this.stopInBackground(driver, cluster.id, s.replicaId, s.deploymentId, 0);
    }
  }

  // ------------------------------------------------------------------ deployments

  /** Re-reads one deployment and moves it one step towards its desired state. */
  async reconcileDeployment(deploymentId: string): Promise<void> {
    await this.withLock(deploymentId, async () => {
      const view = await this.loadView(deploymentId);
      if (!view || view.cluster.deletedAt) return;
      await this.reconcileView(view);
    });
    this.wakeWaiters(deploymentId);
  }

  private async loadView(deploymentId: string): Promise<DeploymentView | undefined> {
    const [row] = await this.db
      .select({
        dep: deployments,
        cluster: clusters,
        orgSlug: organisations.slug,
        applicationName: applications.name,
      })
      .from(deployments)
      .innerJoin(clusters, eq(clusters.id, deployments.clusterId))
      .innerJoin(applications, eq(applications.id, deployments.applicationId))
      .innerJoin(organisations, eq(organisations.id, deployments.orgId))
      .where(eq(deployments.id, deploymentId));
    return row;
  }

  private async reconcileView(view: DeploymentView): Promise<void> {
    const { dep, cluster } = view;
    if (cluster.state !== "ready" && !dep.deletedAt) return;
    const driver = this.driverOf(cluster);
    const listed = (await driver.listReplicas(cluster.id)).filter((s) => s.deploymentId === dep.id);
    const rows = await activeReplicaRows(this.db, dep.id);
    await this.syncRows(view, driver, rows, listed);
    const active = rows.filter((r) => r.state !== "stopped" && r.state !== "failed");

    if (dep.deletedAt) {
      // Rollouts of a deleted deployment end here (their jobs stop following them).
      await this.db
        .update(revisions)
        .set({ state: "superseded" })
        .where(and(eq(revisions.deploymentId, dep.id), inArray(revisions.state, ROLLING_OUT)));
      await this.drain(view, driver, active.filter(isServing), "deployment deleted");
      if (active.length === 0 && dep.state !== "deleted")
        await this.db
          .update(deployments)
          .set({ state: "deleted", updatedAt: new Date() })
          .where(eq(deployments.id, dep.id));
      return;
    }

    const revs = await this.revisionsOf(dep);
    await this.supersedeAbandoned(dep);
    const desired = revs.get(dep.desiredRevisionId ?? "");
    const live = revs.get(dep.liveRevisionId ?? "");
    if (desired && desired.id !== live?.id && ROLLING_OUT.includes(desired.state)) {
      const newStarted = active.some((r) => r.revisionId === desired.id);
      // Until the new revision has replicas, the live one is looked after as usual.
      if (!newStarted && live) {
        await this.keepServing(view, driver, live, active, { setState: false });
        // The step counts what keepServing just started or drained.
        return this.stepRollout(view, driver, desired, live, await activeReplicaRows(this.db, dep.id));
      }
      await this.stepRollout(view, driver, desired, live, active);
    } else {
      await this.keepServing(view, driver, live, active);
    }
  }

  private async revisionsOf(dep: DeploymentRow): Promise<Map<string, RevisionView>> {
    const ids = [dep.liveRevisionId, dep.desiredRevisionId, dep.traffic?.canaryRevisionId].filter(
      (x): x is string => !!x,
    );
    if (ids.length === 0) return new Map();
    const rows = await this.db
      .select({
        id: revisions.id,
        version: revisions.version,
        config: revisions.config,
        envHash: revisions.envHash,
        state: revisions.state,
        failureReason: revisions.failureReason,
        createdAt: revisions.createdAt,
      })
      .from(revisions)
      .where(inArray(revisions.id, ids));
    return new Map(rows.map((r) => [r.id, r]));
  }

  /**
   * A revision replaced by a newer deploy before it went live will never roll out. The desired
   * pointer is read in the same statement: a deploy committing meanwhile is never mistaken for one.
   */
  private async supersedeAbandoned(dep: DeploymentRow): Promise<void> {
    await this.db
      .update(revisions)
      .set({ state: "superseded" })
      .where(
        and(
          eq(revisions.deploymentId, dep.id),
          inArray(revisions.state, ROLLING_OUT),
          sql`${revisions.id} is distinct from (select ${deployments.desiredRevisionId} from ${deployments} where ${deployments.id} = ${dep.id})`,
          // A canary is not rolled out, yet serves: it is the traffic split's to end.
          sql`${revisions.id}::text is distinct from (select ${deployments.traffic}->>'canaryRevisionId' from ${deployments} where ${deployments.id} = ${dep.id})`,
        ),
      );
  }

  /** Rows follow the driver; replicas the driver no longer knows are written off. */
  private async syncRows(
    view: DeploymentView,
    driver: ClusterDriver,
    rows: ReplicaRow[],
    listed: ReplicaStatus[],
  ): Promise<void> {
    const byId = new Map(listed.map((s) => [s.replicaId, s]));
    let routing = false;
    for (const row of rows) {
      const status = byId.get(row.id);
      const event = this.lastEvents.get(row.id);
      let seen: ObservedReplica;
      if (status) seen = status;
      else if (event && (event.phase === "failed" || event.phase === "stopped")) seen = event;
      else if (row.state === "draining") seen = { phase: "stopped" };
      else seen = { phase: "failed", reason: "the replica is no longer running on the cluster" };
      const wasReady = row.state === "ready";
      routing = (await applyObservation(this.db, row, seen)) || routing;
      if (wasReady && row.state === "starting") this.notReadySince.set(row.id, Date.now());
      if (row.state === "ready") this.notReadySince.delete(row.id);
      if (row.state === "stopped" || row.state === "failed") {
        this.lastEvents.delete(row.id);
        this.notReadySince.delete(row.id);
        // A failed process may still be known to the driver (crash loop): clean it up.
        if (status && status.phase !== "stopped")
          this.stopInBackground(driver, view.cluster.id, row.id, view.dep.id, 0);
      } else if (row.state === "draining" && status) {
        // Resumes a stop a previous provisioner started and did not finish.
        this.stopInBackground(driver, view.cluster.id, row.id, view.dep.id, this.drainSeconds(undefined));
      }
    }
    if (routing) await this.notifyRouting(view.dep.id);
  }

  /**
   * The live revision runs `targetReplicas` healthy replicas (shared with a running canary by its
   * traffic share); other revisions' replicas go once the live one has enough ready.
   */
  private async keepServing(
    view: DeploymentView,
    driver: ClusterDriver,
    live: RevisionView | undefined,
    active: ReplicaRow[],
    opts: { setState: boolean } = { setState: true },
  ): Promise<void> {
    const { dep } = view;
    const serving = active.filter(isServing);
    const target = live ? dep.targetReplicas : 0;
    const canary = live ? await this.runningCanary(dep) : undefined;
    const split = canary ? splitReplicas(target, dep.traffic!.canaryPercent) : { live: target, canary: 0 };
    const ready = live ? await this.keepRevision(view, driver, live, serving, split.live, 0) : 0;
    if (canary) await this.keepCanary(view, driver, canary, serving, split.canary);
    const kept = new Set([live?.id, canary?.id]);
    const others = serving.filter((r) => !kept.has(r.revisionId));
    // Replicas of an older or failed revision keep serving until the live one has enough ready.
    const leaving = ready >= split.live ? others : others.filter((r) => r.state !== "ready");
    await this.drain(view, driver, leaving, "replaced by the live revision");
    if (live && opts.setState)
      await this.setDeploymentState(dep, this.servingState(dep, live, ready, split.live));
  }

  /**
   * Keeps `count` healthy replicas of one revision, replacing unhealthy ones; returns how many are
   * ready. `onFailure` (a canary) turns a failed replica or environment into the revision's failure
   * instead of endless replacements.
   */
  private async keepRevision(
    view: DeploymentView,
    driver: ClusterDriver,
    rev: RevisionView,
    serving: ReplicaRow[],
    count: number,
    notBefore: number,
    onFailure?: (reason: string) => Promise<void>,
  ): Promise<number> {
    const config = parseConfig(rev);
    let mine = serving.filter((r) => r.revisionId === rev.id);
    for (const r of mine) {
      const reason = this.unhealthyReason(r, config);
      if (!reason) continue;
      if (onFailure) {
        await onFailure(reason);
        return 0;
      }
      await this.replaceUnhealthy(view, driver, r, reason);
    }
    mine = mine.filter((r) => isServing(r));
    if (mine.length < count) {
      const env = this.builds.ensure(driver, view.cluster.id, rev.envHash, notBefore, chargeOf(view, rev));
      if (env.state === "ready")
        await this.startReplicas(view, driver, rev, config, env.handle, count - mine.length);
      else if (env.state === "failed") {
        if (onFailure) await onFailure(`environment build failed: ${env.reason}`);
        else if (!this.warned.has(`env:${rev.id}`)) {
          this.warned.add(`env:${rev.id}`);
          this.log("warn", "a serving revision's environment is not available", {
            deploymentId: view.dep.id,
            revisionId: rev.id,
            reason: env.reason,
          });
        }
      }
    }
    if (mine.length > count) {
      const extra = [...mine].sort(stopOrder).slice(0, mine.length - count);
      await this.drain(view, driver, extra, "scaled down");
    }
    return mine.filter((r) => r.state === "ready").length;
  }

  /** The canary revision while its split is in force and it has not failed. */
  private async runningCanary(dep: DeploymentRow): Promise<RevisionView | undefined> {
    const id = dep.traffic?.canaryRevisionId;
    if (!id || dep.desiredRevisionId !== dep.liveRevisionId) return undefined;
    const rev = (await this.revisionsOf(dep)).get(id);
    return rev && ROLLING_OUT.includes(rev.state) ? rev : undefined;
  }

  /** A canary's replicas, its share of the target; a canary that fails is marked failed (abort it). */
  private async keepCanary(
    view: DeploymentView,
    driver: ClusterDriver,
    canary: RevisionView,
    serving: ReplicaRow[],
    count: number,
  ): Promise<void> {
    const fail = async (reason: string) => {
      await this.db
        .update(revisions)
        .set({ state: "failed", failureReason: reason.slice(0, 4000) })
        .where(and(eq(revisions.id, canary.id), inArray(revisions.state, ROLLING_OUT)));
      canary.state = "failed";
      this.log("warn", "canary failed", { deploymentId: view.dep.id, revisionId: canary.id, reason });
      await this.drain(
        view,
        driver,
        serving.filter((r) => r.revisionId === canary.id),
        "canary failed",
      );
    };
    const failed = await this.failedReplicaOf(canary.id);
    if (failed) return fail(`a replica failed: ${failed}`);
    if (canary.state === "pending") await this.setRevisionState(canary, "starting");
    await this.keepRevision(view, driver, canary, serving, count, canary.createdAt.getTime(), fail);
  }

  private servingState(
    dep: DeploymentRow,
    live: RevisionView,
    ready: number,
    target: number,
  ): DeploymentState {
    const scaling = dep.scaling as { numReplicas?: unknown };
    if (scaling.numReplicas === 0 || (scaling.numReplicas === undefined && live.config.numReplicas === 0))
      return "parked";
    return ready >= target ? "ready" : "degraded";
  }

  /** Compare-and-set on the state this pass read, so a deploy or delete committed meanwhile wins. */
  private async setDeploymentState(dep: DeploymentRow, state: DeploymentState): Promise<void> {
    if (dep.state === state) return;
    const updated = await this.db
      .update(deployments)
      .set({ state, updatedAt: new Date() })
      .where(and(eq(deployments.id, dep.id), eq(deployments.state, dep.state), isNull(deployments.deletedAt)))
      .returning({ id: deployments.id });
    if (updated.length === 0) return;
    const parkedChanged = (dep.state === "parked") !== (state === "parked");
    dep.state = state;
    // Gateways answer requests to a parked deployment at once instead of waking it.
    if (parkedChanged) await this.notifyRouting(dep.id);
  }

  /** One step of a rolling update towards `desired`; promotes it or rolls it back when decided. */
  private async stepRollout(
    view: DeploymentView,
    driver: ClusterDriver,
    desired: RevisionView,
    live: RevisionView | undefined,
    active: ReplicaRow[],
  ): Promise<void> {
    const { dep } = view;
    if (desired.state === "pending") {
      await this.setRevisionState(desired, "building");
      await this.setDeploymentState(dep, "deploying");
    }
    const build = this.builds.ensure(
      driver,
      view.cluster.id,
      desired.envHash,
      desired.createdAt.getTime(),
      chargeOf(view, desired),
    );
    if (build.state === "failed")
      return this.failRollout(view, driver, desired, live, `environment build failed: ${build.reason}`);
    if (build.state === "building") return;
    const env = build.handle;
    if (desired.state === "building") await this.setRevisionState(desired, "starting");

    const config = parseConfig(desired);
    const failed = await this.failedReplicaOf(desired.id);
    if (failed) return this.failRollout(view, driver, desired, live, `a replica failed: ${failed}`);
    const serving = active.filter(isServing);
    const fresh = serving.filter((r) => r.revisionId === desired.id);
    for (const r of fresh) {
      const reason = this.unhealthyReason(r, config);
      if (reason) return this.failRollout(view, driver, desired, live, reason);
    }
    const target = dep.targetReplicas;
    const freshReady = fresh.filter((r) => r.state === "ready").length;
    if (freshReady >= target) return this.promote(view, driver, desired, live);

    const old = serving.filter((r) => r.revisionId !== desired.id);
    const { maxSurge, maxUnavailable } = config.rollout;
    const minAvailable = Math.max(0, target - maxUnavailable);
    let available = freshReady + old.filter((r) => r.state === "ready").length;
    // Old replicas that serve nothing go at once; ready ones while enough stay available.
    const toStop = old.filter((r) => r.state !== "ready");
    for (const r of old.filter((o) => o.state === "ready").sort(stopOrder)) {
      if (available - 1 < minAvailable) break;
      toStop.push(r);
      available--;
    }
    await this.drain(view, driver, toStop, `rolling update to v${desired.version}`);
    const oldLeft = old.length - toStop.length;
    const room = Math.min(target - fresh.length, target + maxSurge - (fresh.length + oldLeft));
    if (room > 0) await this.startReplicas(view, driver, desired, config, env, room);
  }

  private async failedReplicaOf(revisionId: string): Promise<string | null> {
    const [row] = await this.db
      .select({ reason: replicas.stateReason })
      .from(replicas)
      .where(and(eq(replicas.revisionId, revisionId), eq(replicas.state, "failed")))
      .orderBy(asc(replicas.stoppedAt))
      .limit(1);
    return row ? (row.reason ?? "exited") : null;
  }

  private async setRevisionState(rev: RevisionView, state: "building" | "starting"): Promise<void> {
    await this.db
      .update(revisions)
      .set({ state })
      .where(and(eq(revisions.id, rev.id), inArray(revisions.state, ROLLING_OUT)));
    rev.state = state;
  }

  /** The new revision serves: the live pointer moves, the gateway hears, old replicas drain. */
  private async promote(
    view: DeploymentView,
    driver: ClusterDriver,
    desired: RevisionView,
    live: RevisionView | undefined,
  ): Promise<void> {
    const { dep } = view;
    const moved = await this.db.transaction(async (tx) => {
      const [updated] = await tx
        .update(deployments)
        .set({ liveRevisionId: desired.id, state: "ready", stateReason: null, updatedAt: new Date() })
        .where(and(eq(deployments.id, dep.id), eq(deployments.desiredRevisionId, desired.id)))
        .returning({ id: deployments.id });
      if (!updated) return false;
      await tx
        .update(revisions)
        .set({ state: "live", liveAt: new Date() })
        .where(eq(revisions.id, desired.id));
      if (live)
        await tx
          .update(revisions)
          .set({ state: "superseded" })
          .where(and(eq(revisions.id, live.id), eq(revisions.state, "live")));
      return true;
    });
    if (!moved) return;
    this.log("info", "revision is live", {
      deploymentId: dep.id,
      revisionId: desired.id,
      version: desired.version,
    });
    Object.assign(dep, { liveRevisionId: desired.id, state: "ready", stateReason: null });
    desired.state = "live";
    await this.notifyRouting(dep.id);
    await this.keepServing(view, driver, desired, await activeReplicaRows(this.db, dep.id));
  }

  /**
   * The new revision will not serve: it is marked failed with the reason, the deployment goes
   * back to the live revision (desired pointer and `version`, so the next deploy names the live
   * version as `prevVersion`), and the new replicas drain.
   */
  private async failRollout(
    view: DeploymentView,
    driver: ClusterDriver,
    desired: RevisionView,
    live: RevisionView | undefined,
    reason: string,
  ): Promise<void> {
    const { dep } = view;
    const text = reason.slice(0, 4000);
    const reverted = await this.db.transaction(async (tx) => {
      await tx
        .update(revisions)
        .set({ state: "failed", failureReason: text })
        .where(and(eq(revisions.id, desired.id), inArray(revisions.state, ROLLING_OUT)));
      const [updated] = await tx
        .update(deployments)
        .set({
          desiredRevisionId: dep.liveRevisionId,
          version: live?.version ?? 0,
          state: live ? "ready" : "failed",
          stateReason: `revision v${desired.version} failed: ${text}`,
          updatedAt: new Date(),
        })
        .where(and(eq(deployments.id, dep.id), eq(deployments.desiredRevisionId, desired.id)))
        .returning();
      return updated;
    });
    desired.state = "failed";
    if (!reverted) return;
    Object.assign(dep, reverted);
    this.log("warn", "rollout failed; staying on the live revision", {
      deploymentId: dep.id,
      revisionId: desired.id,
      reason: text,
    });
    const rows = await activeReplicaRows(this.db, dep.id);
    await this.drain(
      view,
      driver,
      rows.filter((r) => r.revisionId === desired.id && isServing(r)),
      "rolled back",
    );
    await this.notifyRouting(dep.id);
  }

  private unhealthyReason(r: ReplicaRow, config: DeploymentConfig): string | null {
    if (r.state !== "starting") return null;
    const hc = config.healthCheck;
    const now = Date.now();
    if (!r.readyAt) {
      const limitMs = hc.startupTimeoutS * 1000;
      return now - r.startedAt.getTime() > limitMs
        ? `never became ready within ${hc.startupTimeoutS}s`
        : null;
    }
    const since = this.notReadySince.get(r.id);
    const graceS = hc.failureThreshold * hc.periodS + hc.timeoutS;
    return since !== undefined && now - since > graceS * 1000
      ? `failed readiness checks for over ${graceS}s`
      : null;
  }

  private async replaceUnhealthy(view: DeploymentView, driver: ClusterDriver, r: ReplicaRow, reason: string) {
    this.log("warn", "replacing an unhealthy replica", {
      deploymentId: view.dep.id,
      replicaId: r.id,
      reason,
    });
    await applyObservation(this.db, r, { phase: "failed", reason });
    this.stopInBackground(driver, view.cluster.id, r.id, view.dep.id, 0);
  }

  // ------------------------------------------------------------------ replicas

  private async startReplicas(
    view: DeploymentView,
    driver: ClusterDriver,
    rev: RevisionView,
    config: DeploymentConfig,
    environment: EnvironmentHandle,
    count: number,
  ): Promise<void> {
    const { dep, cluster } = view;
    const [withCode] = await this.db
      .select({ code: revisions.code })
      .from(revisions)
      .where(eq(revisions.id, rev.id));
    if (!withCode) return;
    const extraEnv = replicaHandleEnv(this.options.handles, {
      orgId: dep.orgId,
      orgSlug: view.orgSlug,
      applicationId: dep.applicationId,
      applicationName: view.applicationName,
    });
    let routing = false;
    for (let i = 0; i < count; i++) {
      const replicaId = randomUUID();
      // The row exists before the process does, so a listing never shows an unaccounted replica.
      const [row] = await this.db
        .insert(replicas)
        .values({
          id: replicaId,
          orgId: dep.orgId,
          clusterId: cluster.id,
          deploymentId: dep.id,
          revisionId: rev.id,
          state: "starting",
          resources: config.resources,
        })
        .returning();
      try {
        const status = await driver.startReplica({
          clusterId: cluster.id,
          orgId: dep.orgId,
          replicaId,
          deploymentId: dep.id,
          deploymentName: dep.name,
          applicationName: view.applicationName,
          revisionId: rev.id,
          revisionVersion: rev.version,
          runtime: config.runtime,
          config,
          code: withCode.code,
          environment,
          extraEnv,
        });
        routing = (await applyObservation(this.db, row!, status)) || routing;
      } catch (err) {
        await applyObservation(this.db, row!, {
          phase: "failed",
          reason: `could not start: ${errorMessage(err)}`,
        });
      }
    }
    this.log("info", "started replicas", { deploymentId: dep.id, revisionId: rev.id, count });
    if (routing) await this.notifyRouting(dep.id);
  }

  /**
   * Marks replicas draining and tells the gateways BEFORE stopping them, so routing moves away
   * first; the stops (with their drain) run in the background.
   */
  private async drain(view: DeploymentView, driver: ClusterDriver, rows: ReplicaRow[], reason: string) {
    if (rows.length === 0) return;
    let routing = false;
    for (const r of rows) {
      const wasReady = r.state === "ready";
      await applyObservation(this.db, r, { phase: "draining", reason });
      routing = routing || wasReady;
    }
    if (routing) await this.notifyRouting(view.dep.id);
    const revs = await this.revisionsOf(view.dep);
    for (const r of rows) {
      const rev = revs.get(r.revisionId);
      const drainS = this.drainSeconds(rev ? parseConfig(rev) : undefined);
      this.stopInBackground(
        driver,
        view.cluster.id,
        r.id,
        view.dep.id,
        drainS,
        this.options.routingGraceMs ?? 2000,
      );
    }
  }

  private drainSeconds(config: DeploymentConfig | undefined): number {
    const max = this.options.maxDrainS ?? 30;
    return Math.min(config?.requestTimeoutS ?? max, max);
  }

  private stopInBackground(
    driver: ClusterDriver,
    clusterId: string,
    replicaId: string,
    deploymentId: string,
    drainTimeoutS: number,
    graceMs = 0,
  ): void {
    if (this.stopping.has(replicaId)) return;
    const stop = new Promise((resolve) => setTimeout(resolve, graceMs))
      .then(() => driver.stopReplica(clusterId, replicaId, { drainTimeoutS }))
      .then(async () => {
        await this.db
          .update(replicas)
          .set({ state: "stopped", stoppedAt: new Date() })
          .where(and(eq(replicas.id, replicaId), eq(replicas.state, "draining")));
      })
      .catch((err) => this.log("warn", "could not stop replica", { replicaId, err: String(err) }))
      .finally(() => {
        this.stopping.delete(replicaId);
        this.kick(deploymentId);
      });
    this.stopping.set(replicaId, stop);
  }

  private onReplicaEvent(event: ReplicaEvent): void {
    this.lastEvents.set(event.replicaId, event);
    this.kick(event.deploymentId);
  }

  // ------------------------------------------------------------------ coordination

  /** Schedules a reconcile of one deployment soon (coalescing bursts of events). */
  kick(deploymentId: string): void {
    if (this.closed || this.kicks.has(deploymentId)) return;
    this.kicks.set(
      deploymentId,
      setTimeout(() => {
        this.kicks.delete(deploymentId);
        this.reconcileDeployment(deploymentId).catch((err) =>
          this.log("error", "deployment reconcile failed", { deploymentId, err: String(err) }),
        );
      }, 25),
    );
  }

  private kickAll(): void {
    void this.db
      .select({ id: deployments.id })
      .from(deployments)
      .innerJoin(revisions, eq(revisions.id, deployments.desiredRevisionId))
      .where(and(isNull(deployments.deletedAt), inArray(revisions.state, ROLLING_OUT)))
      .then((rows) => {
        for (const r of rows) this.kick(r.id);
      })
      .catch((err) => this.log("warn", "could not look up rollouts to resume", { err: String(err) }));
  }

  /** Resolves after the next reconcile of the deployment, or after `ms`. */
  waitForChange(deploymentId: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const set = this.waiters.get(deploymentId) ?? new Set();
      this.waiters.set(deploymentId, set);
      const done = () => {
        clearTimeout(timer);
        set.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      set.add(done);
    });
  }

  private wakeWaiters(deploymentId: string): void {
    for (const w of [...(this.waiters.get(deploymentId) ?? [])]) w();
  }

  /**
   * In-process serialisation per deployment, and with Redis a short lease so two provisioners
   * never act on the same deployment at once (the loser retries on its next pass).
   */
  private async withLock(deploymentId: string, fn: () => Promise<void>): Promise<void> {
    const previous = this.locks.get(deploymentId) ?? Promise.resolve();
    const run = previous.then(async () => {
      const { redis } = this.options;
      const key = `${this.options.prefix ?? ""}controller:deployment:${deploymentId}`;
      if (redis && !(await acquireOrRenewLease(redis, key, this.holder, 30_000))) {
        this.kickLater(deploymentId);
        return;
      }
      try {
        await fn();
      } finally {
        if (redis) await releaseLease(redis, key, this.holder).catch(() => {});
      }
    });
    const settled = run.catch(() => {});
    this.locks.set(deploymentId, settled);
    settled.finally(() => {
      if (this.locks.get(deploymentId) === settled) this.locks.delete(deploymentId);
    });
    await run;
  }

  private kickLater(deploymentId: string): void {
    setTimeout(() => this.kick(deploymentId), 1000).unref();
  }

  private async notifyRouting(deploymentId: string): Promise<void> {
    try {
      await this.options.notify({ kind: "routingChanged", deploymentId });
    } catch (err) {
      // Gateways also re-read Postgres periodically: a lost notice only delays.
      this.log("warn", "routingChanged notice not delivered", { deploymentId, err: String(err) });
    }
  }
}

/** Not-ready replicas first, then the newest: what scaling down gives up most cheaply. */
function stopOrder(a: ReplicaRow, b: ReplicaRow): number {
  if ((a.state === "ready") !== (b.state === "ready")) return a.state === "ready" ? 1 : -1;
  return b.startedAt.getTime() - a.startedAt.getTime();
}

function chargeOf(view: DeploymentView, rev: RevisionView): BuildCharge {
  return { orgId: view.dep.orgId, deploymentId: view.dep.id, revisionId: rev.id };
}

function parseConfig(rev: RevisionView): DeploymentConfig {
  // Stored configs were validated on deploy; parsing again applies defaults added since.
  return deploymentConfig.parse(rev.config);
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
