import { randomUUID } from "node:crypto";
import { type JobQueue, redisKeys } from "@tessera/core";
import {
  clusters,
  type Database,
  type DeploymentState,
  deployments,
  replicas,
  revisions,
  scalingEvents,
} from "@tessera/db";
import { and, eq, inArray, isNull, notInArray, sql } from "drizzle-orm";
import type { Redis } from "ioredis";
import { acquireOrRenewLease, leaderLeaseKey, releaseLease } from "./leader-lease.js";
import { decideReplicas, type PolicyDecision, type ScalingReason } from "./policy.js";
import {
  clearPolicyState,
  loadPolicyStates,
  type StoredPolicyState,
  savePolicyStates,
} from "./policy-state-store.js";
import { type ClusterQuota, quotaMaxReplicas, type ReplicaResources } from "./quota.js";
import { type EffectiveScaling, replicaResources, resolveScaling } from "./scaling-source.js";
import { aggregateOngoingSamples } from "./window.js";

export interface AutoscalerOptions {
  db: Database;
  redis: Redis;
  /** Redis key prefix shared with the gateway (`REDIS_PREFIX`). */
  prefix?: string;
  queue: JobQueue;
  /** How often every autoscaled deployment is evaluated. Default 1000 ms. */
  intervalMs?: number;
  /** Period the average is taken over (Ray Serve's `look_back_period_s`). Default 30 s. */
  lookbackMs?: number;
  /** Width of one window point. Default 1000 ms. */
  bucketMs?: number;
  /** A gateway's last sample counts until it is this old. Default 5000 ms. */
  staleMs?: number;
  /** Wake messages for the same deployment closer than this are handled once. Default 2000 ms. */
  wakeDebounceMs?: number;
  log?: (level: "info" | "warn" | "error", msg: string, fields?: Record<string, unknown>) => void;
}

export interface AutoscalerStats {
  ticks: number;
  lastTickAt: number | null;
  lastError: string | null;
  scalingChanges: number;
  wakes: number;
  /** Whether this instance held the leader lease at its last tick. */
  leader: boolean;
}

export interface AutoscalerHandle {
  /** Resolves once the wake subscription is active. */
  ready: Promise<void>;
  stats(): AutoscalerStats;
  /** Stops the loop and the wake subscription; resolves after the tick in flight finished. */
  stop(): Promise<void>;
}

/** Deployments in these states are left alone: nothing runs, or the operator parked them. */
const UNSCALED_STATES: DeploymentState[] = ["parked", "failed", "deleting", "deleted"];

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

interface DeploymentRow {
  id: string;
  orgId: string;
  clusterId: string;
  state: DeploymentState;
  scaling: Record<string, unknown>;
  targetReplicas: number;
  liveRevisionId: string | null;
  desiredRevisionId: string | null;
  revisionConfig: Record<string, unknown> | null;
  quota: ClusterQuota;
}

interface Deployment extends DeploymentRow {
  effective: EffectiveScaling;
  resources: ReplicaResources;
}

function defaultLog(level: "info" | "warn" | "error", msg: string, fields?: Record<string, unknown>) {
  const line = JSON.stringify({ level, component: "autoscaler", msg, ...fields });
  if (level === "info") console.log(line);
  else console.error(line);
}

