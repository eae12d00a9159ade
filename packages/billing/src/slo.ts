import { type Database, deployments, uptimeIncidents, uptimeProbes, usageHourly } from "@tessera/db";
import { and, desc, eq, gte, isNull, lt, or, sql } from "drizzle-orm";
import { HOUR_MS, histogramPercentile, hourOf, mergeHistograms } from "./metering.js";

export const SLO_WINDOWS = { "24h": 24 * HOUR_MS, "30d": 30 * 24 * HOUR_MS } as const;
export type SloWindow = keyof typeof SLO_WINDOWS;
export const DEFAULT_AVAILABILITY_TARGET = 0.999;

export interface UptimeBar {
  start: Date;
  probes: number;
  okProbes: number;
  requests: number;
  errors: number;
  /** Good events / all events in the bar, null when nothing was measured. */
  availability: number | null;
}

export interface DeploymentSlo {
  deploymentId: string;
  window: SloWindow;
  from: Date;
  to: Date;
  probes: { total: number; ok: number; uptime: number | null };
  requests: { total: number; errors: number; successRate: number | null };
  /**
   * Event-based availability: (successful probes + requests answered below 500) / (probes +
   * requests). Probes cover idle periods, real traffic weighs in when there is some.
   */
  availability: number | null;
  target: number;
  /** Share of the error budget (1 - target) still unspent; negative once the SLO is breached. */
  errorBudgetRemaining: number | null;
  latencyMs: { p50: number | null; p95: number | null; p99: number | null };
  /** Per hour over 24 h, per day over 30 d. */
  bars: UptimeBar[];
  incidents: { id: string; openedAt: Date; closedAt: Date | null; reason: string; failedProbes: number }[];
}

const ratio = (good: number, total: number) => (total > 0 ? good / total : null);

/** SLO figures of one deployment over a window ending at `now`, from probe history and the hourly rollup. */
export async function deploymentSlo(
  db: Database,
  deploymentId: string,
  window: SloWindow,
  now: Date = new Date(),
  target = DEFAULT_AVAILABILITY_TARGET,
): Promise<DeploymentSlo> {
  const barMs = window === "24h" ? HOUR_MS : 24 * HOUR_MS;
  // Bars aligned to whole hours/days (UTC); the window is the bars it spans.
  const end = new Date(Math.floor(now.getTime() / barMs) * barMs + barMs);
  const from = new Date(end.getTime() - SLO_WINDOWS[window]);
  const bars: UptimeBar[] = [];
  for (let t = from.getTime(); t < end.getTime(); t += barMs)
    bars.push({ start: new Date(t), probes: 0, okProbes: 0, requests: 0, errors: 0, availability: null });
  const barOf = (at: Date) => bars[Math.floor((at.getTime() - from.getTime()) / barMs)];

  // Inlined constant: a bound parameter would differ between select and group by for Postgres.
  const barS = sql.raw(String(barMs / 1000));
  const bucket = sql`to_timestamp(floor(extract(epoch from ${uptimeProbes.at}) / ${barS}) * ${barS})`;
  const probeRows = await db
    .select({
      start: sql<Date>`${bucket}`.mapWith((v) => new Date(v)),
      total: sql<number>`count(*)::int`,
      ok: sql<number>`count(*) filter (where ${uptimeProbes.ok})::int`,
    })
    .from(uptimeProbes)
    .where(
      and(eq(uptimeProbes.deploymentId, deploymentId), gte(uptimeProbes.at, from), lt(uptimeProbes.at, end)),
    )
    .groupBy(bucket);
  for (const p of probeRows) {
    const bar = barOf(p.start);
    if (bar) Object.assign(bar, { probes: p.total, okProbes: p.ok });
  }

  const hours = await db
    .select({
      hour: usageHourly.hour,
      requests: usageHourly.requests,
      errors: usageHourly.errors,
      histogram: usageHourly.latencyHistogram,
    })
    .from(usageHourly)
    .where(
      and(
        eq(usageHourly.deploymentId, deploymentId),
        gte(usageHourly.hour, hourOf(from)),
        lt(usageHourly.hour, end),
      ),
    );
  for (const h of hours) {
    const bar = barOf(h.hour);
    if (!bar) continue;
    bar.requests += h.requests;
    bar.errors += h.errors;
  }
  for (const b of bars) b.availability = ratio(b.okProbes + b.requests - b.errors, b.probes + b.requests);

  const sum = (k: keyof Pick<UptimeBar, "probes" | "okProbes" | "requests" | "errors">) =>
    bars.reduce((a, b) => a + b[k], 0);
  const [probes, okProbes, requests, errors] = [
    sum("probes"),
    sum("okProbes"),
    sum("requests"),
    sum("errors"),
  ];
  const availability = ratio(okProbes + requests - errors, probes + requests);
  const histogram = mergeHistograms(hours.map((h) => h.histogram));

  const incidents = await db
    .select({
      id: uptimeIncidents.id,
      openedAt: uptimeIncidents.openedAt,
      closedAt: uptimeIncidents.closedAt,
      reason: uptimeIncidents.reason,
      failedProbes: uptimeIncidents.failedProbes,
    })
    .from(uptimeIncidents)
    .where(
      and(
        eq(uptimeIncidents.deploymentId, deploymentId),
        lt(uptimeIncidents.openedAt, end),
        or(isNull(uptimeIncidents.closedAt), gte(uptimeIncidents.closedAt, from)),
      ),
    )
    .orderBy(desc(uptimeIncidents.openedAt))
    .limit(100);

  return {
    deploymentId,
    window,
    from,
    to: end,
    probes: { total: probes, ok: okProbes, uptime: ratio(okProbes, probes) },
    requests: { total: requests, errors, successRate: ratio(requests - errors, requests) },
    availability,
    target,
    errorBudgetRemaining: availability === null ? null : 1 - (1 - availability) / (1 - target),
    latencyMs: {
      p50: histogramPercentile(histogram, 0.5),
      p95: histogramPercentile(histogram, 0.95),
      p99: histogramPercentile(histogram, 0.99),
    },
    bars,
    incidents,
  };
}

/** Availability and latency of every live deployment of an organisation (the SLO overview). */
export async function orgSloSummary(db: Database, orgId: string, window: SloWindow, now: Date = new Date()) {
  const ds = await db
    .select({ id: deployments.id, name: deployments.name, state: deployments.state })
    .from(deployments)
    .where(and(eq(deployments.orgId, orgId), isNull(deployments.deletedAt)));
  const out = [];
  for (const d of ds) {
    const s = await deploymentSlo(db, d.id, window, now);
    out.push({
      deploymentId: d.id,
      name: d.name,
      state: d.state,
      availability: s.availability,
      errorBudgetRemaining: s.errorBudgetRemaining,
      latencyMs: s.latencyMs,
      requests: s.requests.total,
      openIncidents: s.incidents.filter((i) => !i.closedAt).length,
    });
  }
  return out;
}
