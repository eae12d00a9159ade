import { randomUUID } from "node:crypto";
import { type DeployRequest, mostReplicas } from "@tessera/billing/service";
import {
  type CodeBundle,
  codeBundle,
  type DeploymentConfig,
  deploymentConfig,
  environmentHash,
  initialReplicaCount,
  type JobQueue,
  normaliseEnvironmentSpec,
  scalingConfig,
  slug,
} from "@tessera/core";
import {
  applications,
  clusters,
  type Database,
  deployments,
  environments,
  replicaLogs,
  replicas,
  revisions,
  scalingEvents,
  type Transaction,
} from "@tessera/db";
import { and, asc, desc, eq, gt, inArray, isNull, type SQL, sql } from "drizzle-orm";
import { z } from "zod";
import type { AuditDraft } from "../context.js";
import { apiError, issueFieldErrors, isUniqueViolation } from "../errors.js";
import { orgProcedure, router } from "../trpc.js";
import { enforceDeployPlan, enforceScalePlan, planTransaction } from "./billing.js";

export type Tx = Transaction;

/** Revision columns without the code bundle, which can be megabytes. */
export const revisionSummary = {
  id: revisions.id,
  deploymentId: revisions.deploymentId,
  version: revisions.version,
  config: revisions.config,
  envHash: revisions.envHash,
  label: revisions.label,
  state: revisions.state,
  failureReason: revisions.failureReason,
  createdBy: revisions.createdBy,
  createdAt: revisions.createdAt,
  liveAt: revisions.liveAt,
};

const deploymentId = z.object({ deploymentId: z.uuid() });
const prevVersion = z.number().int("must be an integer").min(0, "must be >= 0");
export const revisionLabel = z.string().trim().min(1).max(100);
const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;

export type ScalingState = { scaling: Record<string, unknown>; targetReplicas: number };

/** Scaling stored on the deployment row, derived from a revision's config. */
export function scalingOf(c: Pick<DeploymentConfig, "numReplicas" | "autoscaling">): Record<string, unknown> {
  if (c.autoscaling) return { autoscaling: c.autoscaling };
  return { numReplicas: c.numReplicas ?? 1 };
}

/** Scaling of a deployment created by a deploy of `c`. */
export function initialScaling(c: DeploymentConfig): ScalingState {
  return { scaling: scalingOf(c), targetReplicas: initialReplicaCount(c) };
}

/** Replicas the plan counts for a deployment with this scaling (its autoscaling maximum, if higher). */
export const planReplicas = (s: ScalingState) => mostReplicas(s.targetReplicas, s.scaling);

/** A deploy of `c` as the plan check counts it, onto the deployment `dep` or a new one. */
export function deployRequest(
  c: DeploymentConfig,
  dep: (ScalingState & { id: string }) | undefined,
): DeployRequest {
  return {
    deploymentId: dep?.id ?? null,
    resources: c.resources,
    replicas: planReplicas(dep ? (redeployScaling(c, dep.targetReplicas) ?? dep) : initialScaling(c)),
  };
}

/** Queues the rollout of a just-committed revision and names it in the call's audit entry. */
export async function enqueueRollout<D extends { id: string }, R extends { id: string; version: number }>(
  ctx: { jobs: JobQueue; org: { id: string }; audit: AuditDraft },
  committed: { deployment: D; revision: R },
  details: Record<string, unknown> = {},
): Promise<{ deployment: D; revision: R; jobId: string }> {
  const { deployment, revision } = committed;
  const { jobId } = await ctx.jobs.enqueue(
    { kind: "deployRevision", revisionId: revision.id },
    { orgId: ctx.org.id },
  );
  ctx.audit.targetId = deployment.id;
  ctx.audit.details = { revisionId: revision.id, version: revision.version, ...details, jobId };
  return { deployment, revision, jobId };
}

