import type { ReplicaPhase } from "@tessera/cluster";
import { type Database, type ReplicaState, replicas } from "@tessera/db";
import { and, eq, inArray } from "drizzle-orm";

export type ReplicaRow = typeof replicas.$inferSelect;

export const ACTIVE_REPLICA_STATES: ReplicaState[] = ["starting", "ready", "draining"];

/** What a driver (or the controller itself) reports about one replica. */
export interface ObservedReplica {
  phase: ReplicaPhase;
  address?: string | null;
  restarts?: number;
  reason?: string | null;
}

export async function activeReplicaRows(db: Database, deploymentId: string): Promise<ReplicaRow[]> {
  return db
    .select()
    .from(replicas)
    .where(and(eq(replicas.deploymentId, deploymentId), inArray(replicas.state, ACTIVE_REPLICA_STATES)));
}

export const isServing = (r: Pick<ReplicaRow, "state">) => r.state === "starting" || r.state === "ready";

/**
 * Brings a replica row in line with what was observed and says whether the routing table changed
 * (the replica started or stopped being routable, or moved). A draining row never becomes
 * routable again: the controller decided to stop it, whatever the driver still reports.
 * The row object is updated in place so one reconcile pass sees its own writes.
 */
export async function applyObservation(
  db: Database,
  row: ReplicaRow,
  seen: ObservedReplica,
): Promise<boolean> {
  let next: ReplicaState = seen.phase;
  if (row.state === "draining" && next !== "stopped" && next !== "failed") next = "draining";
  const address = seen.address ?? row.address;
  const restarts = Math.max(row.restarts, seen.restarts ?? 0);
  const reason = seen.reason ?? (next === row.state ? row.stateReason : null);
  if (
    next === row.state &&
    address === row.address &&
    restarts === row.restarts &&
    reason === row.stateReason
  )
    return false;
  const now = new Date();
  const changes: Partial<ReplicaRow> = { state: next, address, restarts, stateReason: reason };
  if (next === "ready" && !row.readyAt) changes.readyAt = now;
  if ((next === "stopped" || next === "failed") && !row.stoppedAt) changes.stoppedAt = now;
  await db.update(replicas).set(changes).where(eq(replicas.id, row.id));
  const wasRoutable = row.state === "ready";
  const routable = next === "ready";
  const moved = routable && address !== row.address;
  Object.assign(row, changes);
  return wasRoutable !== routable || moved;
}
