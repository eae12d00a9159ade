import { redisKeys } from "@tessera/core";
import type { Database } from "@tessera/db";
import type { Redis } from "ioredis";
import { type Admission, admitRequest, loadOrgBillingState, type OrgBillingState } from "./plans.js";

/** A minute's key outlives the minute so late flushes still land; then it cleans itself up. */
const MINUTE_KEY_TTL_MS = 2 * 60_000;

/** Where gateways share their per-minute counts (a gateway passes its own client and key prefix). */
export interface SharedCounting {
  /** Should fail fast while Redis is down (`enableOfflineQueue: false`): a flush is only retried. */
  redis: Redis;
  /** Redis key prefix (`redisKeys(prefix)`), the same for every gateway of one platform. */
  prefix: string;
  /** How often unflushed counts go to Redis and the totals come back (default 250 ms). */
  flushMs?: number;
}

export interface OrgAdmissionOptions {
  /** How old a cached billing state may get before it is reloaded in the background. */
  refreshMs?: number;
  /** Count the per-minute rate across every gateway through Redis; absent: per process. */
  shared?: SharedCounting;
  log?: (level: "warn" | "info", msg: string, fields: Record<string, unknown>) => void;
}

interface Entry {
  state: OrgBillingState | null;
  loadedAt: number;
  loading: Promise<void> | null;
  /** Admitted since the state was loaded: the rollup has not counted them yet. */
  sinceLoad: number;
  minute: number;
  /** Admitted by this process in `minute`. */
  inMinute: number;
  /** The part of `inMinute` already added to the shared count in Redis. */
  flushed: number;
  /** The shared count (every gateway, this one's flushed part included) as of the last flush. */
  shared: number;
}

const minuteOf = (now: Date) => Math.floor(now.getTime() / 60_000);

/**
 * The org's requests this minute as far as this process knows: the shared total read back at the
 * last flush (or this process's own flushed part, should the key have vanished, e.g. a Redis
 * restart) plus what this process admitted since.
 */
export function requestsThisMinute(counts: { inMinute: number; flushed: number; shared: number }): number {
  return Math.max(counts.shared, counts.flushed) + (counts.inMinute - counts.flushed);
}

/**
 * Gateway-side admission: `admitRequest` over a cached billing state per organisation and a
 * per-minute request count. It never waits for Postgres or Redis on the request path: an org whose
 * state is not loaded yet (or cannot be, during an outage) is admitted while the load runs, so the
 * data plane keeps serving when the control plane is down.
 *
 * With `shared`, the per-minute count covers every gateway: each process counts locally and, every
 * `flushMs`, adds its unflushed part to a per-org per-minute Redis key (INCRBY, one MULTI for all
 * orgs) and reads the totals back (`requestsThisMinute`). Together the gateways therefore stay
 * within the plan's rate up to one flush interval of lag: each may admit up to the limit minus the
 * last total it read, so together they can exceed it by at most what the others admitted since
 * that read (a burst spread over gateways within one interval). While Redis is unreachable each
 * process decides on its own count plus the last total it read (one warning per outage). Without
 * `shared` the rate is counted per process, so N gateways admit up to N times the plan's rate.
 *
 * The monthly quota's "admitted since the rollup" part stays per process: it is relative to each
 * process's own state load (the rollup's total at that moment), and a shared count would have to
 * be reset in step with the provisioner's rollup, which gateways do not observe. So the quota may
 * be overshot by what the other gateways admitted since their last load (at most `refreshMs` plus
 * the rollup's lag).
 */
export class OrgAdmission {
  private readonly entries = new Map<string, Entry>();
  private readonly refreshMs: number;
  private readonly keys: ReturnType<typeof redisKeys> | null;
  private readonly timer: NodeJS.Timeout | null = null;
  /** Flushes run one after another, so no increment is sent twice. */
  private flushChain: Promise<void> = Promise.resolve();
  private flushInFlight = false;
  private redisFailing = false;

  constructor(
    private readonly db: Database,
    private readonly options: OrgAdmissionOptions = {},
  ) {
    this.refreshMs = options.refreshMs ?? 30_000;
    this.keys = options.shared ? redisKeys(options.shared.prefix) : null;
    if (options.shared) {
      this.timer = setInterval(() => {
        if (this.flushInFlight) return;
        this.flushInFlight = true;
        void this.flush().finally(() => {
          this.flushInFlight = false;
        });
      }, options.shared.flushMs ?? 250);
      this.timer.unref();
    }
  }

