import {
  applications,
  type Database,
  deployments,
  environments,
  jobs,
  organisations,
  replicas,
  uptimeIncidents,
  usageHourly,
} from "@tessera/db";
import { and, count, desc, eq, gte, isNull, lt, sql } from "drizzle-orm";
import { METERED_QUANTITIES, type Quantities, zeroQuantities } from "./metering.js";
import { costOf, loadPlan, monthStart } from "./plans.js";

const quantitySums = {
  requests: sql<number>`coalesce(sum(${usageHourly.requests}), 0)::float8`,
  errors: sql<number>`coalesce(sum(${usageHourly.errors}), 0)::float8`,
  replicaSeconds: sql<number>`coalesce(sum(${usageHourly.replicaSeconds}), 0)::float8`,
  cpuSeconds: sql<number>`coalesce(sum(${usageHourly.cpuSeconds}), 0)::float8`,
  gpuSeconds: sql<number>`coalesce(sum(${usageHourly.gpuSeconds}), 0)::float8`,
  memoryGibSeconds: sql<number>`coalesce(sum(${usageHourly.memoryGibSeconds}), 0)::float8`,
  buildSeconds: sql<number>`coalesce(sum(${usageHourly.buildSeconds}), 0)::float8`,
  egressBytes: sql<number>`coalesce(sum(${usageHourly.egressBytes}), 0)::float8`,
};

/** Usage per UTC day and deployment (null: org-level, e.g. builds) of one organisation, or of all when `orgId` is null. */
export async function usageByDay(db: Database, q: { orgId: string | null; from: Date; to: Date }) {
  const day = sql<string>`to_char(${usageHourly.hour} at time zone 'UTC', 'YYYY-MM-DD')`;
  return db
    .select({
      day,
      orgId: usageHourly.orgId,
      deploymentId: usageHourly.deploymentId,
      deploymentName: deployments.name,
      ...quantitySums,
    })
    .from(usageHourly)
    .leftJoin(deployments, eq(deployments.id, usageHourly.deploymentId))
    .where(
      and(
        q.orgId ? eq(usageHourly.orgId, q.orgId) : undefined,
        gte(usageHourly.hour, q.from),
        lt(usageHourly.hour, q.to),
      ),
    )
    .groupBy(day, usageHourly.orgId, usageHourly.deploymentId, deployments.name)
    .orderBy(day, usageHourly.orgId, deployments.name);
}

/**
 * The running cost of the current calendar month (UTC) under the organisation's plan, per
 * deployment and in total: what the console's billing page shows next to the invoices.
 */
export async function currentPeriodCost(db: Database, orgId: string, now: Date = new Date()) {
  const [org] = await db
    .select({ plan: organisations.plan })
    .from(organisations)
    .where(eq(organisations.id, orgId));
  const plan = await loadPlan(db, org?.plan ?? "free");
  const from = monthStart(now);
  const rows = await db
    .select({ deploymentId: usageHourly.deploymentId, deploymentName: deployments.name, ...quantitySums })
    .from(usageHourly)
    .leftJoin(deployments, eq(deployments.id, usageHourly.deploymentId))
    .where(and(eq(usageHourly.orgId, orgId), gte(usageHourly.hour, from)))
    .groupBy(usageHourly.deploymentId, deployments.name);
  const totals: Quantities = zeroQuantities();
  const byDeployment = rows.map((r) => {
    const quantities = Object.fromEntries(METERED_QUANTITIES.map((k) => [k, Number(r[k])])) as Quantities;
    for (const k of METERED_QUANTITIES) totals[k] += quantities[k];
    return {
      deploymentId: r.deploymentId,
      name: r.deploymentName,
      quantities,
      errors: Number(r.errors),
      cost: costOf(plan.prices, quantities).total,
    };
  });
  byDeployment.sort((x, y) => y.cost - x.cost);
  const cost = costOf(plan.prices, totals);
  return {
    plan: { id: plan.id, name: plan.name, limits: plan.limits, prices: plan.prices },
    periodStart: from,
    periodEnd: new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)),
    currency: "usd" as const,
    totals,
    totalCost: cost.total,
    costByQuantity: cost.byQuantity,
    byDeployment,
  };
}

