import { PROBE_ASLEEP_REASON, TesseraError } from "@tessera/core";
import { Pool } from "undici";
import type { DeploymentRoute, RoutingSnapshot } from "./routing-table.js";

/** How long a replica that refused a connection is passed over while others can take the request. */
const AVOID_AFTER_REFUSAL_MS = 2_000;
/** A held request re-announces the wake this often, in case the first notice was lost. */
const WAKE_REPEAT_MS = 2_000;
/** How often requests waiting for a deployment without usable replicas look for news. */
const STARVED_CHECK_MS = 1_000;

/** One replica as the router tracks it: its keep-alive pool and the requests it is serving. */
export class ReplicaSlot {
  inFlight = 0;
  /** Refused a connection recently: picked only when no other replica has room. */
  avoidUntil = 0;
  /** Answered DRAINING or MISROUTED: takes no new requests until the routing table drops it. */
  draining = false;
  retired = false;
  /** The revision this replica runs (a canary's requests go only to its replicas). */
  revisionId: string | null = null;
  readonly pool: Pool;

  constructor(
    readonly id: string,
    readonly address: string,
    readonly lane: DeploymentLane,
    connections: number,
  ) {
    // The runtimes keep idle connections for 65 s; closing ours first (4 s) means we never write
    // into a socket the replica is closing.
    this.pool = new Pool(address, { connections, pipelining: 1, keepAliveTimeout: 4_000 });
  }

  hasRoom(): boolean {
    return !this.draining && this.inFlight < this.lane.route.limits.maxOngoingRequests;
  }
}

interface Waiter {
  exclude: ReadonlySet<ReplicaSlot> | undefined;
  resolve(slot: ReplicaSlot): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
  /** Held because the deployment had no replica at all (scale to zero) rather than all busy. */
  cold: boolean;
}

/** The router's state for one deployment: its replicas, in-flight count and waiting requests. */
export class DeploymentLane {
  replicas: ReplicaSlot[] = [];
  inFlight = 0;
  readonly waiters: Waiter[] = [];
  lastWakeAt = 0;
  removed = false;
  /** Uptime probes queued or in flight: routed like requests, but no load to scale for. */
  probes = 0;
  /** Highest `ongoing` since the last load report. */
  private peak = 0;

  constructor(public route: DeploymentRoute) {}

  /** Queued plus in-flight requests, probes left out: what the autoscaler sizes the deployment by. */
  get ongoing(): number {
    return Math.max(0, this.inFlight + this.waiters.length - this.probes);
  }

  /** Called whenever a request is admitted or queued. */
  notePeak(): void {
    const now = this.ongoing;
    if (now > this.peak) this.peak = now;
  }

  /**
   * The load to report for the interval that just ended: its peak, not a snapshot, so requests
   * shorter than the report interval still count (else steady short traffic reads as idle and an
   * autoscaled deployment is scaled to zero under it). Starts the next interval.
   */
  takePeak(): number {
    const reported = Math.max(this.peak, this.ongoing);
    this.peak = this.ongoing;
    return reported;
  }
}

export interface RouterOptions {
  coldStartTimeoutMs: number;
  /** Called (at most every couple of seconds per deployment) while requests are held for a deployment with no replica. */
  onWake(deploymentId: string): void;
  /** Called every second while some deployment holds requests and has no usable replica. */
  onStarved?(): void;
  /** Called when a replica's address turned out to serve another revision: the routing table is stale. */
  onMisrouted?(): void;
}

export interface AcquireOptions {
  exclude?: ReadonlySet<ReplicaSlot>;
  /** Absolute time (ms) after which a request still queued gets TIMEOUT. */
  deadline: number;
  signal?: AbortSignal;
  /** false: a deployment without replicas is answered "asleep" at once instead of woken and held (uptime probes). */
  wake?: boolean;
}

/**
 * Picks a replica per request by power of two choices on in-flight requests, never above a
 * replica's `maxOngoingRequests`; requests beyond that wait in a bounded FIFO per deployment.
 */
export class Router {
  readonly lanes = new Map<string, DeploymentLane>();
  private readonly slots = new Map<string, ReplicaSlot>();

  /**
   * While requests wait for a deployment with no usable replica (asleep, or all draining):
   * re-announces wake-ups in case one was lost, and asks for the routing table to be reloaded, so
   * a replica that became ready is found even when its routing notice never arrives.
   */
  private readonly starvedTimer: NodeJS.Timeout;

  constructor(private readonly options: RouterOptions) {
    this.starvedTimer = setInterval(() => {
      const now = Date.now();
      let starved = false;
      for (const lane of this.lanes.values()) {
        if (lane.waiters.length === 0 || lane.replicas.some((r) => !r.draining)) continue;
        starved = true;
        if (lane.replicas.length === 0 && lane.waiters.some((w) => w.cold)) this.wake(lane, now);
      }
      if (starved) options.onStarved?.();
    }, STARVED_CHECK_MS);
    this.starvedTimer.unref();
  }

