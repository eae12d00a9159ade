import { type Database, memberships, type Role, users } from "@tessera/db";
import { and, asc, eq } from "drizzle-orm";
import { z } from "zod";
import { apiError } from "../errors.js";
import { orgProcedure, ROLE_RANK, role, router } from "../trpc.js";

type Tx = Parameters<Parameters<Database["transaction"]>[0]>[0];

/**
 * Lock the org's owner rows, then check that `userId` losing ownership leaves at least one owner.
 * The lock serialises two owners demoting each other at the same time.
 */
async function assertNotLastOwner(tx: Tx, orgId: string, userId: string, what: string): Promise<void> {
  const owners = await tx
    .select({ userId: memberships.userId })
    .from(memberships)
    .where(and(eq(memberships.orgId, orgId), eq(memberships.role, "owner")))
    .for("update");
  if (owners.length === 1 && owners[0]!.userId === userId) {
    throw apiError("CONFLICT", `the last owner cannot ${what}; make someone else owner first`);
  }
}

async function membershipOf(tx: Tx, orgId: string, userId: string): Promise<{ role: Role }> {
  const [m] = await tx
    .select({ role: memberships.role })
    .from(memberships)
    .where(and(eq(memberships.orgId, orgId), eq(memberships.userId, userId)))
    .for("update");
  if (!m) throw apiError("NOT_FOUND", "member not found");
  return m;
}

export const membersRouter = router({
  list: orgProcedure("member").query(({ ctx }) =>
    ctx.db
      .select({
        userId: users.id,
        email: users.email,
        name: users.name,
        role: memberships.role,
        joinedAt: memberships.createdAt,
      })
      .from(memberships)
      .innerJoin(users, eq(users.id, memberships.userId))
      .where(eq(memberships.orgId, ctx.org.id))
      .orderBy(asc(memberships.createdAt)),
  ),

  setRole: orgProcedure("owner")
    .input(z.object({ userId: z.uuid(), role }))
    .mutation(async ({ ctx, input }) => {
      const result = await ctx.db.transaction(async (tx) => {
        const current = await membershipOf(tx, ctx.org.id, input.userId);
        if (current.role === "owner" && input.role !== "owner")
          await assertNotLastOwner(tx, ctx.org.id, input.userId, "be demoted");
        await tx
          .update(memberships)
          .set({ role: input.role })
          .where(and(eq(memberships.orgId, ctx.org.id), eq(memberships.userId, input.userId)));
        return { userId: input.userId, role: input.role, previousRole: current.role };
      });
      ctx.audit.targetId = input.userId;
      ctx.audit.details = { from: result.previousRole, to: input.role };
      return result;
    }),

  /** Admins remove members; removing an admin or owner takes an owner. */
  remove: orgProcedure("admin")
    .input(z.object({ userId: z.uuid() }))
    .mutation(async ({ ctx, input }) => {
      await ctx.db.transaction(async (tx) => {
        const current = await membershipOf(tx, ctx.org.id, input.userId);
        if (ROLE_RANK[current.role] >= ROLE_RANK.admin && ctx.role !== "owner")
          throw apiError("FORBIDDEN", `removing an ${current.role} takes an owner`);
        if (current.role === "owner") await assertNotLastOwner(tx, ctx.org.id, input.userId, "be removed");
        await tx
          .delete(memberships)
          .where(and(eq(memberships.orgId, ctx.org.id), eq(memberships.userId, input.userId)));
      });
      ctx.audit.targetId = input.userId;
      return { ok: true as const };
    }),

  leave: orgProcedure("member").mutation(async ({ ctx }) => {
    const userId = ctx.userId;
    if (!userId) throw apiError("FORBIDDEN", "an API key is not a member and cannot leave");
    await ctx.db.transaction(async (tx) => {
      const current = await membershipOf(tx, ctx.org.id, userId);
      if (current.role === "owner") await assertNotLastOwner(tx, ctx.org.id, userId, "leave");
      await tx
        .delete(memberships)
        .where(and(eq(memberships.orgId, ctx.org.id), eq(memberships.userId, userId)));
    });
    ctx.audit.targetId = userId;
    return { ok: true as const };
  }),
});
