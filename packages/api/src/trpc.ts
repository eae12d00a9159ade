import { auditLog, memberships, organisations, type Role } from "@tessera/db";
import { initTRPC } from "@trpc/server";
import { and, eq } from "drizzle-orm";
import { z } from "zod";
import { type Context, newAuditDraft } from "./context.js";
import { apiError, describeError } from "./errors.js";

const t = initTRPC.context<Context>().create({
  /**
   * Every error carries the stable Tessera code in `data.code` and, for validation failures,
   * `data.fieldErrors` (`path -> message`). tRPC's own code stays in `data.trpcCode`.
   */
  errorFormatter({ shape, error }) {
    const d = describeError(error);
    return {
      ...shape,
      message: d.message,
      data: {
        ...shape.data,
        trpcCode: shape.data.code,
        code: d.code,
        httpStatus: d.httpStatus,
        fieldErrors: d.fieldErrors ?? null,
        stack: undefined,
      },
    };
  },
});

export const router = t.router;
export const createCallerFactory = t.createCallerFactory;

export const ROLE_RANK: Record<Role, number> = { member: 1, admin: 2, owner: 3 };
export const role = z.enum(["owner", "admin", "member"]);

/**
 * Audit every successful mutation, named by its procedure path. Procedures fill `ctx.audit`
 * (target, details); the org middleware fills the organisation. A failed mutation changed
 * nothing, so it leaves no row.
 */
const audited = t.middleware(async ({ ctx, type, path, next }) => {
  const audit = newAuditDraft();
  const result = await next({ ctx: { audit } });
  if (type === "mutation" && result.ok && !audit.written) {
    const c = ctx.caller;
    const row = {
      orgId: audit.orgId ?? (c.kind === "apiKey" ? c.orgId : null),
      userId: c.kind === "user" ? c.user.id : null,
      action: path,
      targetId: audit.targetId,
      details: { ...audit.details, ...(c.kind === "apiKey" ? { apiKeyId: c.apiKeyId } : {}) },
    };
    // The change is committed: failing the call now would make clients retry a done deploy.
    // A lost row is logged in full instead, so it can be recovered from the logs.
    await ctx.db
      .insert(auditLog)
      .values(row)
      .catch((err: unknown) =>
        console.error(
          JSON.stringify({ level: "error", msg: "audit row not written", row, err: String(err) }),
        ),
      );
  }
  return result;
});

export const publicProcedure = t.procedure.use(audited);

/** A signed-in user (session); API keys are not users. */
export const authedProcedure = publicProcedure.use(({ ctx, next }) => {
  if (ctx.caller.kind !== "user") {
    throw apiError(
      "UNAUTHENTICATED",
      ctx.caller.kind === "apiKey"
        ? "this procedure needs a signed-in user, not an API key"
        : "sign in first",
    );
  }
  return next({ ctx: { user: ctx.caller.user, sessionId: ctx.caller.sessionId } });
});

export interface OrgRef {
  id: string;
  slug: string;
  name: string;
  personal: boolean;
  plan: string;
}

/**
 * Organisation-scoped procedure: takes `orgId`, resolves the caller's role there (an API key is
 * `admin` of its own org), and refuses below `minRole`. An organisation the caller does not
 * belong to answers NOT_FOUND, so ids of other tenants are not even confirmed to exist.
 */
export function orgProcedure(minRole: Role) {
  return publicProcedure.input(z.object({ orgId: z.uuid() })).use(async ({ ctx, input, next }) => {
    const c = ctx.caller;
    if (c.kind === "anonymous") throw apiError("UNAUTHENTICATED", "sign in or use an API key");
    let org: OrgRef | undefined;
    let callerRole: Role | undefined;
    const cols = {
      id: organisations.id,
      slug: organisations.slug,
      name: organisations.name,
      personal: organisations.personal,
      plan: organisations.plan,
    };
    if (c.kind === "apiKey") {
      if (c.orgId === input.orgId) {
        [org] = await ctx.db
          .select(cols)
          .from(organisations)
          .where(eq(organisations.id, input.orgId))
          .limit(1);
        callerRole = "admin";
      }
    } else {
      const [row] = await ctx.db
        .select({ ...cols, role: memberships.role })
        .from(organisations)
        .innerJoin(
          memberships,
          and(eq(memberships.orgId, organisations.id), eq(memberships.userId, c.user.id)),
        )
        .where(eq(organisations.id, input.orgId))
        .limit(1);
      if (row) {
        const { role: r, ...rest } = row;
        org = rest;
        callerRole = r;
      }
    }
    if (!org || !callerRole) throw apiError("NOT_FOUND", "organisation not found");
    if (ROLE_RANK[callerRole] < ROLE_RANK[minRole])
      throw apiError("FORBIDDEN", `this needs the ${minRole} role; you are ${callerRole}`);
    ctx.audit.orgId = org.id;
    return next({
      ctx: {
        org,
        role: callerRole,
        userId: c.kind === "user" ? c.user.id : null,
      },
    });
  });
}

/** Platform operators: read-only views across all organisations. */
export const adminProcedure = authedProcedure.use(({ ctx, next }) => {
  if (!ctx.user.isPlatformAdmin) throw apiError("FORBIDDEN", "platform admins only");
  return next();
});
