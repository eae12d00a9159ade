import { environmentLogs, environments, jobLogs, jobs, revisions } from "@tessera/db";
import { and, asc, eq, gt } from "drizzle-orm";
import { z } from "zod";
import { apiError } from "../errors.js";
import { orgProcedure, router } from "../trpc.js";

const sinceId = z.number().int().min(0).default(0);
const limit = z.number().int().min(1).max(5000).default(1000);

export const jobsRouter = router({
  /** A provisioner job of this organisation with its log lines after `sinceId`. */
  get: orgProcedure("member")
    .input(z.object({ jobId: z.uuid(), sinceId, limit }))
    .query(async ({ ctx, input }) => {
      const [job] = await ctx.db
        .select()
        .from(jobs)
        .where(and(eq(jobs.id, input.jobId), eq(jobs.orgId, ctx.org.id)));
      if (!job) throw apiError("NOT_FOUND", "job not found");
      const lines = await ctx.db
        .select({ id: jobLogs.id, line: jobLogs.line, at: jobLogs.at })
        .from(jobLogs)
        .where(and(eq(jobLogs.jobId, job.id), gt(jobLogs.id, input.sinceId)))
        .orderBy(asc(jobLogs.id))
        .limit(input.limit);
      return { job, lines, nextSinceId: lines.at(-1)?.id ?? input.sinceId };
    }),
});

export const environmentsRouter = router({
  /**
   * Environments are shared across tenants by hash, so visibility comes from use: an org sees an
   * environment (and its build log) only when one of its revisions names that hash.
   */
  get: orgProcedure("member")
    .input(
      z.object({
        hash: z.string().regex(/^[0-9a-f]{32}$/, "must be a 32-character hex environment hash"),
        sinceId,
        limit,
      }),
    )
    .query(async ({ ctx, input }) => {
      const [used] = await ctx.db
        .select({ id: revisions.id })
        .from(revisions)
        .where(and(eq(revisions.orgId, ctx.org.id), eq(revisions.envHash, input.hash)))
        .limit(1);
      if (!used) throw apiError("NOT_FOUND", "environment not found");
      const [env] = await ctx.db.select().from(environments).where(eq(environments.hash, input.hash));
      if (!env) throw apiError("NOT_FOUND", "environment not found");
      const lines = await ctx.db
        .select({ id: environmentLogs.id, line: environmentLogs.line, at: environmentLogs.at })
        .from(environmentLogs)
        .where(and(eq(environmentLogs.envHash, env.hash), gt(environmentLogs.id, input.sinceId)))
        .orderBy(asc(environmentLogs.id))
        .limit(input.limit);
      // `path` is a location on the cluster host: operators' business, not the tenant's.
      const { path: _path, ...visible } = env;
      return { environment: visible, lines, nextSinceId: lines.at(-1)?.id ?? input.sinceId };
    }),
});
