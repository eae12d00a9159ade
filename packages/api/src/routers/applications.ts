import { slug } from "@tessera/core";
import { applications, clusters, deployments } from "@tessera/db";
import { and, asc, eq, isNull } from "drizzle-orm";
import { z } from "zod";
import { apiError, isUniqueViolation } from "../errors.js";
import { orgProcedure, router } from "../trpc.js";

const applicationId = z.object({ applicationId: z.uuid() });

export const applicationsRouter = router({
  list: orgProcedure("member")
    .input(z.object({ clusterId: z.uuid().optional() }))
    .query(({ ctx, input }) =>
      ctx.db
        .select()
        .from(applications)
        .where(
          and(
            eq(applications.orgId, ctx.org.id),
            isNull(applications.deletedAt),
            input.clusterId ? eq(applications.clusterId, input.clusterId) : undefined,
          ),
        )
        .orderBy(asc(applications.createdAt)),
    ),

  get: orgProcedure("member")
    .input(applicationId)
    .query(async ({ ctx, input }) => {
      const [app] = await ctx.db
        .select()
        .from(applications)
        .where(
          and(
            eq(applications.id, input.applicationId),
            eq(applications.orgId, ctx.org.id),
            isNull(applications.deletedAt),
          ),
        );
      if (!app) throw apiError("NOT_FOUND", "application not found");
      const deps = await ctx.db
        .select({
          id: deployments.id,
          name: deployments.name,
          state: deployments.state,
          version: deployments.version,
          targetReplicas: deployments.targetReplicas,
          liveRevisionId: deployments.liveRevisionId,
          desiredRevisionId: deployments.desiredRevisionId,
          updatedAt: deployments.updatedAt,
        })
        .from(deployments)
        .where(
          and(
            eq(deployments.applicationId, app.id),
            eq(deployments.orgId, ctx.org.id),
            isNull(deployments.deletedAt),
          ),
        )
        .orderBy(asc(deployments.createdAt));
      return { ...app, deployments: deps };
    }),

  create: orgProcedure("admin")
    .input(z.object({ clusterId: z.uuid(), name: slug, ingressDeployment: slug.optional() }))
    .mutation(async ({ ctx, input }) => {
      const [cluster] = await ctx.db
        .select({ id: clusters.id })
        .from(clusters)
        .where(
          and(eq(clusters.id, input.clusterId), eq(clusters.orgId, ctx.org.id), isNull(clusters.deletedAt)),
        );
      if (!cluster) throw apiError("NOT_FOUND", "cluster not found");
      try {
        const [app] = await ctx.db
          .insert(applications)
          .values({
            orgId: ctx.org.id,
            clusterId: cluster.id,
            name: input.name,
            ingressDeployment: input.ingressDeployment ?? null,
          })
          .returning();
        ctx.audit.targetId = app!.id;
        ctx.audit.details = { name: input.name, clusterId: cluster.id };
        return app!;
      } catch (err) {
        if (isUniqueViolation(err))
          throw apiError("CONFLICT", "an application with that name exists", {
            fieldErrors: { name: "already used" },
          });
        throw err;
      }
    }),

  /**
   * Marks the application and its deployments deleted at once (names become reusable) and
   * enqueues `deleteApplication`; the provisioner stops the replicas.
   */
  delete: orgProcedure("admin")
    .input(applicationId)
    .mutation(async ({ ctx, input }) => {
      const now = new Date();
      const app = await ctx.db.transaction(async (tx) => {
        const [a] = await tx
          .update(applications)
          .set({ deletedAt: now })
          .where(
            and(
              eq(applications.id, input.applicationId),
              eq(applications.orgId, ctx.org.id),
              isNull(applications.deletedAt),
            ),
          )
          .returning();
        if (!a) throw apiError("NOT_FOUND", "application not found");
        await tx
          .update(deployments)
          .set({ state: "deleting", deletedAt: now, updatedAt: now })
          .where(and(eq(deployments.applicationId, a.id), isNull(deployments.deletedAt)));
        return a;
      });
      const { jobId } = await ctx.jobs.enqueue(
        { kind: "deleteApplication", applicationId: app.id },
        { orgId: ctx.org.id },
      );
      ctx.audit.targetId = app.id;
      ctx.audit.details = { name: app.name, jobId };
      return { application: app, jobId };
    }),
});
