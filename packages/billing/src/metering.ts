import { TesseraError, type UsageEvent, usageEventSchema } from "@tessera/core";
import { billingCursors, type Database, usageEvents, usageHourly } from "@tessera/db";
import { sql } from "drizzle-orm";

export const HOUR_MS = 3_600_000;

/**
 * Upper bounds (exclusive) of the latency histogram buckets kept per hour; the last bucket holds
 * everything at or above the last bound. Percentiles over any window merge the hourly histograms,
 * so they are exact to the bucket: reported as the bucket's upper bound.
 */
export const LATENCY_BUCKETS_MS = [
  5, 10, 25, 50, 75, 100, 150, 250, 400, 600, 1000, 1500, 2500, 4000, 6000, 10_000, 15_000, 30_000, 60_000,
] as const;

/** Quantities billed per hour: the numeric columns of `usage_hourly` a plan puts a price on. */
export const METERED_QUANTITIES = [
  "requests",
  "cpuSeconds",
  "gpuSeconds",
  "memoryGibSeconds",
  "buildSeconds",
  "egressBytes",
] as const;
export type MeteredQuantity = (typeof METERED_QUANTITIES)[number];
export type Quantities = Record<MeteredQuantity, number>;

export const zeroQuantities = (): Quantities => ({
  requests: 0,
  cpuSeconds: 0,
  gpuSeconds: 0,
  memoryGibSeconds: 0,
  buildSeconds: 0,
  egressBytes: 0,
});

export const hourOf = (t: Date): Date => new Date(Math.floor(t.getTime() / HOUR_MS) * HOUR_MS);

/**
 * Append usage events. Events are validated first (a bad one rejects the batch with
 * VALIDATION_FAILED, naming it); an id already recorded is skipped, so replaying a buffer
 * after an outage counts every event exactly once. Returns how many were new.
 */
export async function recordUsageEvents(
  db: Database,
  events: readonly UsageEvent[],
): Promise<{ inserted: number }> {
  if (events.length === 0) return { inserted: 0 };
  const rows = events.map((e, i) => {
    const parsed = usageEventSchema.safeParse(e);
    if (!parsed.success)
      throw new TesseraError(
        "VALIDATION_FAILED",
        `usage event ${i} is invalid: ${parsed.error.issues[0]?.message}`,
        {
          index: i,
        },
      );
    return parsed.data;
  });
  let inserted = 0;
  // Bounded batches keep the statement under Postgres' parameter limit.
  for (let i = 0; i < rows.length; i += 1000) {
    const res = await db
      .insert(usageEvents)
      .values(rows.slice(i, i + 1000))
      .onConflictDoNothing({ target: usageEvents.id })
      .returning({ id: usageEvents.id });
    inserted += res.length;
  }
  return { inserted };
}

interface HourRow {
  orgId: string;
  deploymentId: string | null;
  requests: number;
  errors: number;
  latencySumMs: number;
  latencyHistogram: number[];
  replicaSeconds: number;
  cpuSeconds: number;
  gpuSeconds: number;
  memoryGibSeconds: number;
  buildSeconds: number;
  egressBytes: number;
}

const bucketBounds = sql.raw(`array[${LATENCY_BUCKETS_MS.join(",")}]::double precision[]`);

/**
 * Recompute `usage_hourly` for one hour from scratch: request events, builds and egress from
 * usage_events; replica-seconds per resource class from the replicas' start/stop records (a
 * replica still running counts up to `now`). Delete-and-insert under one lock, so the result
 * does not depend on how often or how concurrently an hour is recomputed.
 */