export function startAutoscaler(options: AutoscalerOptions): AutoscalerHandle {
  const { db, redis, queue } = options;
  const keys = redisKeys(options.prefix);
  const intervalMs = options.intervalMs ?? 1000;
  const lookbackMs = options.lookbackMs ?? 30_000;
  const bucketMs = options.bucketMs ?? 1000;
  const staleMs = options.staleMs ?? 5000;
  const wakeDebounceMs = options.wakeDebounceMs ?? 2000;
  const log = options.log ?? defaultLog;

  const stats: AutoscalerStats = {
    ticks: 0,
    lastTickAt: null,
    lastError: null,
    scalingChanges: 0,
    wakes: 0,
    leader: false,
  };
  const holder = randomUUID();
  const leaseKey = leaderLeaseKey(keys.prefix);
  // Long enough to survive a slow tick, short enough that a dead leader is replaced quickly.
  const leaseTtlMs = Math.max(intervalMs * 5, 2000);
  // Target changes whose job could not be enqueued (Redis hiccup): retried every tick.
  const pendingJobs = new Map<string, string>();
  const warnedInvalid = new Set<string>();
  const lastWake = new Map<string, number>();
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let inFlight: Promise<void> = Promise.resolve();
  const wakesInFlight = new Set<Promise<void>>();

  async function loadDeployments(filter?: { clusterId?: string; id?: string }): Promise<Deployment[]> {
    const rows: DeploymentRow[] = await db
      .select({
        id: deployments.id,
        orgId: deployments.orgId,
        clusterId: deployments.clusterId,
        state: deployments.state,
        scaling: deployments.scaling,
        targetReplicas: deployments.targetReplicas,
        liveRevisionId: deployments.liveRevisionId,
        desiredRevisionId: deployments.desiredRevisionId,
        revisionConfig: revisions.config,
        quota: clusters.quota,
      })
      .from(deployments)
      .innerJoin(clusters, eq(clusters.id, deployments.clusterId))
      // Live revision first; during a first deploy only the desired one exists.
      .leftJoin(
        revisions,
        sql`${revisions.id} = coalesce(${deployments.liveRevisionId}, ${deployments.desiredRevisionId})`,
      )
      .where(
        and(
          isNull(deployments.deletedAt),
          isNull(clusters.deletedAt),
          filter?.clusterId ? eq(deployments.clusterId, filter.clusterId) : undefined,
          filter?.id ? eq(deployments.id, filter.id) : undefined,
        ),
      );
    return rows.map((r) => ({
      ...r,
      effective: resolveScaling(r.scaling, r.revisionConfig),
      resources: replicaResources(r.revisionConfig),
    }));
  }

  function isAutoscaled(d: Deployment): d is Deployment & { effective: { mode: "autoscaling" } } {
    if (d.effective.mode === "invalid") {
      const key = `${d.id}:${d.effective.error}`;
      if (!warnedInvalid.has(key)) {
        warnedInvalid.add(key);
        log("warn", "deployment has an invalid scaling config; not autoscaling it", {
          deploymentId: d.id,
          error: d.effective.error,
        });
      }
      return false;
    }
    return (
      d.effective.mode === "autoscaling" &&
      !UNSCALED_STATES.includes(d.state) &&
      (d.liveRevisionId !== null || d.desiredRevisionId !== null)
    );
  }

  function quotaFor(d: Deployment, all: readonly Deployment[]): number {
    const others = all.filter((o) => o.clusterId === d.clusterId && o.id !== d.id);
    return quotaMaxReplicas(d.quota, d.resources, others);
  }

  /**
   * Compare-and-set on everything the decision was based on, so a concurrent operator change, a
   * deploy or a second provisioner makes this write a no-op instead of overriding it.
   */
  async function writeTarget(
    d: Deployment,
    to: number,
    reason: ScalingReason,
    metrics: Record<string, unknown>,
  ): Promise<boolean> {
    const written = await db.transaction(async (tx) => {
      const updated = await tx
        .update(deployments)
        .set({ targetReplicas: to, updatedAt: sql`now()` })
        .where(
          and(
            eq(deployments.id, d.id),
            eq(deployments.targetReplicas, d.targetReplicas),
            isNull(deployments.deletedAt),
            notInArray(deployments.state, UNSCALED_STATES),
            sql`${deployments.scaling} = ${JSON.stringify(d.scaling)}::jsonb`,
            sql`${deployments.liveRevisionId} is not distinct from ${d.liveRevisionId}::uuid`,
          ),
        )
        .returning({ id: deployments.id });
      if (updated.length === 0) return false;
      await tx.insert(scalingEvents).values({
        orgId: d.orgId,
        deploymentId: d.id,
        fromReplicas: d.targetReplicas,
        toReplicas: to,
        reason,
        metrics,
      });
      return true;
    });
    if (written) {
      stats.scalingChanges++;
      log("info", "scaling deployment", { deploymentId: d.id, from: d.targetReplicas, to, reason });
      pendingJobs.set(d.id, d.orgId);
      await flushJobs([d.id]);
    }
    return written;
  }

  async function flushJobs(ids: Iterable<string> = [...pendingJobs.keys()]): Promise<void> {
    for (const id of ids) {
      const orgId = pendingJobs.get(id);
      if (orgId === undefined) continue;
      try {
        await queue.enqueue({ kind: "scaleDeployment", deploymentId: id }, { orgId });
        pendingJobs.delete(id);
      } catch (err) {
        log("warn", "could not enqueue scaleDeployment; will retry", { deploymentId: id, err: String(err) });
      }
    }
  }

  async function runningCounts(ids: string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    if (ids.length === 0) return out;
    const rows = await db
      .select({ deploymentId: replicas.deploymentId, n: sql<number>`count(*)::int` })
      .from(replicas)
      .where(and(inArray(replicas.deploymentId, ids), inArray(replicas.state, ["starting", "ready"])))
      .groupBy(replicas.deploymentId);
    for (const r of rows) out.set(r.deploymentId, r.n);
    return out;
  }

  async function tick(): Promise<void> {
    stats.leader = await acquireOrRenewLease(redis, leaseKey, holder, leaseTtlMs);
    if (!stats.leader) {
      // Jobs for targets this instance wrote before it lost the lease (or from wakes) still go out.
      await flushJobs();
      return;
    }
    const now = Date.now();
    const all = await loadDeployments();

    // Samples older than anything a window reads are dropped for every deployment, autoscaled or
    // not; the expiry removes the keys of deployments that are gone.
    const retentionMs = lookbackMs + staleMs + bucketMs;
    const trim = redis.pipeline();
    for (const d of all) {
      trim.zremrangebyscore(keys.ongoing(d.id), "-inf", now - retentionMs);
      trim.pexpire(keys.ongoing(d.id), retentionMs * 2);
    }
    if (all.length > 0) await trim.exec();

    const scaled = all.filter(isAutoscaled);
    if (scaled.length > 0) {
      const read = redis.pipeline();
      for (const d of scaled) read.zrangebyscore(keys.ongoing(d.id), now - lookbackMs - staleMs, "+inf");
      const results = (await read.exec()) ?? [];
      const states = await loadPolicyStates(
        redis,
        keys.prefix,
        scaled.map((d) => d.id),
      );
      const running = await runningCounts(scaled.map((d) => d.id));
      const toSave = new Map<string, StoredPolicyState>();

      for (const [i, d] of scaled.entries()) {
        const [err, members] = results[i] ?? [new Error("missing pipeline result"), null];
        if (err || !Array.isArray(members)) {
          log("warn", "could not read ongoing samples", { deploymentId: d.id, err: String(err) });
          continue;
        }
        const window = aggregateOngoingSamples(members as string[], { now, lookbackMs, bucketMs, staleMs });
        if (window.malformed > 0)
          log("warn", "ignored malformed ongoing samples", { deploymentId: d.id, count: window.malformed });
        const stored = states.get(d.id);
        const quotaMax = quotaFor(d, all);
        const decision = decideReplicas({
          config: d.effective.config,
          window: window.points,
          currentReplicas: d.targetReplicas,
          now,
          state: stored && stored.forReplicas === d.targetReplicas ? stored : null,
          quotaMaxReplicas: quotaMax,
        });
        if (decision.desired === d.targetReplicas) {
          toSave.set(d.id, { ...decision.state, forReplicas: d.targetReplicas });
          continue;
        }
        const metrics = decisionMetrics(decision, d, {
          quotaMaxReplicas: quotaMax,
          runningReplicas: running.get(d.id) ?? 0,
          windowPoints: window.points.length,
          gateways: window.gateways,
          latestOngoing: window.points.at(-1)?.ongoing ?? 0,
        });
        try {
          if (await writeTarget(d, decision.desired, decision.reason, metrics)) {
            // Later deployments of the same cluster see this one's new size in their quota.
            d.targetReplicas = decision.desired;
            toSave.set(d.id, { ...decision.state, forReplicas: decision.desired });
          }
        } catch (err) {
          // One deployment's failed write must not starve the others of their decisions.
          log("error", "could not write scaling decision", { deploymentId: d.id, err: String(err) });
        }
      }
      await savePolicyStates(redis, keys.prefix, toSave);
    }
    await flushJobs();
  }

  function decisionMetrics(
    decision: PolicyDecision,
    d: Deployment & { effective: { mode: "autoscaling" } },
    extra: Record<string, unknown>,
  ): Record<string, unknown> {
    const c = d.effective.config;
    return {
      avgOngoing: decision.avgOngoing,
      targetOngoingRequests: c.targetOngoingRequests,
      rawDesired: decision.rawDesired,
      proposed: decision.proposed,
      minReplicas: c.minReplicas,
      maxReplicas: c.maxReplicas,
      upscaleDelayS: c.upscaleDelayS,
      downscaleDelayS: c.downscaleDelayS,
      lookbackMs,
      ...extra,
    };
  }

  async function wake(deploymentId: string): Promise<void> {
    if (!UUID_RE.test(deploymentId)) {
      log("warn", "ignored wake message that is not a deployment id", {
        message: deploymentId.slice(0, 100),
      });
      return;
    }
    const now = Date.now();
    const last = lastWake.get(deploymentId);
    if (last !== undefined && now - last < wakeDebounceMs) return;
    lastWake.set(deploymentId, now);
    for (const [id, at] of lastWake) if (now - at >= wakeDebounceMs) lastWake.delete(id);

    const [target] = await loadDeployments({ id: deploymentId });
    if (!target || !isAutoscaled(target) || target.targetReplicas !== 0) return;
    const all = await loadDeployments({ clusterId: target.clusterId });
    const quotaMax = quotaFor(target, all);
    const to = Math.min(
      Math.max(1, target.effective.config.minReplicas),
      target.effective.config.maxReplicas,
      quotaMax,
    );
    if (to < 1) {
      log("warn", "cannot wake deployment: the cluster quota has no room", {
        deploymentId,
        quotaMaxReplicas: quotaMax,
      });
      return;
    }
    const c = target.effective.config;
    const written = await writeTarget(target, to, "wake", {
      source: "gateway",
      minReplicas: c.minReplicas,
      maxReplicas: c.maxReplicas,
      quotaMaxReplicas: quotaMax,
    });
    if (written) {
      stats.wakes++;
      // The zero-traffic clock that scaled it down must not scale it straight back.
      await clearPolicyState(redis, keys.prefix, deploymentId);
    }
  }

  const subscriber = redis.duplicate();
  subscriber.on("error", (err) => log("warn", "wake subscriber error", { err: String(err) }));
  subscriber.on("message", (channel: string, message: string) => {
    if (channel !== keys.wake || stopped) return;
    const p = wake(message.trim())
      .catch((err) => log("error", "wake failed", { deploymentId: message.slice(0, 100), err: String(err) }))
      .finally(() => wakesInFlight.delete(p));
    wakesInFlight.add(p);
  });
  const ready = subscriber.subscribe(keys.wake).then(() => undefined);
  ready.catch((err) => log("error", "could not subscribe to wake channel", { err: String(err) }));

  function schedule() {
    if (stopped) return;
    timer = setTimeout(() => {
      inFlight = tick()
        .then(() => {
          stats.lastError = null;
        })
        .catch((err) => {
          stats.lastError = String(err);
          log("error", "autoscaler tick failed", { err: String(err) });
        })
        .finally(() => {
          stats.ticks++;
          stats.lastTickAt = Date.now();
          schedule();
        });
    }, intervalMs);
  }
  schedule();

  return {
    ready,
    stats: () => ({ ...stats }),
    async stop() {
      if (stopped) return;
      stopped = true;
      if (timer) clearTimeout(timer);
      await inFlight;
      await Promise.all([...wakesInFlight]);
      await subscriber.quit().catch(() => subscriber.disconnect());
      if (stats.leader) {
        // Hand over at once instead of making the next instance wait out the lease.
        await releaseLease(redis, leaseKey, holder).catch(() => {});
        stats.leader = false;
      }
    },
  };
}
