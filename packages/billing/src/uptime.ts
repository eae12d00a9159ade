import { RUNTIME_PATHS } from "@tessera/core";
import { type Database, deployments, replicas, uptimeIncidents, uptimeProbes } from "@tessera/db";
import { and, desc, eq, gt, inArray, isNull, sql } from "drizzle-orm";

export interface ProbeOptions {
  /** Per-probe timeout; a slower answer is a failure. */
  timeoutMs?: number;
  /** Consecutive failed probes that open an incident. */
  failureThreshold?: number;
  /** Deployments probed at once. */
  concurrency?: number;
  now?: () => Date;
}

export interface ProbeResult {
  deploymentId: string;
  ok: boolean;
  status: number | null;
  latencyMs: number | null;
  error: string | null;
}

/**
 * One round of synthetic probes: every deployment that should be serving (ready or degraded, at
 * least one target replica) gets its replicas' readiness route called; it is up when one of them
 * answers 200 in time (the gateway would route there). A deployment without a ready replica is
 * down. Results are recorded, and incidents opened after `failureThreshold` consecutive failures
 * and closed by the next success.
 */
export async function probeDeployments(
  db: Database,
  opts: ProbeOptions = {},
): Promise<{ results: ProbeResult[]; opened: number; closed: number }> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const threshold = opts.failureThreshold ?? 3;
  const now = opts.now ?? (() => new Date());
  const targets = await db
    .select({ id: deployments.id, orgId: deployments.orgId })
    .from(deployments)
    .where(
      and(
        isNull(deployments.deletedAt),
        inArray(deployments.state, ["ready", "degraded"]),
        gt(deployments.targetReplicas, 0),
      ),
    );
  const results: ProbeResult[] = [];
  let opened = 0;
  let closed = 0;
  const queue = [...targets];
  const worker = async () => {
    for (let t = queue.shift(); t; t = queue.shift()) {
      const result = await probeDeployment(db, t.id, timeoutMs);
      const at = now();
      await db.insert(uptimeProbes).values({ orgId: t.orgId, ...result, at });
      const change = await updateIncident(db, t.orgId, t.id, result, at, threshold);
      if (change === "opened") opened++;
      if (change === "closed") closed++;
      results.push(result);
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency ?? 8, queue.length) }, worker));
  return { results, opened, closed };
}

async function probeDeployment(db: Database, deploymentId: string, timeoutMs: number): Promise<ProbeResult> {
  const ready = await db
    .select({ address: replicas.address })
    .from(replicas)
    .where(and(eq(replicas.deploymentId, deploymentId), eq(replicas.state, "ready")));
  const addresses = ready.map((r) => r.address).filter((a): a is string => !!a);
  if (addresses.length === 0)
    return { deploymentId, ok: false, status: null, latencyMs: null, error: "no ready replica" };
  const attempts = await Promise.all(
    addresses.map((a) => probeUrl(`${a.replace(/\/$/, "")}${RUNTIME_PATHS.ready}`, timeoutMs)),
  );
  const best = attempts.filter((a) => a.ok).sort((x, y) => x.latencyMs! - y.latencyMs!)[0];
  return { deploymentId, ...(best ?? attempts[0]!) };
}

async function probeUrl(url: string, timeoutMs: number): Promise<Omit<ProbeResult, "deploymentId">> {
  const started = performance.now();
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await res.body?.cancel();
    const latencyMs = performance.now() - started;
    return res.status === 200
      ? { ok: true, status: res.status, latencyMs, error: null }
      : { ok: false, status: res.status, latencyMs, error: `readiness answered ${res.status}` };
  } catch (err) {
    const e = err as Error;
    const error =
      e.name === "TimeoutError" ? `no answer within ${timeoutMs} ms` : `unreachable: ${e.message}`;
    return { ok: false, status: null, latencyMs: null, error };
  }
}

async function updateIncident(
  db: Database,
  orgId: string,
  deploymentId: string,
  result: ProbeResult,
  at: Date,
  threshold: number,
): Promise<"opened" | "closed" | null> {
  if (result.ok) {
    const done = await db
      .update(uptimeIncidents)
      .set({ closedAt: at })
      .where(and(eq(uptimeIncidents.deploymentId, deploymentId), isNull(uptimeIncidents.closedAt)))
      .returning({ id: uptimeIncidents.id });
    return done.length ? "closed" : null;
  }
  const recent = await db
    .select({ ok: uptimeProbes.ok, at: uptimeProbes.at })
    .from(uptimeProbes)
    .where(eq(uptimeProbes.deploymentId, deploymentId))
    .orderBy(desc(uptimeProbes.at), desc(uptimeProbes.id))
    .limit(threshold);
  if (recent.length < threshold || recent.some((p) => p.ok)) return null;
  // At most one open incident per deployment (partial unique index): a second prober loses quietly.
  const inserted = await db
    .insert(uptimeIncidents)
    .values({
      orgId,
      deploymentId,
      openedAt: recent.at(-1)!.at,
      reason: result.error ?? "probe failed",
      failedProbes: threshold,
    })
    .onConflictDoNothing()
    .returning({ id: uptimeIncidents.id });
  if (inserted.length) return "opened";
  await db
    .update(uptimeIncidents)
    .set({ failedProbes: sql`${uptimeIncidents.failedProbes} + 1` })
    .where(and(eq(uptimeIncidents.deploymentId, deploymentId), isNull(uptimeIncidents.closedAt)));
  return null;
}
