import { type Database, uptimeProbes, usageEvents } from "@tessera/db";
import { inArray, lt } from "drizzle-orm";
import { HOUR_MS, USAGE_EVENT_RETENTION_MS } from "./metering.js";

/** Probes are kept for the longest SLO window (30 d) plus margin. */
export const PROBE_RETENTION_MS = 32 * 24 * HOUR_MS;
const BATCH = 5_000;

type Pruned = typeof usageEvents | typeof uptimeProbes;

/** Delete rows with `at` before `before`, a batch at a time (no long lock on a hot table). */
async function deleteBefore(db: Database, table: Pruned, before: Date): Promise<number> {
  let total = 0;
  for (;;) {
    const old = db.select({ id: table.id }).from(table).where(lt(table.at, before)).limit(BATCH);
    const gone = await db.delete(table).where(inArray(table.id, old)).returning({ id: table.id });
    total += gone.length;
    if (gone.length < BATCH) return total;
  }
}

/**
 * Delete raw history past its retention: usage events older than `USAGE_EVENT_RETENTION_MS`
 * (their hours stay in usage_hourly, frozen) and probes older than `PROBE_RETENTION_MS`.
 */
export async function pruneHistory(
  db: Database,
  now: Date = new Date(),
): Promise<{ usageEvents: number; probes: number }> {
  return {
    usageEvents: await deleteBefore(db, usageEvents, new Date(now.getTime() - USAGE_EVENT_RETENTION_MS)),
    probes: await deleteBefore(db, uptimeProbes, new Date(now.getTime() - PROBE_RETENTION_MS)),
  };
}