export async function rollupHour(db: Database, hour: Date, now: Date = new Date()): Promise<number> {
  const start = hourOf(hour);
  const end = new Date(start.getTime() + HOUR_MS);
  const rows = new Map<string, HourRow>();
  const row = (orgId: string, deploymentId: string | null): HourRow => {
    const key = `${orgId}/${deploymentId ?? ""}`;
    let r = rows.get(key);
    if (!r) {
      r = {
        ...zeroQuantities(),
        orgId,
        deploymentId,
        errors: 0,
        latencySumMs: 0,
        latencyHistogram: new Array(LATENCY_BUCKETS_MS.length + 1).fill(0),
        replicaSeconds: 0,
      };
      rows.set(key, r);
    }
    return r;
  };

  return db.transaction(async (tx) => {
    // One rollup of a given hour at a time: two workers recomputing it must not interleave.
    await tx.execute(
      sql`select pg_advisory_xact_lock(hashtext('usage_hourly'), ${start.getTime() / HOUR_MS}::int)`,
    );

    const events = await tx.execute<{
      org_id: string;
      deployment_id: string | null;
      requests: string;
      errors: string;
      latency_sum: number;
      build_seconds: number;
      egress: string;
    }>(sql`
      select org_id, deployment_id,
        count(*) filter (where kind = 'request') as requests,
        count(*) filter (where kind = 'request' and status >= 500) as errors,
        coalesce(sum(latency_ms) filter (where kind = 'request'), 0)::double precision as latency_sum,
        coalesce(sum(quantity) filter (where kind = 'build_seconds'), 0)::double precision as build_seconds,
        (coalesce(sum(bytes_out) filter (where kind = 'request'), 0)
          + coalesce(sum(quantity) filter (where kind = 'egress_bytes'), 0))::bigint as egress
      from usage_events
      where at >= ${start} and at < ${end}
      group by org_id, deployment_id`);
    for (const e of events.rows) {
      const r = row(e.org_id, e.deployment_id);
      r.requests = Number(e.requests);
      r.errors = Number(e.errors);
      r.latencySumMs = Number(e.latency_sum);
      r.buildSeconds = Number(e.build_seconds);
      r.egressBytes = Number(e.egress);
    }

    const buckets = await tx.execute<{
      org_id: string;
      deployment_id: string | null;
      bucket: number;
      n: string;
    }>(sql`
      select org_id, deployment_id, width_bucket(latency_ms, ${bucketBounds}) as bucket, count(*) as n
      from usage_events
      where at >= ${start} and at < ${end} and kind = 'request' and latency_ms is not null
      group by 1, 2, 3`);
    for (const b of buckets.rows)
      row(b.org_id, b.deployment_id).latencyHistogram[Number(b.bucket)]! += Number(b.n);

    // Terminal replicas without a stop time are counted as stopped at their start: never overcharge.
    const replicaRows = await tx.execute<{
      org_id: string;
      deployment_id: string;
      seconds: number;
      cpu: number;
      gpu: number;
      mem: number;
    }>(sql`
      select org_id, deployment_id,
        sum(secs)::double precision as seconds,
        sum(secs * coalesce((resources->>'cpus')::double precision, 0))::double precision as cpu,
        sum(secs * coalesce((resources->>'gpus')::double precision, 0))::double precision as gpu,
        sum(secs * coalesce((resources->>'memoryMb')::double precision, 0) / 1024)::double precision as mem
      from (
        select org_id, deployment_id, resources,
          extract(epoch from
            least(
              case when state in ('stopped', 'failed') then coalesce(stopped_at, created_at)
                   else coalesce(stopped_at, ${now}::timestamptz) end,
              ${now}::timestamptz,
              ${end}::timestamptz)
            - greatest(created_at, ${start}::timestamptz)) as secs
        from replicas
        where created_at < ${end} and (stopped_at is null or stopped_at > ${start})
      ) r
      where secs > 0
      group by org_id, deployment_id`);
    for (const rep of replicaRows.rows) {
      const r = row(rep.org_id, rep.deployment_id);
      r.replicaSeconds = Number(rep.seconds);
      r.cpuSeconds = Number(rep.cpu);
      r.gpuSeconds = Number(rep.gpu);
      r.memoryGibSeconds = Number(rep.mem);
    }

    await tx.delete(usageHourly).where(sql`${usageHourly.hour} = ${start}`);
    const values = [...rows.values()].map((r) => ({ ...r, hour: start, computedAt: now }));
    for (let i = 0; i < values.length; i += 500)
      await tx.insert(usageHourly).values(values.slice(i, i + 500));
    return values.length;
  });
}

/** Event writes can commit a little after their `recorded_at`: rescan that far back every run. */
export const ROLLUP_LAG_MS = 5 * 60_000;
/** Raw usage events are kept this long (`pruneHistory`); their hourly rollups forever. */
export const USAGE_EVENT_RETENTION_MS = 62 * 24 * HOUR_MS;
const ROLLUP_CURSOR = "usage_rollup";

/**
 * The hourly rollup job: recomputes every hour since the previous run (minus a lag) plus every
 * hour that received late events (recorded since then, whatever their `at`), then moves the
 * cursor. Safe to run concurrently, twice, or after a crash: recomputing an hour is idempotent.
 */
export async function rollupUsage(db: Database, now: Date = new Date()): Promise<{ hours: Date[] }> {
  const [cursor] = await db
    .select()
    .from(billingCursors)
    .where(sql`${billingCursors.name} = ${ROLLUP_CURSOR}`);
  let since: Date;
  if (cursor) since = new Date(cursor.at.getTime() - ROLLUP_LAG_MS);
  else {
    // First run: everything there is.
    const first = await db.execute<{ t: Date | null }>(sql`
      select least((select min(at) from usage_events), (select min(created_at) from replicas)) as t`);
    since = first.rows[0]?.t ? new Date(first.rows[0].t) : now;
  }
  const hours = new Set<number>();
  for (let h = hourOf(since).getTime(); h <= hourOf(now).getTime(); h += HOUR_MS) hours.add(h);
  const late = await db.execute<{ hour: Date }>(sql`
    select distinct date_trunc('hour', at) as hour from usage_events where recorded_at >= ${since}`);
  for (const l of late.rows) hours.add(new Date(l.hour).getTime());

  // Hours past the event retention are frozen: their events are (partly) pruned, recomputing would shrink them.
  const frozenBefore = now.getTime() - USAGE_EVENT_RETENTION_MS;
  const sorted = [...hours]
    .filter((h) => h >= frozenBefore)
    .sort((x, y) => x - y)
    .map((h) => new Date(h));
  for (const h of sorted) await rollupHour(db, h, now);
  await db
    .insert(billingCursors)
    .values({ name: ROLLUP_CURSOR, at: now })
    .onConflictDoUpdate({ target: billingCursors.name, set: { at: now } });
  return { hours: sorted };
}

/** Merge histograms (same bucket layout) and read a percentile as its bucket's upper bound. */
export function mergeHistograms(histograms: readonly (readonly number[])[]): number[] {
  const out = new Array(LATENCY_BUCKETS_MS.length + 1).fill(0);
  for (const h of histograms) for (let i = 0; i < out.length; i++) out[i] += h[i] ?? 0;
  return out;
}

/**
 * The `q`-quantile (0..1) of a merged histogram, as the upper bound of the bucket it falls in;
 * null without samples. Values past the last bound report that bound (a floor, said in the docs).
 */
export function histogramPercentile(histogram: readonly number[], q: number): number | null {
  const total = histogram.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (let i = 0; i < histogram.length; i++) {
    seen += histogram[i] ?? 0;
    if (seen >= rank) return LATENCY_BUCKETS_MS[Math.min(i, LATENCY_BUCKETS_MS.length - 1)]!;
  }
  return LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.length - 1]!;
}
