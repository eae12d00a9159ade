import { platformOverview, usageByDay } from "@tessera/billing/service";
import { type ControlJob, kubernetesDriverConfig } from "@tessera/core";
import { applications, clusters, deployments, jobs, memberships, organisations, users } from "@tessera/db";
import { and, count, desc, eq, ilike, isNull, or, type SQL } from "drizzle-orm";
import { z } from "zod";
import { apiError } from "../errors.js";
import { adminProcedure, router } from "../trpc.js";
import { clusterColumns } from "./clusters.js";
import { resolveRange, usageRange } from "./usage.js";

const page = z.object({
  search: z.string().trim().max(200).optional(),
  limit: z.number().int().min(1).max(500).default(100),
  offset: z.number().int().min(0).default(0),
});

/** An ILIKE pattern matching `s` anywhere, with its wildcards escaped. */
export const like = (s: string) => `%${s.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

/** Read-only views across every organisation, for platform operators. */
export const adminRouter = router({
  organisations: adminProcedure.input(page.optional()).query(({ ctx, input }) => {
    const p = page.parse(input ?? {});
    const where: SQL | undefined = p.search
      ? or(ilike(organisations.name, like(p.search)), ilike(organisations.slug, like(p.search)))
      : undefined;
    return ctx.db
      .select({
        id: organisations.id,
        slug: organisations.slug,
        name: organisations.name,
        personal: organisations.personal,
        plan: organisations.plan,
        createdAt: organisations.createdAt,
        memberCount: count(memberships.userId),
      })
      .from(organisations)
      .leftJoin(memberships, eq(memberships.orgId, organisations.id))
      .where(where)
      .groupBy(organisations.id)
      .orderBy(desc(organisations.createdAt))
      .limit(p.limit)
      .offset(p.offset);
  }),

  clusters: adminProcedure
    .input(page.extend({ orgId: z.uuid().optional() }).optional())
    .query(({ ctx, input }) => {
      const p = page.extend({ orgId: z.uuid().optional() }).parse(input ?? {});
      return ctx.db
        .select({ ...clusterColumns, orgSlug: organisations.slug })
        .from(clusters)
        .innerJoin(organisations, eq(organisations.id, clusters.orgId))
        .where(
          and(
            isNull(clusters.deletedAt),
            p.orgId ? eq(clusters.orgId, p.orgId) : undefined,
            p.search
              ? or(ilike(clusters.name, like(p.search)), ilike(organisations.slug, like(p.search)))
              : undefined,
          ),
        )
        .orderBy(desc(clusters.createdAt))
        .limit(p.limit)
        .offset(p.offset);
    }),

  deployments: adminProcedure
    .input(page.extend({ orgId: z.uuid().optional() }).optional())
    .query(({ ctx, input }) => {
      const p = page.extend({ orgId: z.uuid().optional() }).parse(input ?? {});
      return ctx.db
        .select({
          id: deployments.id,
          orgId: deployments.orgId,
          orgSlug: organisations.slug,
          applicationName: applications.name,
          name: deployments.name,
          state: deployments.state,
          version: deployments.version,
          targetReplicas: deployments.targetReplicas,
          updatedAt: deployments.updatedAt,
        })
        .from(deployments)
        .innerJoin(organisations, eq(organisations.id, deployments.orgId))
        .innerJoin(applications, eq(applications.id, deployments.applicationId))
        .where(
          and(
            isNull(deployments.deletedAt),
            p.orgId ? eq(deployments.orgId, p.orgId) : undefined,
            p.search
              ? or(
                  ilike(deployments.name, like(p.search)),
                  ilike(organisations.slug, like(p.search)),
                  ilike(applications.name, like(p.search)),
                )
              : undefined,
          ),
        )
        .orderBy(desc(deployments.updatedAt))
        .limit(p.limit)
        .offset(p.offset);
    }),

  users: adminProcedure.input(page.optional()).query(({ ctx, input }) => {
    const p = page.parse(input ?? {});
    return ctx.db
      .select({
        id: users.id,
        email: users.email,
        name: users.name,
        isPlatformAdmin: users.isPlatformAdmin,
        createdAt: users.createdAt,
        orgCount: count(memberships.orgId),
      })
      .from(users)
      .leftJoin(memberships, eq(memberships.userId, users.id))
      .where(p.search ? or(ilike(users.email, like(p.search)), ilike(users.name, like(p.search))) : undefined)
      .groupBy(users.id)
      .orderBy(desc(users.createdAt))
      .limit(p.limit)
      .offset(p.offset);
  }),

  /** Platform monitoring: request and error rates per org, replicas by state, busiest deployments, failed jobs and builds. */
  overview: adminProcedure
    .input(
      z
        .object({
          windowHours: z
            .number()
            .int()
            .min(1)
            .max(24 * 31)
            .default(24),
        })
        .optional(),
    )
    .query(({ ctx, input }) => platformOverview(ctx.db, new Date(), (input?.windowHours ?? 24) * 3_600_000)),

  /** Usage per day and deployment across every organisation (or one). */
  usageByDay: adminProcedure
    .input(usageRange.extend({ orgId: z.uuid().optional() }).optional())
    .query(({ ctx, input }) =>
      usageByDay(ctx.db, { orgId: input?.orgId ?? null, ...resolveRange(input ?? {}) }),
    ),

  /** Depths of the provisioner's queues; `configured: false` when the API has no Redis access. */
  queues: adminProcedure.query(async ({ ctx }) =>
    ctx.queues ? { configured: true, queues: await ctx.queues.depths() } : { configured: false, queues: [] },
  ),

  /**
   * Point a kubernetes cluster at its Kubernetes API (kubeconfig, registry, storage class...).
   * Operators only: the config holds platform credentials, and tenants never see it. The cluster
   * is provisioned again with it; the provisioner makes a new driver for the changed config.
   */
  setClusterDriverConfig: adminProcedure
    .input(z.object({ clusterId: z.uuid(), driverConfig: kubernetesDriverConfig }))
    .mutation(async ({ ctx, input }) => {
      const [row] = await ctx.db
        .select({ id: clusters.id, orgId: clusters.orgId, driver: clusters.driver })
        .from(clusters)
        .where(and(eq(clusters.id, input.clusterId), isNull(clusters.deletedAt)));
      if (!row) throw apiError("NOT_FOUND", "cluster not found");
      if (row.driver !== "kubernetes")
        throw apiError("VALIDATION_FAILED", `a ${row.driver} cluster takes no driver configuration`, {
          fieldErrors: { driverConfig: "only kubernetes clusters are configured here" },
        });
      await ctx.db
        .update(clusters)
        .set({ driverConfig: input.driverConfig, state: "provisioning", stateReason: null })
        .where(eq(clusters.id, row.id));
      const { jobId } = await ctx.jobs.enqueue(
        { kind: "provisionCluster", clusterId: row.id },
        { orgId: row.orgId },
      );
      ctx.audit.orgId = row.orgId;
      ctx.audit.targetId = row.id;
      // Keys only: the kubeconfig is a credential.
      ctx.audit.details = { driverConfigKeys: Object.keys(input.driverConfig), jobId };
      return { jobId };
    }),

  /**
   * Run a failed control job again: the same job under a fresh dedupe key (jobs re-read desired
   * state, so a retry converges rather than acting twice).
   */
  retryJob: adminProcedure.input(z.object({ jobId: z.uuid() })).mutation(async ({ ctx, input }) => {
    const [job] = await ctx.db.select().from(jobs).where(eq(jobs.id, input.jobId));
    if (!job) throw apiError("NOT_FOUND", "job not found");
    if (job.state !== "failed")
      throw apiError("CONFLICT", `only failed jobs are retried; this one is ${job.state}`);
    const { jobId } = await ctx.jobs.enqueue(job.payload as unknown as ControlJob, {
      dedupeKey: `${job.dedupeKey}:retry:${Date.now()}`,
      orgId: job.orgId,
    });
    ctx.audit.orgId = job.orgId;
    ctx.audit.targetId = jobId;
    ctx.audit.details = { retriedJobId: job.id, kind: job.kind };
    return { jobId };
  }),
});
