import { slug } from "@tessera/core";
import { applications, clusters } from "@tessera/db";
import { and, asc, count, eq, isNull } from "drizzle-orm";
import { z } from "zod";
import { apiError, isUniqueViolation } from "../errors.js";
import { orgProcedure, router } from "../trpc.js";

export const clusterQuota = z
  .object({
    cpus: z.number().positive("cpus must be > 0").max(1024),
    memoryMb: z.number().int().min(256, "memoryMb must be at least 256").max(4_194_304),
    gpus: z.number().min(0, "gpus must be >= 0").max(64),
    maxReplicas: z.number().int().min(1, "maxReplicas must be at least 1").max(1000),
  })
  .strict();
export type ClusterQuota = z.infer<typeof clusterQuota>;
export const DEFAULT_CLUSTER_QUOTA: ClusterQuota = { cpus: 8, memoryMb: 16_384, gpus: 0, maxReplicas: 20 };

/** Tenant view: `driverConfig` may hold credentials (kubeconfig) and is never returned. */
export const clusterColumns = {
  id: clusters.id,
  orgId: clusters.orgId,
  name: clusters.name,
  driver: clusters.driver,
  region: clusters.region,
  quota: clusters.quota,
  state: clusters.state,
  stateReason: clusters.stateReason,
  driverState: clusters.driverState,
  createdAt: clusters.createdAt,
};

const clusterId = z.object({ clusterId: z.uuid() });

const conflictOnName = (err: unknown): never => {
  if (isUniqueViolation(err))
    throw apiError("CONFLICT", "a cluster with that name exists", { fieldErrors: { name: "already used" } });
  throw err;
};

export const clustersRouter = router({
  list: orgProcedure("member").query(({ ctx }) =>
    ctx.db
      .select(clusterColumns)
      .from(clusters)
      .where(and(eq(clusters.orgId, ctx.org.id), isNull(clusters.deletedAt)))
      .orderBy(asc(clusters.createdAt)),
  ),

  get: orgProcedure("member")
    .input(clusterId)
    .query(async ({ ctx, input }) => {
      const [row] = await ctx.db
        .select(clusterColumns)
        .from(clusters)
        .where(
          and(eq(clusters.id, input.clusterId), eq(clusters.orgId, ctx.org.id), isNull(clusters.deletedAt)),
        );
      if (!row) throw apiError("NOT_FOUND", "cluster not found");
      const [apps] = await ctx.db
        .select({ n: count() })
        .from(applications)
        .where(and(eq(applications.clusterId, row.id), isNull(applications.deletedAt)));
      return { ...row, applicationCount: apps?.n ?? 0 };
    }),

  create: orgProcedure("admin")
    .input(
      z.object({
        name: slug,
        driver: z.enum(["local", "kubernetes"]).default("local"),
        region: z.string().trim().min(1).max(63).default("local"),
        quota: clusterQuota.optional(),
      }),
    )
    .mutation(async ({ ctx, input }) => {
      const [row] = await ctx.db
        .insert(clusters)
        .values({
          orgId: ctx.org.id,
          name: input.name,
          driver: input.driver,
          region: input.region,
          quota: input.quota ?? DEFAULT_CLUSTER_QUOTA,
        })
        .returning(clusterColumns)
        .catch(conflictOnName);
      const { jobId } = await ctx.jobs.enqueue(
        { kind: "provisionCluster", clusterId: row!.id },
        { orgId: ctx.org.id },
      );
      ctx.audit.targetId = row!.id;
      ctx.audit.details = { name: input.name, driver: input.driver, jobId };
      return { cluster: row!, jobId };
    }),

  /** Renames and quota changes; the provisioner re-applies quota on its next reconcile. */
  update: orgProcedure("admin")
    .input(clusterId.extend({ name: slug.optional(), quota: clusterQuota.optional() }))
    .mutation(async ({ ctx, input }) => {
      const set: Partial<typeof clusters.$inferInsert> = {};
      if (input.name !== undefined) set.name = input.name;
      if (input.quota !== undefined) set.quota = input.quota;
      if (Object.keys(set).length === 0)
        throw apiError("VALIDATION_FAILED", "nothing to update", {
          fieldErrors: { _: "give name or quota" },
        });
      const [row] = await ctx.db
        .update(clusters)
        .set(set)
        .where(
          and(eq(clusters.id, input.clusterId), eq(clusters.orgId, ctx.org.id), isNull(clusters.deletedAt)),
        )
        .returning(clusterColumns)
        .catch(conflictOnName);
      if (!row) throw apiError("NOT_FOUND", "cluster not found");
      const { jobId } = await ctx.jobs.enqueue(
        { kind: "provisionCluster", clusterId: row.id },
        { orgId: ctx.org.id, dedupeKey: `provisionCluster:${row.id}:${Date.now()}` },
      );
      ctx.audit.targetId = row.id;
      ctx.audit.details = { ...set, jobId };
      return { cluster: row, jobId };
    }),

  /** Refused (CONFLICT) while the cluster still has applications: delete those first. */
  delete: orgProcedure("admin")
    .input(clusterId)
    .mutation(async ({ ctx, input }) => {
      const row = await ctx.db.transaction(async (tx) => {
        const [c] = await tx
          .select({ id: clusters.id })
          .from(clusters)
          .where(
            and(eq(clusters.id, input.clusterId), eq(clusters.orgId, ctx.org.id), isNull(clusters.deletedAt)),
          )
          .for("update");
        if (!c) throw apiError("NOT_FOUND", "cluster not found");
        const [apps] = await tx
          .select({ n: count() })
          .from(applications)
          .where(and(eq(applications.clusterId, c.id), isNull(applications.deletedAt)));
        if ((apps?.n ?? 0) > 0)
          throw apiError("CONFLICT", "the cluster still has applications; delete them first");
        const [updated] = await tx
          .update(clusters)
          .set({ state: "deleting", deletedAt: new Date() })
          .where(eq(clusters.id, c.id))
          .returning(clusterColumns);
        return updated!;
      });
      const { jobId } = await ctx.jobs.enqueue(
        { kind: "destroyCluster", clusterId: row.id },
        { orgId: ctx.org.id },
      );
      ctx.audit.targetId = row.id;
      ctx.audit.details = { jobId };
      return { cluster: row, jobId };
    }),
});
