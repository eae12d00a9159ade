import { memberships, organisations } from "@tessera/db";
import { asc, eq } from "drizzle-orm";
import { revokeSession, signUp, signUpInput } from "../auth.js";
import { authedProcedure, publicProcedure, router } from "../trpc.js";

export const authRouter = router({
  signUp: publicProcedure.input(signUpInput).mutation(async ({ ctx, input }) => {
    const result = await signUp(ctx.db, input);
    ctx.audit.written = true; // signUp writes its own row inside its transaction
    return result;
  }),

  me: authedProcedure.query(async ({ ctx }) => {
    const orgs = await ctx.db
      .select({
        id: organisations.id,
        slug: organisations.slug,
        name: organisations.name,
        personal: organisations.personal,
        role: memberships.role,
      })
      .from(memberships)
      .innerJoin(organisations, eq(organisations.id, memberships.orgId))
      .where(eq(memberships.userId, ctx.user.id))
      .orderBy(asc(organisations.createdAt));
    return { user: ctx.user, orgs };
  }),

  /**
   * Who the credentials belong to, for any caller: lets the CLI learn the organisation its API
   * key acts for (it needs the `orgId` for every other call).
   */
  whoami: publicProcedure.query(async ({ ctx }) => {
    const c = ctx.caller;
    if (c.kind === "anonymous") return { kind: "anonymous" as const };
    if (c.kind === "user")
      return {
        kind: "user" as const,
        userId: c.user.id,
        email: c.user.email,
        isPlatformAdmin: c.user.isPlatformAdmin,
      };
    const [org] = await ctx.db
      .select({ id: organisations.id, slug: organisations.slug, name: organisations.name })
      .from(organisations)
      .where(eq(organisations.id, c.orgId));
    return { kind: "apiKey" as const, apiKeyId: c.apiKeyId, org: org ?? null, role: "admin" as const };
  }),

  /** Ends the calling session server-side; the JWT that names it stops working at once. */
  signOut: authedProcedure.mutation(async ({ ctx }) => {
    await revokeSession(ctx.db, ctx.sessionId);
    ctx.audit.targetId = ctx.sessionId;
    return { ok: true as const };
  }),
});
