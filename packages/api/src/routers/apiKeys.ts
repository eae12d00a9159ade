import { generateApiKey } from "@tessera/core";
import { apiKeys } from "@tessera/db";
import { and, desc, eq, isNull, sql } from "drizzle-orm";
import { z } from "zod";
import { apiError } from "../errors.js";
import { orgProcedure, router } from "../trpc.js";

const publicColumns = {
  id: apiKeys.id,
  orgId: apiKeys.orgId,
  name: apiKeys.name,
  prefix: apiKeys.prefix,
  createdBy: apiKeys.createdBy,
  createdAt: apiKeys.createdAt,
  lastUsedAt: apiKeys.lastUsedAt,
  revokedAt: apiKeys.revokedAt,
};

export const apiKeysRouter = router({
  list: orgProcedure("member").query(({ ctx }) =>
    ctx.db
      .select(publicColumns)
      .from(apiKeys)
      .where(eq(apiKeys.orgId, ctx.org.id))
      .orderBy(desc(apiKeys.createdAt)),
  ),

  /** `key` is returned here and never again; the database keeps its SHA-256 and the prefix. */
  create: orgProcedure("admin")
    .input(
      z.object({ name: z.string().trim().min(1, "must not be empty").max(100, "at most 100 characters") }),
    )
    .mutation(async ({ ctx, input }) => {
      const { key, prefix, hash } = generateApiKey();
      const [apiKey] = await ctx.db
        .insert(apiKeys)
        .values({ orgId: ctx.org.id, name: input.name, prefix, keyHash: hash, createdBy: ctx.userId })
        .returning(publicColumns);
      ctx.audit.targetId = apiKey!.id;
      ctx.audit.details = { name: input.name, prefix };
      return { apiKey: apiKey!, key };
    }),

  revoke: orgProcedure("admin")
    .input(z.object({ apiKeyId: z.uuid() }))
    .mutation(async ({ ctx, input }) => {
      const [row] = await ctx.db
        .update(apiKeys)
        .set({ revokedAt: sql`now()` })
        .where(and(eq(apiKeys.id, input.apiKeyId), eq(apiKeys.orgId, ctx.org.id), isNull(apiKeys.revokedAt)))
        .returning(publicColumns);
      if (!row) throw apiError("NOT_FOUND", "no active API key with that id");
      ctx.audit.targetId = row.id;
      ctx.audit.details = { prefix: row.prefix };
      await ctx.notify({ kind: "apiKeyRevoked", prefix: row.prefix });
      return row;
    }),
});
