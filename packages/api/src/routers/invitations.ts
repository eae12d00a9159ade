import { generateToken, hashApiKey } from "@tessera/core";
import { type Database, invitations, memberships, organisations, users } from "@tessera/db";
import { and, desc, eq, isNull, sql } from "drizzle-orm";
import { z } from "zod";
import { email } from "../auth.js";
import { apiError } from "../errors.js";
import { authedProcedure, orgProcedure, publicProcedure, role, router } from "../trpc.js";

export const INVITATION_TTL_MS = 7 * 24 * 3600 * 1000;

const publicColumns = {
  id: invitations.id,
  orgId: invitations.orgId,
  email: invitations.email,
  role: invitations.role,
  invitedBy: invitations.invitedBy,
  expiresAt: invitations.expiresAt,
  acceptedAt: invitations.acceptedAt,
  revokedAt: invitations.revokedAt,
  createdAt: invitations.createdAt,
};

type InvitationState = "pending" | "accepted" | "revoked" | "expired";
function stateOf(i: { acceptedAt: Date | null; revokedAt: Date | null; expiresAt: Date }): InvitationState {
  if (i.acceptedAt) return "accepted";
  if (i.revokedAt) return "revoked";
  return i.expiresAt.getTime() <= Date.now() ? "expired" : "pending";
}

const tokenInput = z.object({ token: z.string().min(10).max(200) });

async function findByToken(db: Database, token: string) {
  const [row] = await db
    .select({ ...publicColumns, orgName: organisations.name, orgSlug: organisations.slug })
    .from(invitations)
    .innerJoin(organisations, eq(organisations.id, invitations.orgId))
    .where(eq(invitations.tokenHash, hashApiKey(token)))
    .limit(1);
  return row;
}

export const invitationsRouter = router({
  list: orgProcedure("member").query(async ({ ctx }) => {
    const rows = await ctx.db
      .select(publicColumns)
      .from(invitations)
      .where(eq(invitations.orgId, ctx.org.id))
      .orderBy(desc(invitations.createdAt));
    return rows.map((r) => ({ ...r, state: stateOf(r) }));
  }),

  /** The token is returned once (for the invite link); only its hash is stored. */
  create: orgProcedure("admin")
    .input(z.object({ email, role: role.default("member") }))
    .mutation(async ({ ctx, input }) => {
      if (input.role === "owner" && ctx.role !== "owner")
        throw apiError("FORBIDDEN", "only an owner can invite owners");
      const [already] = await ctx.db
        .select({ userId: memberships.userId })
        .from(memberships)
        .innerJoin(users, eq(users.id, memberships.userId))
        .where(and(eq(memberships.orgId, ctx.org.id), eq(users.email, input.email)))
        .limit(1);
      if (already)
        throw apiError("CONFLICT", `${input.email} is already a member`, {
          fieldErrors: { email: "already a member" },
        });
      const { token, hash } = generateToken();
      const [invitation] = await ctx.db
        .insert(invitations)
        .values({
          orgId: ctx.org.id,
          email: input.email,
          role: input.role,
          tokenHash: hash,
          invitedBy: ctx.userId,
          expiresAt: new Date(Date.now() + INVITATION_TTL_MS),
        })
        .returning(publicColumns);
      ctx.audit.targetId = invitation!.id;
      ctx.audit.details = { email: input.email, role: input.role };
      return { invitation: { ...invitation!, state: stateOf(invitation!) }, token };
    }),

  revoke: orgProcedure("admin")
    .input(z.object({ invitationId: z.uuid() }))
    .mutation(async ({ ctx, input }) => {
      const [row] = await ctx.db
        .update(invitations)
        .set({ revokedAt: sql`now()` })
        .where(
          and(
            eq(invitations.id, input.invitationId),
            eq(invitations.orgId, ctx.org.id),
            isNull(invitations.acceptedAt),
            isNull(invitations.revokedAt),
          ),
        )
        .returning(publicColumns);
      if (!row) throw apiError("NOT_FOUND", "no pending invitation with that id");
      ctx.audit.targetId = row.id;
      return { ...row, state: stateOf(row) };
    }),

  /** For the accept page before sign-in: the token itself is the credential. */
  lookup: publicProcedure.input(tokenInput).query(async ({ ctx, input }) => {
    const row = await findByToken(ctx.db, input.token);
    if (!row) throw apiError("NOT_FOUND", "invitation not found");
    return {
      orgName: row.orgName,
      orgSlug: row.orgSlug,
      email: row.email,
      role: row.role,
      expiresAt: row.expiresAt,
      state: stateOf(row),
    };
  }),

  accept: authedProcedure.input(tokenInput).mutation(async ({ ctx, input }) => {
    const row = await findByToken(ctx.db, input.token);
    if (!row) throw apiError("NOT_FOUND", "invitation not found");
    if (row.email !== ctx.user.email)
      throw apiError("FORBIDDEN", "this invitation was sent to another email address");
    const state = stateOf(row);
    if (state !== "pending") throw apiError("CONFLICT", `this invitation is ${state}`);
    await ctx.db.transaction(async (tx) => {
      // The conditional update makes a double accept (two tabs) take effect once.
      const [claimed] = await tx
        .update(invitations)
        .set({ acceptedAt: sql`now()` })
        .where(and(eq(invitations.id, row.id), isNull(invitations.acceptedAt), isNull(invitations.revokedAt)))
        .returning({ id: invitations.id });
      if (!claimed) throw apiError("CONFLICT", "this invitation is no longer pending");
      await tx
        .insert(memberships)
        .values({ orgId: row.orgId, userId: ctx.user.id, role: row.role })
        .onConflictDoNothing();
    });
    ctx.audit.orgId = row.orgId;
    ctx.audit.targetId = row.id;
    ctx.audit.details = { role: row.role };
    return { orgId: row.orgId, orgSlug: row.orgSlug, orgName: row.orgName, role: row.role };
  }),
});
