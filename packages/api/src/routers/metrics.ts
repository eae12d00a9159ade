import { applications, deployments, organisations, replicas, scalingEvents, usageEvents } from "@tessera/db";
import { and, asc, count, eq, gte, ilike, inArray, isNull, lt, or, sql } from "drizzle-orm";
import { z } from "zod";
import { apiError } from "../errors.js";
import { adminProcedure, orgProcedure, router } from "../trpc.js";
import { like } from "./admin.js";

/** Charts have at most this many points, whatever the window. */
const MAX_BUCKETS = 120;
const BUCKET_STEPS_S = [10, 30, 60, 300, 900, 3600, 4 * 3600];

/** The smallest round bucket that keeps a window within MAX_BUCKETS points. */
export function bucketSecondsFor(windowS: number): number {
  return BUCKET_STEPS_S.find((b) => windowS / b <= MAX_BUCKETS) ?? BUCKET_STEPS_S.at(-1)!;
}

const windowInput = z.object({
  /** How far back the series goes, in minutes (5 minutes .. 7 days). */
  windowMinutes: z
    .number()
    .int()
    .min(5)
    .max(7 * 24 * 60)
    .default(60),
});

export interface TrafficPoint {
  /** Bucket start, epoch milliseconds. */
  t: number;
  requests: number;
  errors: number;
  rps: number;
  errorRate: number;
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

/** An error is a request the platform or the handler failed (5xx), not a client's 4xx. */
const isError = sql`${usageEvents.status} >= 500`;

export const metricsRouter = router({
  /**
   * A deployment's traffic over a window, from the gateway's per-request usage events: requests
   * per second, error rate and latency percentiles per time bucket, plus the replica count over
   * the same window (from scaling events, ending at the current target).
   */
  deployment: orgProcedure("member")
    .input(windowInput.extend({ deploymentId: z.uuid() }))
    .query(async ({ ctx, input }) => {
      const [dep] = await ctx.db
        .select({ id: deployments.id, targetReplicas: deployments.targetReplicas })
        .from(deployments)
        .where(
          and(
            eq(deployments.id, input.deploymentId),
            eq(deployments.orgId, ctx.org.id),
            isNull(deployments.deletedAt),
          ),
        );
      if (!dep) throw apiError("NOT_FOUND", "deployment not found");
      const windowS = input.windowMinutes * 60;
      const bucketS = bucketSecondsFor(windowS);
      const now = Date.now();
      // Bucket boundaries aligned to the bucket size, so polling does not shift the points.
      const end = Math.ceil(now / 1000 / bucketS) * bucketS;
      const start = end - Math.ceil(windowS / bucketS) * bucketS;
      const from = new Date(start * 1000);
      const bucket = sql<number>`floor(extract(epoch from ${usageEvents.at}) / ${bucketS}) * ${bucketS}`;
      const rows = await ctx.db
        .select({
          bucket,
          requests: count(),
          errors: sql<number>`count(*) filter (where ${isError})`,
          p50: sql<number | null>`percentile_cont(0.5) within group (order by ${usageEvents.latencyMs})`,
          p95: sql<number | null>`percentile_cont(0.95) within group (order by ${usageEvents.latencyMs})`,
          p99: sql<number | null>`percentile_cont(0.99) within group (order by ${usageEvents.latencyMs})`,
        })
        .from(usageEvents)
        .where(
          and(
            eq(usageEvents.orgId, ctx.org.id),
            eq(usageEvents.deploymentId, dep.id),
            eq(usageEvents.kind, "request"),
            gte(usageEvents.at, from),
          ),
        )
        .groupBy(sql`1`)
        .orderBy(sql`1`);
      const byBucket = new Map(rows.map((r) => [Number(r.bucket), r]));
      const traffic: TrafficPoint[] = [];
      for (let b = start; b < end; b += bucketS) {
        const r = byBucket.get(b);
        const requests = Number(r?.requests ?? 0);
        const errors = Number(r?.errors ?? 0);
        const num = (v: unknown) =>
          v === null || v === undefined ? null : Math.round(Number(v) * 100) / 100;
        traffic.push({
          t: b * 1000,
          requests,
          errors,
          rps: requests / bucketS,
          errorRate: requests ? errors / requests : 0,
          p50: num(r?.p50),
          p95: num(r?.p95),
          p99: num(r?.p99),
        });
      }
      const events = await ctx.db
        .select({ at: scalingEvents.at, from: scalingEvents.fromReplicas, to: scalingEvents.toReplicas })
        .from(scalingEvents)
        .where(
          and(
            eq(scalingEvents.orgId, ctx.org.id),
            eq(scalingEvents.deploymentId, dep.id),
            gte(scalingEvents.at, from),
          ),
        )
        .orderBy(asc(scalingEvents.at));
      // The count before the first event in the window is that event's `from`.
      const replicaSeries = [
        { t: start * 1000, replicas: events[0]?.from ?? dep.targetReplicas },
        ...events.map((e) => ({ t: e.at.getTime(), replicas: e.to })),
        { t: now, replicas: dep.targetReplicas },
      ];
      const totals = traffic.reduce(
        (acc, p) => ({ requests: acc.requests + p.requests, errors: acc.errors + p.errors }),
        { requests: 0, errors: 0 },
      );
      return {
        bucketSeconds: bucketS,
        from: start * 1000,
        to: end * 1000,
        traffic,
        replicas: replicaSeries,
        totals,
      };
    }),

  /**
   * What each of the organisation's clusters runs now: live replicas and the resources they
   * hold (summed from the replicas' resource snapshots), against the cluster's quota.
   */
  clusterUsage: orgProcedure("member").query(async ({ ctx }) => {
    const rows = await ctx.db
      .select({
        clusterId: replicas.clusterId,
        replicas: count(),
        cpus: sql<number>`coalesce(sum((${replicas.resources}->>'cpus')::float8), 0)`,
        memoryMb: sql<number>`coalesce(sum((${replicas.resources}->>'memoryMb')::float8), 0)`,
        gpus: sql<number>`coalesce(sum((${replicas.resources}->>'gpus')::float8), 0)`,
      })
      .from(replicas)
      .where(and(eq(replicas.orgId, ctx.org.id), inArray(replicas.state, ["starting", "ready", "draining"])))
      .groupBy(replicas.clusterId);
    const deps = await ctx.db
      .select({ clusterId: deployments.clusterId, deployments: count() })
      .from(deployments)
      .where(and(eq(deployments.orgId, ctx.org.id), isNull(deployments.deletedAt)))
      .groupBy(deployments.clusterId);
    const depCount = new Map(deps.map((d) => [d.clusterId, Number(d.deployments)]));
    const ids = new Set([...rows.map((r) => r.clusterId), ...deps.map((d) => d.clusterId)]);
    const byId = new Map(rows.map((r) => [r.clusterId, r]));
    return [...ids].map((clusterId) => {
      const r = byId.get(clusterId);
      return {
        clusterId,
        deployments: depCount.get(clusterId) ?? 0,
        replicas: Number(r?.replicas ?? 0),
        cpus: Number(r?.cpus ?? 0),
        memoryMb: Number(r?.memoryMb ?? 0),
        gpus: Number(r?.gpus ?? 0),
      };
    });
  }),

  /**
   * Platform admins: every live deployment with its organisation, ready and total replicas, and
   * requests and errors over the last `windowMinutes`; `search` matches org, app or deployment.
   */
  adminDeployments: adminProcedure
    .input(
      windowInput.extend({
        search: z.string().trim().max(200).optional(),
        limit: z.number().int().min(1).max(500).default(200),
      }),
    )
    .query(async ({ ctx, input }) => {
      const deps = await ctx.db
        .select({
          id: deployments.id,
          name: deployments.name,
          state: deployments.state,
          targetReplicas: deployments.targetReplicas,
          orgId: organisations.id,
          orgSlug: organisations.slug,
          orgName: organisations.name,
          applicationName: applications.name,
          clusterId: deployments.clusterId,
        })
        .from(deployments)
        .innerJoin(organisations, eq(organisations.id, deployments.orgId))
        .innerJoin(applications, eq(applications.id, deployments.applicationId))
        .where(
          and(
            isNull(deployments.deletedAt),
            input.search
              ? or(
                  ilike(deployments.name, like(input.search)),
                  ilike(applications.name, like(input.search)),
                  ilike(organisations.slug, like(input.search)),
                  ilike(organisations.name, like(input.search)),
                )
              : undefined,
          ),
        )
        .orderBy(asc(organisations.slug), asc(applications.name), asc(deployments.name))
        .limit(input.limit);
      const ids = deps.map((d) => d.id);
      if (ids.length === 0) return [];
      const replicaCounts = await ctx.db
        .select({
          deploymentId: replicas.deploymentId,
          ready: sql<number>`count(*) filter (where ${replicas.state} = 'ready')`,
          running: count(),
        })
        .from(replicas)
        .where(
          and(
            inArray(replicas.deploymentId, ids),
            inArray(replicas.state, ["starting", "ready", "draining"]),
          ),
        )
        .groupBy(replicas.deploymentId);
      const since = new Date(Date.now() - input.windowMinutes * 60_000);
      const traffic = await ctx.db
        .select({
          deploymentId: usageEvents.deploymentId,
          requests: count(),
          errors: sql<number>`count(*) filter (where ${isError})`,
        })
        .from(usageEvents)
        .where(
          and(
            inArray(usageEvents.deploymentId, ids),
            eq(usageEvents.kind, "request"),
            gte(usageEvents.at, since),
            lt(usageEvents.at, sql`now() + interval '1 minute'`),
          ),
        )
        .groupBy(usageEvents.deploymentId);
      const r = new Map(replicaCounts.map((x) => [x.deploymentId, x]));
      const tr = new Map(traffic.map((x) => [x.deploymentId, x]));
      const windowS = input.windowMinutes * 60;
      return deps.map((d) => {
        const requests = Number(tr.get(d.id)?.requests ?? 0);
        const errors = Number(tr.get(d.id)?.errors ?? 0);
        return {
          ...d,
          readyReplicas: Number(r.get(d.id)?.ready ?? 0),
          runningReplicas: Number(r.get(d.id)?.running ?? 0),
          requests,
          errors,
          rps: requests / windowS,
          errorRate: requests ? errors / requests : 0,
        };
      });
    }),
});
