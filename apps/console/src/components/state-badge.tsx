const GOOD = new Set(["ready", "live", "running", "succeeded", "active", "accepted"]);
const BAD = new Set(["failed", "error", "stopped", "deleting", "unhealthy", "revoked", "expired"]);

/** A lifecycle state (deployment, revision, replica, cluster, job) coloured by how it is going. */
export function StateBadge({ state }: { state: string }) {
  const tone = GOOD.has(state) ? "ok" : BAD.has(state) ? "bad" : "busy";
  return <span className={`badge ${tone}`}>{state}</span>;
}
