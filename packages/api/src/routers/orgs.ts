import { slug as slugSchema } from "@tessera/core";
import { clusters, memberships, organisations } from "@tessera/db";
import { and, asc, count, eq, isNull } from "drizzle-orm";
import { z } from "zod";
import { apiError, isUniqueViolation } from "../errors.js";
import { RESERVED_ORG_SLUGS, uniqueSlug } from "../slugs.js";
import { authedProcedure, orgProcedure, router } from "../trpc.js";

const orgName = z.string().trim().min(1, "must not be empty").max(100, "at most 100 characters");

export const orgsRouter = router({
  list: authedProcedure.query(({ ctx }) =>
    ctx.db
      .select({
        id: organisations.id,
        slug: organisations.slug,
        name: organisations.name,
        personal: organisations.personal,
        plan: organisations.plan,
        role: memberships.role,
      })
      .from(memberships)
      .innerJoin(organisations, eq(organisations.id, memberships.orgId))
      .where(eq(memberships.userId, ctx.user.id))
      .orderBy(asc(organisations.createdAt)),
  ),

  create: authedProcedure
    .input(
      z.object({
        name: orgName,
        slug: slugSchema.refine((s) => !RESERVED_ORG_SLUGS.has(s), "is reserved").optional(),
      }),
    )
    .mutation(async ({ ctx, input }) => {
      // A derived slug can be taken by a concurrent create between check and insert: derive again.
      for (let attempt = 0; ; attempt++) {
        try {
          const org = await ctx.db.transaction(async (tx) => {
            const s = input.slug ?? (await uniqueSlug(tx, input.name));
            const [o] = await tx.insert(organisations).values({ name: input.name, slug: s }).returning();
            await tx.insert(memberships).values({ orgId: o!.id, userId: ctx.user.id, role: "owner" });
            return o!;
          });
          ctx.audit.orgId = org.id;
          ctx.audit.targetId = org.id;
          ctx.audit.details = { slug: org.slug };
          return { ...org, role: "owner" as const };
        } catch (err) {
          if (!isUniqueViolation(err)) throw err;
          if (input.slug)
            throw apiError("CONFLICT", "that slug is taken", { fieldErrors: { slug: "already taken" } });
          if (attempt >= 5)
            throw apiError("CONFLICT", "could not find a free slug; give one", {
              fieldErrors: { slug: "give a slug" },
            });
        }
      }
    }),

  get: orgProcedure("member").query(async ({ ctx }) => {
    const [members] = await ctx.db
      .select({ n: count() })
      .from(memberships)
      .where(eq(memberships.orgId, ctx.org.id));
    return { ...ctx.org, role: ctx.role, memberCount: members?.n ?? 0 };
  }),

  update: orgProcedure("admin")
    .input(z.object({ name: orgName }))
    .mutation(async ({ ctx, input }) => {
      const [o] = await ctx.db
        .update(organisations)
        .set({ name: input.name })
        .where(eq(organisations.id, ctx.org.id))
        .returning();
      ctx.audit.targetId = ctx.org.id;
      ctx.audit.details = { name: input.name };
      return o!;
    }),

  /** Refused while clusters exist: their replicas must be torn down by the provisioner first. */
  delete: orgProcedure("owner").mutation(async ({ ctx }) => {
    const [live] = await ctx.db
      .select({ n: count() })
      .from(clusters)
      .where(and(eq(clusters.orgId, ctx.org.id), isNull(clusters.deletedAt)));
    if ((live?.n ?? 0) > 0) throw apiError("CONFLICT", "delete the organisation's clusters first");
    await ctx.db.delete(organisations).where(eq(organisations.id, ctx.org.id));
    ctx.audit.targetId = ctx.org.id;
    ctx.audit.details = { slug: ctx.org.slug };
    return { ok: true as const };
  }),
});
