import { randomUUID } from "node:crypto";
import { canaryPercent, deploymentConfig, type TrafficSplit } from "@tessera/core";
import { type Database, deployments, revisions, usageEvents } from "@tessera/db";
import { and, eq, gte, inArray, ne, sql } from "drizzle-orm";
import { z } from "zod";
import type { Context } from "../context.js";
import { apiError, issueFieldErrors } from "../errors.js";
import { orgProcedure, router } from "../trpc.js";
import { enforceDeployPlan, planTransaction } from "./billing.js";
import {
  clusterQuota,
  enqueueRollout,
  ensureEnvironment,
  findDeployment,
  lockDeployment,
  parseDeployInput,
  planReplicas,
  quotaErrors,
  revisionSummary,
  revisionsById,
  type Tx,
  throwIfAny,
  versionConflict,
} from "./deployments.js";

/**
 * Canary traffic splitting. `deployCanary` stores a new revision next to the live one and sends
 * `percent` of the requests to it; `setWeight` shifts the split; `promote` rolls the canary out as
 * the deployment's revision (a normal, version-checked rollout); `abort` drops it. The split lives
 * in `deployments.traffic`; the controller runs replicas of both revisions (`splitReplicas`) and
 * gateways choose per request (`chooseRevision`, pin header `x-tessera-revision`), told through
 * the `routingChanged` notice.
 */

const deploymentId = z.object({ deploymentId: z.uuid() });
const prevVersion = z.number().int("must be an integer").min(0, "must be >= 0");

function parsePercent(value: unknown): number {
  const parsed = canaryPercent.safeParse(value);
  if (parsed.success) return parsed.data;
  const message = Object.values(issueFieldErrors(parsed.error))[0] ?? "invalid";
  throw apiError("VALIDATION_FAILED", `invalid percent: ${message}`, { fieldErrors: { percent: message } });
}

/** Tells the controller (replicas per revision) and the gateways (weights) about a new split. */
async function announceSplit(
  ctx: Pick<Context, "jobs" | "notify"> & { org: { id: string } },
  deploymentId: string,
): Promise<string> {
  const { jobId } = await ctx.jobs.enqueue({ kind: "scaleDeployment", deploymentId }, { orgId: ctx.org.id });
  await ctx.notify({ kind: "routingChanged", deploymentId });
  return jobId;
}

/** Requests, errors (5xx) and latency percentiles per revision since `since`, from usage events. */
async function revisionStats(db: Database, deploymentId: string, revisionIds: string[], since: Date) {
  if (revisionIds.length === 0) return [];
  const rows = await db
    .select({
      revisionId: usageEvents.revisionId,
      requests: sql<number>`count(*)::int`,
      errors: sql<number>`count(*) filter (where ${usageEvents.status} >= 500)::int`,
      p50Ms: sql<number | null>`percentile_cont(0.5) within group (order by ${usageEvents.latencyMs})`,
      p95Ms: sql<number | null>`percentile_cont(0.95) within group (order by ${usageEvents.latencyMs})`,
    })
    .from(usageEvents)
    .where(
      and(
        eq(usageEvents.deploymentId, deploymentId),
        eq(usageEvents.kind, "request"),
        inArray(usageEvents.revisionId, revisionIds),
        gte(usageEvents.at, since),
      ),
    )
    .groupBy(usageEvents.revisionId);
  const round = (v: number | null) => (v === null ? null : Math.round(Number(v) * 10) / 10);
  return revisionIds.map((id) => {
    const r = rows.find((x) => x.revisionId === id);
    return {
      revisionId: id,
      requests: r?.requests ?? 0,
      errors: r?.errors ?? 0,
      p50Ms: round(r?.p50Ms ?? null),
      p95Ms: round(r?.p95Ms ?? null),
    };
  });
}

async function runningCanary(tx: Tx, orgId: string, id: string) {
  const dep = await lockDeployment(tx, orgId, id);
  if (!dep.traffic) throw apiError("CONFLICT", "no canary is running on this deployment");
  return { dep, split: dep.traffic };
}