/** Keep the current replica count where the new scaling allows it, so a redeploy does not jolt traffic. */
function targetAfterRedeploy(c: DeploymentConfig, current: number): number {
  if (c.autoscaling) return Math.min(Math.max(current, c.autoscaling.minReplicas), c.autoscaling.maxReplicas);
  if (c.numReplicas !== undefined) return c.numReplicas;
  return current;
}

/** A redeploy (or rollback) whose config names replicas or autoscaling adopts that scaling. */
export function redeployScaling(c: DeploymentConfig, currentTarget: number): ScalingState | undefined {
  if (c.numReplicas === undefined && !c.autoscaling) return undefined;
  return { scaling: scalingOf(c), targetReplicas: targetAfterRedeploy(c, currentTarget) };
}

/** Validate config and code together so the caller sees every field error in one round trip. */
export function parseDeployInput(
  config: unknown,
  code: unknown,
): { config: DeploymentConfig; code: CodeBundle } {
  const c = deploymentConfig.safeParse(config);
  const b = codeBundle.safeParse(code);
  if (c.success && b.success) return { config: c.data, code: b.data };
  const errors: Record<string, string> = {};
  const add = (prefix: string, e: z.ZodError) => {
    for (const [k, v] of Object.entries(issueFieldErrors(e)))
      errors[k === "_" ? prefix : `${prefix}.${k}`] = v;
  };
  if (!c.success) add("config", c.error);
  if (!b.success) add("code", b.error);
  const [first] = Object.entries(errors);
  throw apiError("VALIDATION_FAILED", `invalid deployment: ${first![0]}: ${first![1]}`, {
    fieldErrors: errors,
  });
}

type Quota = { cpus: number; memoryMb: number; gpus: number; maxReplicas: number };

/**
 * One replica must fit the cluster's quota and the replica count may not exceed its maximum;
 * reported as field errors on the offending config fields (`prefix` roots the paths).
 */
export function quotaErrors(
  c: {
    resources?: DeploymentConfig["resources"];
    numReplicas?: number;
    autoscaling?: { maxReplicas: number };
  },
  q: Quota,
  prefix: string,
): Record<string, string> {
  const errors: Record<string, string> = {};
  const at = (k: string) => (prefix ? `${prefix}.${k}` : k);
  if (c.resources) {
    if (c.resources.cpus > q.cpus)
      errors[at("resources.cpus")] = `exceeds the cluster quota of ${q.cpus} cpus`;
    if (c.resources.memoryMb > q.memoryMb)
      errors[at("resources.memoryMb")] = `exceeds the cluster quota of ${q.memoryMb} MB`;
    if (c.resources.gpus > q.gpus)
      errors[at("resources.gpus")] = `exceeds the cluster quota of ${q.gpus} gpus`;
  }
  if (c.numReplicas !== undefined && c.numReplicas > q.maxReplicas)
    errors[at("numReplicas")] = `exceeds the cluster quota of ${q.maxReplicas} replicas`;
  if (c.autoscaling && c.autoscaling.maxReplicas > q.maxReplicas)
    errors[at("autoscaling.maxReplicas")] = `exceeds the cluster quota of ${q.maxReplicas} replicas`;
  return errors;
}

export function throwIfAny(errors: Record<string, string>, what: string): void {
  const [first] = Object.entries(errors);
  if (first)
    throw apiError("VALIDATION_FAILED", `${what}: ${first[0]}: ${first[1]}`, { fieldErrors: errors });
}

export async function clusterQuota(db: Pick<Database, "select">, clusterId: string): Promise<Quota> {
  const [c] = await db.select({ quota: clusters.quota }).from(clusters).where(eq(clusters.id, clusterId));
  if (!c) throw apiError("NOT_FOUND", "cluster not found");
  return c.quota;
}

export async function ensureEnvironment(db: Database, config: DeploymentConfig): Promise<string> {
  const hash = environmentHash(config.runtime, config.environment);
  await db
    .insert(environments)
    .values({
      hash,
      runtime: config.runtime,
      spec: normaliseEnvironmentSpec(config.environment) as Record<string, unknown>,
    })
    .onConflictDoNothing();
  return hash;
}