/**
 * The platform-wide view for operators: request and error rates per organisation over the last
 * `windowMs`, replicas by state, the busiest deployments, failed jobs and environment builds.
 */
export async function platformOverview(db: Database, now: Date = new Date(), windowMs = 24 * 3_600_000) {
  const since = new Date(now.getTime() - windowMs);
  const orgUsage = await db
    .select({
      orgId: usageHourly.orgId,
      slug: organisations.slug,
      plan: organisations.plan,
      requests: quantitySums.requests,
      errors: quantitySums.errors,
      cpuSeconds: quantitySums.cpuSeconds,
      gpuSeconds: quantitySums.gpuSeconds,
    })
    .from(usageHourly)
    .innerJoin(organisations, eq(organisations.id, usageHourly.orgId))
    .where(gte(usageHourly.hour, since))
    .groupBy(usageHourly.orgId, organisations.slug, organisations.plan)
    .orderBy(desc(quantitySums.requests))
    .limit(200);
  const windowS = windowMs / 1000;
  const replicasByState = await db
    .select({ state: replicas.state, count: count() })
    .from(replicas)
    .where(isNull(replicas.stoppedAt))
    .groupBy(replicas.state);
  const topDeployments = await db
    .select({
      deploymentId: usageHourly.deploymentId,
      orgSlug: organisations.slug,
      application: applications.name,
      name: deployments.name,
      requests: quantitySums.requests,
      errors: quantitySums.errors,
    })
    .from(usageHourly)
    .innerJoin(deployments, eq(deployments.id, usageHourly.deploymentId))
    .innerJoin(applications, eq(applications.id, deployments.applicationId))
    .innerJoin(organisations, eq(organisations.id, usageHourly.orgId))
    .where(gte(usageHourly.hour, since))
    .groupBy(usageHourly.deploymentId, organisations.slug, applications.name, deployments.name)
    .orderBy(desc(quantitySums.requests))
    .limit(20);
  const failedJobs = await db
    .select({
      id: jobs.id,
      orgId: jobs.orgId,
      kind: jobs.kind,
      error: jobs.error,
      attempts: jobs.attempts,
      finishedAt: jobs.finishedAt,
    })
    .from(jobs)
    .where(eq(jobs.state, "failed"))
    .orderBy(desc(jobs.finishedAt))
    .limit(50);
  const failedBuilds = await db
    .select({
      hash: environments.hash,
      runtime: environments.runtime,
      reason: environments.failureReason,
      finishedAt: environments.finishedAt,
    })
    .from(environments)
    .where(eq(environments.state, "failed"))
    .orderBy(desc(environments.finishedAt))
    .limit(50);
  const incidents = await db
    .select({
      id: uptimeIncidents.id,
      orgSlug: organisations.slug,
      deploymentId: uptimeIncidents.deploymentId,
      deployment: deployments.name,
      openedAt: uptimeIncidents.openedAt,
      reason: uptimeIncidents.reason,
      failedProbes: uptimeIncidents.failedProbes,
    })
    .from(uptimeIncidents)
    .innerJoin(organisations, eq(organisations.id, uptimeIncidents.orgId))
    .innerJoin(deployments, eq(deployments.id, uptimeIncidents.deploymentId))
    .where(isNull(uptimeIncidents.closedAt))
    .orderBy(desc(uptimeIncidents.openedAt))
    .limit(100);
  return {
    since,
    openIncidents: incidents,
    organisations: orgUsage.map((o) => ({
      ...o,
      requestsPerSecond: o.requests / windowS,
      errorRate: o.requests > 0 ? o.errors / o.requests : 0,
    })),
    replicasByState: Object.fromEntries(replicasByState.map((r) => [r.state, r.count])) as Record<
      string,
      number
    >,
    topDeployments: topDeployments.map((d) => ({
      ...d,
      errorRate: d.requests > 0 ? d.errors / d.requests : 0,
    })),
    failedJobs,
    failedBuilds,
  };
}
