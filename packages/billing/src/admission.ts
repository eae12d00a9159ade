import type { Database } from "@tessera/db";
import { type Admission, admitRequest, loadOrgBillingState, type OrgBillingState } from "./plans.js";

export interface OrgAdmissionOptions {
  /** How old a cached billing state may get before it is reloaded in the background. */
  refreshMs?: number;
  log?: (level: "warn", msg: string, fields: Record<string, unknown>) => void;
}

interface Entry {
  state: OrgBillingState | null;
  loadedAt: number;
  loading: Promise<void> | null;
  /** Admitted since the state was loaded: the rollup has not counted them yet. */
  sinceLoad: number;
  minute: number;
  inMinute: number;
}

/**
 * Gateway-side admission: `admitRequest` over a cached billing state per organisation and this
 * gateway's own per-minute counter. It never waits for Postgres on the request path: an org whose
 * state is not loaded yet (or cannot be, during an outage) is admitted while the load runs, so the
 * data plane keeps serving when the control plane is down. The per-minute limit is counted per
 * gateway process.
 */
export class OrgAdmission {
  private readonly entries = new Map<string, Entry>();
  private readonly refreshMs: number;

  constructor(
    private readonly db: Database,
    private readonly options: OrgAdmissionOptions = {},
  ) {
    this.refreshMs = options.refreshMs ?? 30_000;
  }

  /** Decide for one request of `orgId` now; an admitted request is counted. */
  admit(orgId: string, now: Date = new Date()): Admission {
    let e = this.entries.get(orgId);
    if (!e) {
      e = { state: null, loadedAt: 0, loading: null, sinceLoad: 0, minute: 0, inMinute: 0 };
      this.entries.set(orgId, e);
    }
    if (!e.loading && now.getTime() - e.loadedAt >= this.refreshMs) {
      // Stamped at the start: a failed load is retried after the interval, not on every request.
      e.loadedAt = now.getTime();
      e.loading = this.load(orgId, e);
    }
    const minute = Math.floor(now.getTime() / 60_000);
    if (minute !== e.minute) {
      e.minute = minute;
      e.inMinute = 0;
    }
    const decision = e.state
      ? admitRequest(e.state, { requestsThisMinute: e.inMinute, requestsSinceRollup: e.sinceLoad }, now)
      : ({ ok: true } as const);
    if (decision.ok) {
      e.inMinute++;
      e.sinceLoad++;
    }
    return decision;
  }

  /** Resolves once every load in flight has finished (tests, graceful start). */
  async settled(): Promise<void> {
    await Promise.all([...this.entries.values()].map((e) => e.loading));
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