export const trafficRouter = router({
  /** The live revision and the canary (with its share), if one runs. */
  get: orgProcedure("member")
    .input(deploymentId)
    .query(async ({ ctx, input }) => {
      const dep = await findDeployment(ctx.db, ctx.org.id, input.deploymentId);
      const byId = await revisionsById(ctx.db, ctx.org.id, [
        dep.liveRevisionId,
        dep.traffic?.canaryRevisionId,
      ]);
      const split = dep.traffic;
      // Since the canary started (else the last hour): what to compare before promoting.
      const since = split ? new Date(split.startedAt) : new Date(Date.now() - 3600_000);
      const stats = await revisionStats(
        ctx.db,
        dep.id,
        [dep.liveRevisionId, split?.canaryRevisionId].filter((x): x is string => !!x),
        since,
      );
      return {
        since: since.toISOString(),
        stats,
        deploymentId: dep.id,
        live: dep.liveRevisionId ? (byId.get(dep.liveRevisionId) ?? null) : null,
        canary: split
          ? {
              revision: byId.get(split.canaryRevisionId) ?? null,
              percent: split.canaryPercent,
              startedAt: split.startedAt,
            }
          : null,
      };
    }),

  /**
   * A new revision (config + code, validated like a deploy) served as a canary with `percent` of
   * the traffic. Needs a live revision, no rollout in progress and no other canary; `prevVersion`
   * must be the deployment's version (concurrent changes are detected as CONFLICT).
   */
  deployCanary: orgProcedure("admin")
    .input(deploymentId.extend({ config: z.unknown(), code: z.unknown(), prevVersion, percent: z.unknown() }))
    .mutation(async ({ ctx, input }) => {
      const percent = parsePercent(input.percent);
      const { config, code } = parseDeployInput(input.config, input.code);
      const found = await findDeployment(ctx.db, ctx.org.id, input.deploymentId);
      throwIfAny(
        quotaErrors(config, await clusterQuota(ctx.db, found.clusterId), "config"),
        "over the cluster quota",
      );
      const envHash = await ensureEnvironment(ctx.db, config);
      const result = await planTransaction(ctx, ctx.org.id, async (tx) => {
        const dep = await lockDeployment(tx, ctx.org.id, input.deploymentId);
        if (dep.version !== input.prevVersion) throw versionConflict(dep.version, input.prevVersion);
        if (!dep.liveRevisionId)
          throw apiError("CONFLICT", "nothing is live yet: deploy a first revision before a canary");
        if (dep.desiredRevisionId !== dep.liveRevisionId)
          throw apiError("CONFLICT", "a rollout is in progress: wait for it before starting a canary");
        if (dep.traffic) throw apiError("CONFLICT", "a canary is already running: promote or abort it first");
        // The canary keeps the deployment's scaling, with replicas of its own resources.
        await enforceDeployPlan(ctx, tx, ctx.org.id, {
          deploymentId: dep.id,
          resources: config.resources,
          replicas: planReplicas(dep),
        });
        const [latest] = await tx
          .select({ max: sql<number | null>`max(${revisions.version})` })
          .from(revisions)
          .where(eq(revisions.deploymentId, dep.id));
        const [revision] = await tx
          .insert(revisions)
          .values({
            id: randomUUID(),
            orgId: dep.orgId,
            deploymentId: dep.id,
            version: Math.max(Number(latest?.max ?? 0), dep.version) + 1,
            config: config as unknown as Record<string, unknown>,
            code,
            envHash,
            createdBy: ctx.userId,
          })
          .returning(revisionSummary);
        const traffic: TrafficSplit = {
          canaryRevisionId: revision!.id,
          canaryPercent: percent,
          startedAt: new Date().toISOString(),
        };
        const [updated] = await tx
          .update(deployments)
          .set({ traffic, updatedAt: new Date() })
          .where(eq(deployments.id, dep.id))
          .returning();
        return { deployment: updated!, revision: revision! };
      });
      const jobId = await announceSplit(ctx, result.deployment.id);
      ctx.audit.targetId = result.deployment.id;
      ctx.audit.details = {
        revisionId: result.revision.id,
        version: result.revision.version,
        percent,
        jobId,
      };
      return { deployment: result.deployment, revision: result.revision, jobId };
    }),

  /** Shifts the canary's share (0 keeps its replicas but sends it no unpinned traffic). */
  setWeight: orgProcedure("admin")
    .input(deploymentId.extend({ percent: z.unknown() }))
    .mutation(async ({ ctx, input }) => {
      const percent = parsePercent(input.percent);
      const result = await ctx.db.transaction(async (tx) => {
        const { dep, split } = await runningCanary(tx, ctx.org.id, input.deploymentId);
        const [updated] = await tx
          .update(deployments)
          .set({ traffic: { ...split, canaryPercent: percent }, updatedAt: new Date() })
          .where(eq(deployments.id, dep.id))
          .returning();
        return { deployment: updated!, from: split.canaryPercent };
      });
      const jobId = await announceSplit(ctx, result.deployment.id);
      ctx.audit.targetId = result.deployment.id;
      ctx.audit.details = { from: result.from, to: percent, jobId };
      return { deployment: result.deployment, jobId };
    }),

  /** The canary becomes the deployment's revision: a version-checked rollout like a deploy. */
  promote: orgProcedure("admin")
    .input(deploymentId.extend({ prevVersion }))
    .mutation(async ({ ctx, input }) => {
      const result = await planTransaction(ctx, ctx.org.id, async (tx) => {
        const { dep, split } = await runningCanary(tx, ctx.org.id, input.deploymentId);
        if (dep.version !== input.prevVersion) throw versionConflict(dep.version, input.prevVersion);
        const [canary] = await tx
          .select(revisionSummary)
          .from(revisions)
          .where(and(eq(revisions.id, split.canaryRevisionId), eq(revisions.deploymentId, dep.id)));
        if (!canary) throw apiError("NOT_FOUND", "the canary revision no longer exists");
        if (canary.state === "failed" || canary.state === "rolled_back" || canary.state === "superseded")
          throw apiError(
            "CONFLICT",
            `the canary revision is ${canary.state.replace("_", " ")}${canary.failureReason ? ` (${canary.failureReason})` : ""}: abort it`,
          );
        // Deploys since the canary started counted the live revision's resources, not the canary's.
        await enforceDeployPlan(ctx, tx, ctx.org.id, {
          deploymentId: dep.id,
          resources: deploymentConfig.parse(canary.config).resources,
          replicas: planReplicas(dep),
        });
        const [updated] = await tx
          .update(deployments)
          .set({
            desiredRevisionId: canary.id,
            version: Math.max(canary.version, dep.version + 1),
            state: "deploying",
            stateReason: null,
            traffic: null,
            updatedAt: new Date(),
          })
          .where(eq(deployments.id, dep.id))
          .returning();
        return { deployment: updated!, revision: canary };
      });
      const rollout = await enqueueRollout(ctx, result);
      await ctx.notify({ kind: "routingChanged", deploymentId: result.deployment.id });
      return rollout;
    }),

  /** Drops the canary: all traffic back to the live revision, the canary revision marked rolled back. */
  abort: orgProcedure("admin")
    .input(deploymentId)
    .mutation(async ({ ctx, input }) => {
      const result = await ctx.db.transaction(async (tx) => {
        const { dep, split } = await runningCanary(tx, ctx.org.id, input.deploymentId);
        const [updated] = await tx
          .update(deployments)
          .set({ traffic: null, updatedAt: new Date() })
          .where(eq(deployments.id, dep.id))
          .returning();
        await tx
          .update(revisions)
          .set({ state: "rolled_back" })
          // A canary the controller marked failed keeps that state (and its reason).
          .where(
            and(
              eq(revisions.id, split.canaryRevisionId),
              eq(revisions.deploymentId, dep.id),
              ne(revisions.state, "failed"),
            ),
          );
        return { deployment: updated!, revisionId: split.canaryRevisionId };
      });
      const jobId = await announceSplit(ctx, result.deployment.id);
      ctx.audit.targetId = result.deployment.id;
      ctx.audit.details = { revisionId: result.revisionId, jobId };
      return { deployment: result.deployment, jobId };
    }),
});