  lane(route: DeploymentRoute): DeploymentLane {
    let lane = this.lanes.get(route.id);
    if (!lane) {
      lane = new DeploymentLane(route);
      this.lanes.set(route.id, lane);
      this.syncReplicas(lane);
    }
    return lane;
  }

  /** Applies a new routing snapshot: new replicas join, gone ones retire once idle, waiters move on. */
  update(snapshot: RoutingSnapshot): void {
    for (const [id, lane] of this.lanes) {
      const route = snapshot.deployments.get(id);
      if (route) {
        lane.route = route;
        this.syncReplicas(lane);
        this.dispatch(lane);
      } else {
        lane.removed = true;
        lane.route = { ...lane.route, replicas: [] };
        this.syncReplicas(lane);
        this.failWaiters(lane, new TesseraError("NOT_FOUND", "the deployment was deleted"));
        if (lane.inFlight === 0) this.lanes.delete(id);
      }
    }
  }

  private syncReplicas(lane: DeploymentLane): void {
    const wanted = lane.route.replicas;
    const next: ReplicaSlot[] = [];
    for (const endpoint of wanted) {
      let slot = this.slots.get(endpoint.id);
      if (slot && slot.address !== endpoint.address) {
        this.retire(slot);
        slot = undefined;
      }
      if (!slot) {
        slot = new ReplicaSlot(endpoint.id, endpoint.address, lane, lane.route.limits.maxOngoingRequests + 2);
        this.slots.set(endpoint.id, slot);
      }
      slot.revisionId = endpoint.revisionId;
      next.push(slot);
    }
    for (const old of lane.replicas) if (!next.includes(old)) this.retire(old);
    lane.replicas = next;
  }

  private retire(slot: ReplicaSlot): void {
    slot.retired = true;
    if (this.slots.get(slot.id) === slot) this.slots.delete(slot.id);
    // close() lets requests in flight finish first.
    void slot.pool.close().catch(() => {});
  }

  /** A free replica right now, or undefined. */
  tryAcquire(lane: DeploymentLane, exclude?: ReadonlySet<ReplicaSlot>): ReplicaSlot | undefined {
    if (lane.waiters.length > 0) return undefined; // FIFO: earlier requests go first
    return this.take(lane, exclude);
  }

  private take(lane: DeploymentLane, exclude?: ReadonlySet<ReplicaSlot>): ReplicaSlot | undefined {
    const slot = pick(lane.replicas, exclude, Date.now());
    if (slot) {
      slot.inFlight++;
      lane.inFlight++;
      lane.notePeak();
    }
    return slot;
  }

  /** Waits for a replica: in the queue when all are busy, held when the deployment has none. */
  acquire(lane: DeploymentLane, options: AcquireOptions): Promise<ReplicaSlot> {
    const now = Date.now();
    const route = lane.route;
    if (options.signal?.aborted)
      return Promise.reject(new TesseraError("BAD_REQUEST", "the client went away"));
    if (lane.removed) return Promise.reject(new TesseraError("NOT_FOUND", "the deployment was deleted"));
    if (route.parked) return Promise.reject(parkedError(route));
    const cold = lane.replicas.length === 0;
    // Nothing was ever rolled out: no replica is coming, so holding the request would only delay the error.
    if (cold && route.liveRevisionId === null)
      return Promise.reject(
        new TesseraError("UNAVAILABLE", `deployment ${route.name} has no live revision yet`, {
          reason: "not_deployed",
        }),
      );
    if (cold && options.wake === false)
      return Promise.reject(
        new TesseraError("UNAVAILABLE", `deployment ${route.name} is scaled to zero`, {
          reason: PROBE_ASLEEP_REASON,
        }),
      );
    if (!cold && options.exclude && lane.replicas.every((r) => options.exclude!.has(r)))
      return Promise.reject(
        new TesseraError("UPSTREAM_ERROR", "no replica of the deployment could be reached"),
      );
    if (lane.waiters.length >= route.limits.maxQueuedRequests)
      return Promise.reject(
        new TesseraError(
          "OVERLOADED",
          `deployment ${route.name} is overloaded: ${lane.inFlight} requests in flight and ${lane.waiters.length} queued`,
        ),
      );
    if (cold) this.wake(lane, now);
    const deadline = cold ? now + this.options.coldStartTimeoutMs : options.deadline;
    return new Promise<ReplicaSlot>((resolve, reject) => {
      const waiter: Waiter = {
        exclude: options.exclude,
        cold,
        resolve,
        reject,
        timer: setTimeout(
          () => {
            this.removeWaiter(lane, waiter);
            reject(
              cold
                ? new TesseraError(
                    "TIMEOUT",
                    `deployment ${route.name} has no ready replica; none became ready within ${Math.round(this.options.coldStartTimeoutMs / 1000)} s`,
                  )
                : new TesseraError("TIMEOUT", `deployment ${route.name}: timed out waiting in the queue`),
            );
          },
          Math.max(0, deadline - now),
        ),
      };
      lane.waiters.push(waiter);
      lane.notePeak();
      options.signal?.addEventListener(
        "abort",
        () => {
          if (this.removeWaiter(lane, waiter)) {
            clearTimeout(waiter.timer);
            reject(new TesseraError("BAD_REQUEST", "the client went away"));
          }
        },
        { once: true },
      );
    });
  }