/**
 * The compare-and-set at the heart of deploys and rollbacks: the deployment row is locked, its
 * `version` must still equal `prevVersion`, and the new revision, the desired pointer and the
 * version bump commit together. A loser of a race sees CONFLICT and nothing of it is stored.
 */
export async function commitRevision(
  tx: Tx,
  dep: { id: string; orgId: string; version: number },
  opts: {
    prevVersion: number;
    config: Record<string, unknown>;
    code: CodeBundle;
    envHash: string;
    createdBy: string | null;
    scaling?: ScalingState;
    label?: string | null;
    /** How a lost compare-and-set is reported (several deployments name their own field). */
    conflict?: (current: number, prev: number) => Error;
  },
) {
  const revisionId = randomUUID();
  // Numbered after the newest revision, not after prevVersion: a failed rollout resets the
  // deployment's version to the live revision while the failed revision keeps its number.
  const [latest] = await tx
    .select({ max: sql<number | null>`max(${revisions.version})` })
    .from(revisions)
    .where(eq(revisions.deploymentId, dep.id));
  const version = Math.max(Number(latest?.max ?? 0), opts.prevVersion) + 1;
  const now = new Date();
  const [updated] = await tx
    .update(deployments)
    .set({
      version,
      desiredRevisionId: revisionId,
      state: "deploying",
      stateReason: null,
      // A new rollout supersedes a running canary (see the traffic router).
      traffic: null,
      updatedAt: now,
      ...(opts.scaling ?? {}),
    })
    .where(
      and(
        eq(deployments.id, dep.id),
        eq(deployments.version, opts.prevVersion),
        isNull(deployments.deletedAt),
      ),
    )
    .returning();
  if (!updated) throw (opts.conflict ?? versionConflict)(dep.version, opts.prevVersion);
  const [revision] = await tx
    .insert(revisions)
    .values({
      id: revisionId,
      orgId: dep.orgId,
      deploymentId: dep.id,
      version,
      config: opts.config,
      code: opts.code,
      envHash: opts.envHash,
      label: opts.label ?? null,
      createdBy: opts.createdBy,
    })
    .returning(revisionSummary);
  return { deployment: updated, revision: revision! };
}

export function versionConflict(
  current: number,
  prev: number,
  field = "prevVersion",
  name = "the deployment",
) {
  return apiError(
    "CONFLICT",
    `${name} is at version ${current}, not ${prev}: someone else deployed; reload and retry`,
    { fieldErrors: { [field]: `is ${current}` } },
  );
}

export async function lockDeployment(tx: Tx, orgId: string, id: string) {
  const [dep] = await tx
    .select()
    .from(deployments)
    .where(and(eq(deployments.id, id), eq(deployments.orgId, orgId), isNull(deployments.deletedAt)))
    .for("update");
  if (!dep) throw apiError("NOT_FOUND", "deployment not found");
  return dep;
}

/** The organisation's live application, else NOT_FOUND (another tenant's id included). */
export async function findApplication(db: Database, orgId: string, id: string) {
  const [app] = await db
    .select()
    .from(applications)
    .where(and(eq(applications.id, id), eq(applications.orgId, orgId), isNull(applications.deletedAt)));
  if (!app) throw apiError("NOT_FOUND", "application not found");
  return app;
}

/** Summaries of the given revisions of one org (nulls skipped), by id. */
export async function revisionsById(db: Database, orgId: string, ids: (string | null | undefined)[]) {
  const wanted = ids.filter((x): x is string => !!x);
  const revs = wanted.length
    ? await db
        .select(revisionSummary)
        .from(revisions)
        .where(and(inArray(revisions.id, wanted), eq(revisions.orgId, orgId)))
    : [];
  return new Map(revs.map((r) => [r.id, r]));
}

export async function findDeployment(db: Database, orgId: string, id: string) {
  const [dep] = await db
    .select()
    .from(deployments)
    .where(and(eq(deployments.id, id), eq(deployments.orgId, orgId), isNull(deployments.deletedAt)));
  if (!dep) throw apiError("NOT_FOUND", "deployment not found");
  return dep;
}