  /** Decide for one request of `orgId` now; an admitted request is counted. */
  admit(orgId: string, now: Date = new Date()): Admission {
    let e = this.entries.get(orgId);
    if (!e) {
      e = {
        state: null,
        loadedAt: 0,
        loading: null,
        sinceLoad: 0,
        minute: 0,
        inMinute: 0,
        flushed: 0,
        shared: 0,
      };
      this.entries.set(orgId, e);
    }
    if (!e.loading && now.getTime() - e.loadedAt >= this.refreshMs) {
      // Stamped at the start: a failed load is retried after the interval, not on every request.
      e.loadedAt = now.getTime();
      e.loading = this.load(orgId, e);
    }
    const minute = minuteOf(now);
    if (minute !== e.minute) {
      // The old minute's unflushed increments are dropped: no decision depends on them any more.
      e.minute = minute;
      e.inMinute = 0;
      e.flushed = 0;
      e.shared = 0;
    }
    const decision = e.state
      ? admitRequest(
          e.state,
          { requestsThisMinute: requestsThisMinute(e), requestsSinceRollup: e.sinceLoad },
          now,
        )
      : ({ ok: true } as const);
    if (decision.ok) {
      e.inMinute++;
      e.sinceLoad++;
    }
    return decision;
  }

  /**
   * Add this process's unflushed counts to the shared ones in Redis and read the totals back, for
   * every org seen in the current minute (`now`'s). Runs after any flush in progress; never
   * rejects: while Redis is unreachable the counts stay unflushed and decisions stay local.
   */
  flush(now: Date = new Date()): Promise<void> {
    const run = this.flushChain.then(() => this.sendCounts(minuteOf(now)));
    this.flushChain = run;
    return run;
  }

  /** Resolves once every load in flight has finished (tests, graceful start). */
  async settled(): Promise<void> {
    await Promise.all([...this.entries.values()].map((e) => e.loading));
  }

  /** Stop flushing, after a last flush so other gateways count this one's final requests. */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.flush();
  }

  private async sendCounts(minute: number): Promise<void> {
    const { shared } = this.options;
    const keys = this.keys;
    if (!shared || !keys) return;
    // Orgs quiet this minute are left out: their next request starts from the local count.
    const sent = [...this.entries]
      .filter(([, e]) => e.minute === minute)
      .map(([orgId, e]) => ({
        e,
        key: keys.requestsInMinute(orgId, minute),
        delta: e.inMinute - e.flushed,
      }));
    if (sent.length === 0) return;
    try {
      const batch = shared.redis.multi();
      for (const { key, delta } of sent) {
        // INCRBY 0 still reads back what the other gateways admitted.
        batch.incrby(key, delta);
        batch.pexpire(key, MINUTE_KEY_TTL_MS);
      }
      const results = await batch.exec();
      if (!results) throw new Error("the MULTI was aborted");
      for (const [i, { e, delta }] of sent.entries()) {
        const [err, total] = results[i * 2]!;
        if (err) throw err;
        // A request that started a new minute meanwhile reset the entry: this total is stale.
        if (e.minute !== minute) continue;
        e.flushed += delta;
        e.shared = Number(total);
      }
      if (this.redisFailing) this.options.log?.("info", "sharing rate-limit counts through redis again", {});
      this.redisFailing = false;
    } catch (err) {
      // If the MULTI did apply before the connection broke, the retry counts those requests twice:
      // the shared count errs towards refusing, never towards exceeding the plan.
      if (!this.redisFailing)
        this.options.log?.("warn", "rate-limit counts not shared through redis; counting per gateway", {
          err: String(err),
        });
      this.redisFailing = true;
    }
  }

  private async load(orgId: string, e: Entry): Promise<void> {
    try {
      e.state = await loadOrgBillingState(this.db, orgId);
      e.sinceLoad = 0;
    } catch (err) {
      this.options.log?.("warn", "billing state not loaded; admitting on the last known state", {
        orgId,
        err: String(err),
      });
    } finally {
      e.loading = null;
    }
  }
}