  release(slot: ReplicaSlot): void {
    slot.inFlight--;
    const lane = slot.lane;
    lane.inFlight--;
    if (lane.waiters.length > 0) this.dispatch(lane);
    else if (lane.removed && lane.inFlight === 0 && this.lanes.get(lane.route.id) === lane)
      this.lanes.delete(lane.route.id);
  }

  /** The replica refused a connection: pass it over for a while. */
  avoid(slot: ReplicaSlot): void {
    slot.avoidUntil = Date.now() + AVOID_AFTER_REFUSAL_MS;
  }

  /** The replica answered DRAINING: no new requests until the table drops or refreshes it. */
  markDraining(slot: ReplicaSlot): void {
    slot.draining = true;
  }

  /**
   * The slot's address answered for another revision (reused by a newer replica): no requests
   * until the table drops or re-addresses it, and the table is reloaded now rather than at its
   * next period. Only the first refusal asks: later requests no longer pick the slot.
   */
  markMisrouted(slot: ReplicaSlot): void {
    if (slot.draining) return;
    slot.draining = true;
    this.options.onMisrouted?.();
  }

  async close(): Promise<void> {
    clearInterval(this.starvedTimer);
    for (const lane of this.lanes.values())
      this.failWaiters(lane, new TesseraError("UNAVAILABLE", "the gateway is shutting down"));
    await Promise.all([...this.slots.values()].map((s) => s.pool.close().catch(() => {})));
    this.slots.clear();
  }

  private wake(lane: DeploymentLane, now: number): void {
    if (now - lane.lastWakeAt < WAKE_REPEAT_MS) return;
    lane.lastWakeAt = now;
    this.options.onWake(lane.route.id);
  }

  private dispatch(lane: DeploymentLane): void {
    if (lane.route.parked) {
      this.failWaiters(lane, parkedError(lane.route));
      return;
    }
    const now = Date.now();
    for (let i = 0; i < lane.waiters.length; ) {
      const waiter = lane.waiters[i]!;
      const slot = this.take(lane, waiter.exclude);
      if (!slot) {
        if (!lane.replicas.some((r) => r.hasRoom())) break; // nobody has room: the rest keep waiting
        i++; // this waiter excluded the free replicas; a later one may take them
        continue;
      }
      lane.waiters.splice(i, 1);
      clearTimeout(waiter.timer);
      waiter.resolve(slot);
    }
    if (lane.replicas.length === 0 && lane.waiters.some((w) => w.cold)) this.wake(lane, now);
  }

  private removeWaiter(lane: DeploymentLane, waiter: Waiter): boolean {
    const at = lane.waiters.indexOf(waiter);
    if (at < 0) return false;
    lane.waiters.splice(at, 1);
    return true;
  }

  private failWaiters(lane: DeploymentLane, err: Error): void {
    for (const waiter of lane.waiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(err);
    }
  }
}

function parkedError(route: DeploymentRoute): TesseraError {
  return new TesseraError(
    "UNAVAILABLE",
    `deployment ${route.name} is parked (numReplicas: 0); scale it up to serve requests`,
    { reason: "parked" },
  );
}

function usable(slot: ReplicaSlot, exclude: ReadonlySet<ReplicaSlot> | undefined): boolean {
  return slot.hasRoom() && !exclude?.has(slot);
}

/** Fewer in flight wins; a recently refusing replica loses to any other with room. */
function better(a: ReplicaSlot, b: ReplicaSlot, now: number): ReplicaSlot {
  const aAvoided = a.avoidUntil > now;
  const bAvoided = b.avoidUntil > now;
  if (aAvoided !== bAvoided) return aAvoided ? b : a;
  return b.inFlight < a.inFlight ? b : a;
}

/**
 * Power of two choices: two distinct random replicas, the less loaded one wins. When both are
 * full (or excluded), a scan finds the least loaded replica with room, if any.
 */
export function pick(
  replicas: readonly ReplicaSlot[],
  exclude: ReadonlySet<ReplicaSlot> | undefined,
  now: number,
): ReplicaSlot | undefined {
  const n = replicas.length;
  if (n === 0) return undefined;
  if (n > 1) {
    const i = Math.floor(Math.random() * n);
    let j = Math.floor(Math.random() * (n - 1));
    if (j >= i) j++;
    const a = replicas[i]!;
    const b = replicas[j]!;
    const aOk = usable(a, exclude);
    const bOk = usable(b, exclude);
    const choice = aOk && bOk ? better(a, b, now) : aOk ? a : bOk ? b : undefined;
    if (choice && choice.avoidUntil <= now) return choice;
  }
  let best: ReplicaSlot | undefined;
  for (const r of replicas) if (usable(r, exclude) && (!best || better(best, r, now) === r)) best = r;
  return best;
}