export const deploymentsRouter = router({
  list: orgProcedure("member")
    .input(z.object({ applicationId: z.uuid().optional() }))
    .query(({ ctx, input }) =>
      ctx.db
        .select()
        .from(deployments)
        .where(
          and(
            eq(deployments.orgId, ctx.org.id),
            isNull(deployments.deletedAt),
            input.applicationId ? eq(deployments.applicationId, input.applicationId) : undefined,
          ),
        )
        .orderBy(asc(deployments.createdAt)),
    ),

  get: orgProcedure("member")
    .input(deploymentId)
    .query(async ({ ctx, input }) => {
      const dep = await findDeployment(ctx.db, ctx.org.id, input.deploymentId);
      const byId = await revisionsById(ctx.db, ctx.org.id, [dep.liveRevisionId, dep.desiredRevisionId]);
      return {
        ...dep,
        liveRevision: dep.liveRevisionId ? (byId.get(dep.liveRevisionId) ?? null) : null,
        desiredRevision: dep.desiredRevisionId ? (byId.get(dep.desiredRevisionId) ?? null) : null,
      };
    }),

  /**
   * Create-or-update: validates config and code, upserts the environment row, then in one
   * transaction compare-and-sets `version` (must equal `prevVersion`; 0 for a new deployment) and
   * inserts the next revision; finally enqueues `deployRevision`.
   */
  deploy: orgProcedure("admin")
    .input(
      z.object({
        applicationId: z.uuid(),
        name: slug,
        config: z.unknown(),
        code: z.unknown(),
        prevVersion,
        /** A name for the new revision (a git sha, "v2"): shown in revision lists, not unique. */
        label: revisionLabel.optional(),
      }),
    )
    .mutation(async ({ ctx, input }) => {
      const app = await findApplication(ctx.db, ctx.org.id, input.applicationId);
      const { config, code } = parseDeployInput(input.config, input.code);
      throwIfAny(
        quotaErrors(config, await clusterQuota(ctx.db, app.clusterId), "config"),
        "over the cluster quota",
      );
      const sameName = and(
        eq(deployments.applicationId, app.id),
        eq(deployments.name, input.name),
        isNull(deployments.deletedAt),
      );
      const envHash = await ensureEnvironment(ctx.db, config);
      let result: Awaited<ReturnType<typeof commitRevision>> & { created: boolean };
      try {
        result = await planTransaction(ctx, ctx.org.id, async (tx) => {
          let [dep] = await tx.select().from(deployments).where(sameName).for("update");
          const created = !dep;
          await enforceDeployPlan(ctx, tx, ctx.org.id, deployRequest(config, dep));
          if (!dep) {
            if (input.prevVersion !== 0) throw versionConflict(0, input.prevVersion);
            [dep] = await tx
              .insert(deployments)
              .values({
                orgId: ctx.org.id,
                applicationId: app.id,
                clusterId: app.clusterId,
                name: input.name,
                ...initialScaling(config),
              })
              .returning();
            await tx
              .update(applications)
              .set({ ingressDeployment: input.name })
              .where(and(eq(applications.id, app.id), isNull(applications.ingressDeployment)));
          }
          const out = await commitRevision(tx, dep!, {
            prevVersion: input.prevVersion,
            config: config as unknown as Record<string, unknown>,
            code,
            envHash,
            createdBy: ctx.userId,
            scaling: created ? undefined : redeployScaling(config, dep!.targetReplicas),
            label: input.label,
          });
          return { ...out, created };
        });
      } catch (err) {
        // Two first deploys of the same name race on the unique (application, name) index.
        if (isUniqueViolation(err)) throw versionConflict(1, input.prevVersion);
        throw err;
      }
      return enqueueRollout(ctx, result, { envHash, created: result.created });
    }),

  /** A new revision carrying an older revision's config and code (history stays append-only). */
  rollback: orgProcedure("admin")
    .input(deploymentId.extend({ revisionId: z.uuid(), prevVersion }))
    .mutation(async ({ ctx, input }) => {
      const result = await planTransaction(ctx, ctx.org.id, async (tx) => {
        const dep = await lockDeployment(tx, ctx.org.id, input.deploymentId);
        const [old] = await tx
          .select()
          .from(revisions)
          .where(
            and(
              eq(revisions.id, input.revisionId),
              eq(revisions.deploymentId, dep.id),
              eq(revisions.orgId, ctx.org.id),
            ),
          );
        if (!old) throw apiError("NOT_FOUND", "revision not found");
        // Stored configs were validated on deploy; parsing again re-applies defaults added since.
        const config = deploymentConfig.parse(old.config);
        // The old revision may ask for more replicas or bigger ones than the plan has room for now.
        await enforceDeployPlan(ctx, tx, ctx.org.id, deployRequest(config, dep));
        const out = await commitRevision(tx, dep, {
          prevVersion: input.prevVersion,
          config: old.config,
          code: old.code,
          envHash: old.envHash,
          createdBy: ctx.userId,
          scaling: redeployScaling(config, dep.targetReplicas),
        });
        return { ...out, fromVersion: old.version };
      });
      return enqueueRollout(ctx, result, { fromVersion: result.fromVersion });
    }),

  /** Replica count or autoscaling bounds, without a new revision. */
  updateScaling: orgProcedure("admin")
    .input(deploymentId.extend({ numReplicas: z.unknown().optional(), autoscaling: z.unknown().optional() }))
    .mutation(async ({ ctx, input }) => {
      const parsed = scalingConfig.safeParse({
        numReplicas: input.numReplicas,
        autoscaling: input.autoscaling,
      });
      if (!parsed.success) {
        const errors = issueFieldErrors(parsed.error);
        throw apiError("VALIDATION_FAILED", `invalid scaling: ${Object.entries(errors)[0]!.join(": ")}`, {
          fieldErrors: errors,
        });
      }
      const s = parsed.data;
      if (s.numReplicas === undefined && !s.autoscaling) {
        throw apiError("VALIDATION_FAILED", "give numReplicas or autoscaling", {
          fieldErrors: { numReplicas: "give numReplicas or autoscaling" },
        });
      }
      const result = await planTransaction(ctx, ctx.org.id, async (tx) => {
        const dep = await lockDeployment(tx, ctx.org.id, input.deploymentId);
        await enforceScalePlan(ctx, tx, ctx.org.id, dep.id, s.autoscaling?.maxReplicas ?? s.numReplicas!);
        throwIfAny(quotaErrors(s, await clusterQuota(tx, dep.clusterId), ""), "over the cluster quota");
        const target = s.autoscaling
          ? Math.min(Math.max(dep.targetReplicas, s.autoscaling.minReplicas), s.autoscaling.maxReplicas)
          : s.numReplicas!;
        const scaling = s.autoscaling ? { autoscaling: s.autoscaling } : { numReplicas: s.numReplicas };
        const [updated] = await tx
          .update(deployments)
          .set({ scaling, targetReplicas: target, updatedAt: new Date() })
          .where(eq(deployments.id, dep.id))
          .returning();
        if (target !== dep.targetReplicas) {
          await tx.insert(scalingEvents).values({
            orgId: ctx.org.id,
            deploymentId: dep.id,
            fromReplicas: dep.targetReplicas,
            toReplicas: target,
            reason: "operator",
            metrics: { scaling },
          });
        }
        return { deployment: updated!, from: dep.targetReplicas };
      });
      const { jobId } = await ctx.jobs.enqueue(
        { kind: "scaleDeployment", deploymentId: result.deployment.id },
        { orgId: ctx.org.id },
      );
      ctx.audit.targetId = result.deployment.id;
      ctx.audit.details = {
        scaling: result.deployment.scaling,
        from: result.from,
        to: result.deployment.targetReplicas,
        jobId,
      };
      return { deployment: result.deployment, jobId };
    }),

  /** Marks it deleted (name reusable at once) and enqueues `deleteDeployment` to stop replicas. */
  delete: orgProcedure("admin")
    .input(deploymentId)
    .mutation(async ({ ctx, input }) => {
      const now = new Date();
      const [dep] = await ctx.db
        .update(deployments)
        .set({ state: "deleting", deletedAt: now, updatedAt: now })
        .where(
          and(
            eq(deployments.id, input.deploymentId),
            eq(deployments.orgId, ctx.org.id),
            isNull(deployments.deletedAt),
          ),
        )
        .returning();
      if (!dep) throw apiError("NOT_FOUND", "deployment not found");
      const { jobId } = await ctx.jobs.enqueue(
        { kind: "deleteDeployment", deploymentId: dep.id },
        { orgId: ctx.org.id },
      );
      ctx.audit.targetId = dep.id;
      ctx.audit.details = { name: dep.name, jobId };
      return { deployment: dep, jobId };
    }),

  revisions: orgProcedure("member")
    .input(deploymentId)
    .query(async ({ ctx, input }) => {
      const dep = await findDeployment(ctx.db, ctx.org.id, input.deploymentId);
      return ctx.db
        .select(revisionSummary)
        .from(revisions)
        .where(and(eq(revisions.deploymentId, dep.id), eq(revisions.orgId, ctx.org.id)))
        .orderBy(desc(revisions.version));
    }),

  replicas: orgProcedure("member")
    .input(deploymentId.extend({ includeStopped: z.boolean().default(false) }))
    .query(async ({ ctx, input }) => {
      const dep = await findDeployment(ctx.db, ctx.org.id, input.deploymentId);
      return ctx.db
        .select()
        .from(replicas)
        .where(
          and(
            eq(replicas.deploymentId, dep.id),
            eq(replicas.orgId, ctx.org.id),
            input.includeStopped ? undefined : inArray(replicas.state, ["starting", "ready", "draining"]),
          ),
        )
        .orderBy(desc(replicas.startedAt))
        .limit(500);
    }),

  scalingEvents: orgProcedure("member")
    .input(deploymentId.extend({ limit: z.number().int().min(1).max(1000).default(100) }))
    .query(async ({ ctx, input }) => {
      const dep = await findDeployment(ctx.db, ctx.org.id, input.deploymentId);
      return ctx.db
        .select()
        .from(scalingEvents)
        .where(and(eq(scalingEvents.deploymentId, dep.id), eq(scalingEvents.orgId, ctx.org.id)))
        .orderBy(desc(scalingEvents.id))
        .limit(input.limit);
    }),

  /** Oldest first after `sinceId`, so the console polls with the last id it saw; `level` is a minimum. */
  logs: orgProcedure("member")
    .input(
      deploymentId.extend({
        replicaId: z.uuid().optional(),
        level: z.enum(LOG_LEVELS).optional(),
        sinceId: z.number().int().min(0).optional(),
        limit: z.number().int().min(1).max(2000).default(500),
      }),
    )
    .query(async ({ ctx, input }) => {
      const dep = await findDeployment(ctx.db, ctx.org.id, input.deploymentId);
      const conds: (SQL | undefined)[] = [
        eq(replicaLogs.deploymentId, dep.id),
        eq(replicaLogs.orgId, ctx.org.id),
      ];
      if (input.replicaId) conds.push(eq(replicaLogs.replicaId, input.replicaId));
      if (input.level)
        conds.push(inArray(replicaLogs.level, LOG_LEVELS.slice(LOG_LEVELS.indexOf(input.level))));
      if (input.sinceId !== undefined) conds.push(gt(replicaLogs.id, input.sinceId));
      const lines = await ctx.db
        .select()
        .from(replicaLogs)
        .where(and(...conds))
        .orderBy(asc(replicaLogs.id))
        .limit(input.limit);
      return { lines, nextSinceId: lines.at(-1)?.id ?? input.sinceId ?? 0 };
    }),
});
