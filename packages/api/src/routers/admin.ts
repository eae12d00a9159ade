import { applications, clusters, deployments, memberships, organisations, users } from "@tessera/db";
import { and, count, desc, eq, ilike, isNull, or, type SQL } from "drizzle-orm";
import { z } from "zod";
import { adminProcedure, router } from "../trpc.js";
import { clusterColumns } from "./clusters.js";

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
});
