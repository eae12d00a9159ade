import { deploymentSlo, orgSloSummary, SLO_WINDOWS } from "@tessera/billing/service";
import { uptimeIncidents } from "@tessera/db";
import { and, desc, eq } from "drizzle-orm";
import { z } from "zod";
import { orgProcedure, router } from "../trpc.js";
import { findDeployment } from "./deployments.js";

const window = z.enum(Object.keys(SLO_WINDOWS) as [keyof typeof SLO_WINDOWS]).default("24h");

export const sloRouter = router({
  /** Availability, error budget, latency percentiles and incidents of every live deployment. */
  summary: orgProcedure("member")
    .input(z.object({ window }))
    .query(({ ctx, input }) => orgSloSummary(ctx.db, ctx.org.id, input.window)),

  /** One deployment's SLO view: uptime bars (hourly over 24 h, daily over 30 d), latency, incidents. */
  deployment: orgProcedure("member")
    .input(z.object({ deploymentId: z.uuid(), window }))
    .query(async ({ ctx, input }) => {
      const dep = await findDeployment(ctx.db, ctx.org.id, input.deploymentId);
      return deploymentSlo(ctx.db, dep.id, input.window);
    }),

  /** Incidents of the organisation (optionally one deployment), newest first. */
  incidents: orgProcedure("member")
    .input(
      z.object({ deploymentId: z.uuid().optional(), limit: z.number().int().min(1).max(500).default(50) }),
    )
    .query(({ ctx, input }) =>
      ctx.db
        .select()
        .from(uptimeIncidents)
        .where(
          and(
            eq(uptimeIncidents.orgId, ctx.org.id),
            input.deploymentId ? eq(uptimeIncidents.deploymentId, input.deploymentId) : undefined,
          ),
        )
        .orderBy(desc(uptimeIncidents.openedAt))
        .limit(input.limit),
    ),
});
