import type { Database } from "@tessera/db";
import { type SQL, sql } from "drizzle-orm";
import { DB_CALL_TIMEOUT_MS, withTimeout } from "./deadline.js";
import type { Log } from "./log.js";

export interface RequestUsage {
  /** Unique per request: the event's idempotency key. */
  id: string;
  orgId: string;
  deploymentId: string | null;
  revisionId: string | null;
  status: number;
  latencyMs: number;
  bytesIn: number;
  bytesOut: number;
  at: Date;
  meta?: Record<string, unknown>;
}

export interface UsageRecorderOptions {
  flushIntervalMs?: number;
  /** Flush early once this many events are buffered. */
  batchSize?: number;
  /** Buffer bound while the database is unreachable; past it the oldest events are dropped (and counted). */
  maxBuffered?: number;
  /** Deadline of one batch write (default DB_CALL_TIMEOUT_MS). */
  dbTimeoutMs?: number;
  log: Log;
}

/**
 * One statement per batch with one array parameter per column: the query builder's per-value
 * work (thousands of rows a second under load) would cost the gateway more than the requests.
 */
function insertStatement(batch: readonly RequestUsage[]): SQL {
  const column = <T>(get: (e: RequestUsage) => T) => sql.param(batch.map(get));
  return sql`insert into usage_events
      (id, org_id, deployment_id, revision_id, kind, quantity, status, latency_ms, bytes_in, bytes_out, at, meta)
    select id, org_id, deployment_id, revision_id, 'request', 1, status, latency_ms, bytes_in, bytes_out, at, meta
    from unnest(
      ${column((e) => e.id)}::text[], ${column((e) => e.orgId)}::uuid[], ${column((e) => e.deploymentId)}::uuid[],
      ${column((e) => e.revisionId)}::uuid[], ${column((e) => e.status)}::int[], ${column((e) => e.latencyMs)}::float8[],
      ${column((e) => e.bytesIn)}::bigint[], ${column((e) => e.bytesOut)}::bigint[],
      ${column((e) => e.at.toISOString())}::timestamptz[],
      ${column((e) => (e.meta ? JSON.stringify(e.meta) : null))}::jsonb[]
    ) as u(id, org_id, deployment_id, revision_id, status, latency_ms, bytes_in, bytes_out, at, meta)
    on conflict (id) do nothing`;
}

/**
 * One usage event per request, written in batches off the request path: requests only push to
 * a buffer. A failed write keeps the batch for the next attempt (ids make a replay harmless).
 */
export class UsageRecorder {
  private buffer: RequestUsage[] = [];
  private flushing: Promise<boolean> | null = null;
  private readonly timer: NodeJS.Timeout;
  private readonly batchSize: number;
  private readonly maxBuffered: number;
  dropped = 0;
  written = 0;
  lastError: string | null = null;

  constructor(
    private readonly db: Database,
    private readonly options: UsageRecorderOptions,
  ) {
    this.batchSize = options.batchSize ?? 500;
    this.maxBuffered = options.maxBuffered ?? 100_000;
    this.timer = setInterval(() => void this.flush(), options.flushIntervalMs ?? 1_000);
    this.timer.unref();
  }

  get buffered(): number {
    return this.buffer.length;
  }

  record(event: RequestUsage): void {
    this.buffer.push(event);
    if (this.buffer.length > this.maxBuffered) {
      const excess = this.buffer.length - this.maxBuffered;
      this.buffer.splice(0, excess);
      this.dropped += excess;
    }
    if (this.buffer.length >= this.batchSize && !this.flushing) void this.flush();
  }

  /** Writes everything buffered now; resolves true when the buffer was emptied. */
  flush(): Promise<boolean> {
    // A write in progress keeps going until the buffer is empty, events recorded meanwhile included.
    this.flushing ??= this.writeAll().finally(() => {
      this.flushing = null;
    });
    return this.flushing;
  }

  private async writeAll(): Promise<boolean> {
    while (this.buffer.length > 0) {
      const batch = this.buffer.slice(0, this.batchSize);
      const droppedBefore = this.dropped;
      try {
        await withTimeout(
          this.db.execute(insertStatement(batch)),
          this.options.dbTimeoutMs ?? DB_CALL_TIMEOUT_MS,
          "writing usage events",
        );
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        if (this.lastError !== message)
          this.options.log("warn", "could not write usage events; keeping them buffered", {
            err: message,
            buffered: this.buffer.length,
          });
        this.lastError = message;
        return false;
      }
      // Events recorded meanwhile were appended; drops meanwhile removed the front, i.e. part of this batch.
      this.buffer.splice(0, Math.max(0, batch.length - (this.dropped - droppedBefore)));
      this.written += batch.length;
      this.lastError = null;
    }
    return true;
  }

  /** Stops the timer and writes what is left, retrying a few times (clean shutdown). */
  async close(attempts = 5): Promise<void> {
    clearInterval(this.timer);
    for (let i = 0; i < attempts; i++) {
      if (await this.flush()) return;
      await new Promise((r) => setTimeout(r, 200 * (i + 1)));
    }
    if (this.buffer.length > 0)
      this.options.log("error", "usage events lost at shutdown: the database stayed unreachable", {
        count: this.buffer.length,
      });
  }
}
