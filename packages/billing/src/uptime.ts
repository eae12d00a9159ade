import { mintProbeToken, PROBE_ASLEEP_REASON, probeIngressUrl, RUNTIME_PATHS } from "@tessera/core";
import {
  applications,
  type Database,
  deployments,
  organisations,
  replicas,
  uptimeIncidents,
  uptimeProbes,
} from "@tessera/db";
import { and, desc, eq, gt, inArray, isNotNull, isNull, sql } from "drizzle-orm";

/** Where the prober reaches the gateway's probe ingress (`TESSERA_GATEWAY_URL`, `TESSERA_HANDLE_SECRET`). */
export interface ProbeGateway {
  url: string;
  /** The handle secret: the prober mints the platform probe token with it. */
  secret: string;
}

export interface ProbeOptions {
  /**
   * Probe through the gateway (what clients see: routing table, router, timeouts). Without it the
   * prober calls each ready replica's readiness route directly.
   */
  gateway?: ProbeGateway;
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
  /**
   * Scaled to zero on purpose (target 0) and answered "asleep" by the gateway: neither up nor down,
   * so it is not recorded and leaves incidents alone.
   */
  asleep: boolean;
  status: number | null;
  latencyMs: number | null;
  error: string | null;
}

type ProbeAnswer = Omit<ProbeResult, "deploymentId" | "asleep">;

interface ProbeTarget {
  id: string;
  orgId: string;
  orgSlug: string;
  appName: string;
  name: string;
  targetReplicas: number;
}

/**
 * One round of synthetic probes over every deployment that should be serving (ready or degraded).
 * Through the gateway, each deployment's probe ingress is called (it routes to one replica's
 * readiness route like a request; a deployment without replicas is answered "asleep" and not
 * woken). Directly, each ready replica's readiness route is called and one 200 in time is enough.
 * Up/down results are recorded, and incidents opened after `failureThreshold` consecutive failures
 * and closed by the next success.
 */
export async function probeDeployments(
  db: Database,
  opts: ProbeOptions = {},
): Promise<{ results: ProbeResult[]; opened: number; closed: number }> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const threshold = opts.failureThreshold ?? 3;
  const now = opts.now ?? (() => new Date());
  const gateway = opts.gateway;
  const token = gateway ? mintProbeToken(gateway.secret) : null;
  const targets: ProbeTarget[] = await db
    .select({
      id: deployments.id,
      orgId: deployments.orgId,
      orgSlug: organisations.slug,
      appName: applications.name,
      name: deployments.name,
      targetReplicas: deployments.targetReplicas,
    })
    .from(deployments)
    .innerJoin(organisations, eq(organisations.id, deployments.orgId))
    .innerJoin(applications, eq(applications.id, deployments.applicationId))
    .where(
      and(
        isNull(deployments.deletedAt),
        inArray(deployments.state, ["ready", "degraded"]),
        // Through the gateway a sleeping deployment is asked too: it must answer "asleep", not wake.
        gateway ? isNotNull(deployments.liveRevisionId) : gt(deployments.targetReplicas, 0),
      ),
    );
  const results: ProbeResult[] = [];
  let opened = 0;
  let closed = 0;
  const queue = [...targets];
  const worker = async () => {
    for (let t = queue.shift(); t; t = queue.shift()) {
      const result =
        gateway && token
          ? await probeThroughGateway(t, gateway.url, token, timeoutMs)
          : { deploymentId: t.id, asleep: false, ...(await probeReplicas(db, t.id, timeoutMs)) };
      results.push(result);
      if (result.asleep) continue;
      const at = now();
      const { ok, status, latencyMs, error } = result;
      await db
        .insert(uptimeProbes)
        .values({ orgId: t.orgId, deploymentId: t.id, ok, status, latencyMs, error, at });
      const change = await updateIncident(db, t.orgId, t.id, result, at, threshold);
      if (change === "opened") opened++;
      if (change === "closed") closed++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency ?? 8, queue.length) }, worker));
  return { results, opened, closed };
}

async function probeThroughGateway(
  target: ProbeTarget,
  gatewayUrl: string,
  token: string,
  timeoutMs: number,
): Promise<ProbeResult> {
  const url = probeIngressUrl(gatewayUrl, target.orgSlug, target.appName, target.name);
  const answer = await probeUrl(url, timeoutMs, { authorization: `Bearer ${token}` });
  // "asleep" means the gateway has no replica for it: intended when the deployment is scaled to
  // zero, an outage when replicas are wanted (crashed, or still waking).
  const asleep = answer.reason === PROBE_ASLEEP_REASON;
  if (asleep && target.targetReplicas === 0)
    return {
      deploymentId: target.id,
      asleep: true,
      ok: false,
      status: answer.status,
      latencyMs: null,
      error: null,
    };
  const { reason: _, ...result } = answer;
  return {
    deploymentId: target.id,
    asleep: false,
    ...result,
    error: asleep ? "no ready replica (the gateway routes to none)" : result.error,
  };
}

async function probeReplicas(db: Database, deploymentId: string, timeoutMs: number): Promise<ProbeAnswer> {
  const ready = await db
    .select({ address: replicas.address })
    .from(replicas)
    .where(and(eq(replicas.deploymentId, deploymentId), eq(replicas.state, "ready")));
  const addresses = ready.map((r) => r.address).filter((a): a is string => !!a);
  if (addresses.length === 0) return { ok: false, status: null, latencyMs: null, error: "no ready replica" };
  const attempts = await Promise.all(
    addresses.map((a) => probeUrl(`${a.replace(/\/$/, "")}${RUNTIME_PATHS.ready}`, timeoutMs)),
  );
  const best = attempts.filter((a) => a.ok).sort((x, y) => x.latencyMs! - y.latencyMs!)[0];
  const { reason: _, ...chosen } = best ?? attempts[0]!;
  return chosen;
}

/** A GET that must answer 200 in time; a gateway error's code and `details.reason` are kept. */
async function probeUrl(
  url: string,
  timeoutMs: number,
  headers: Record<string, string> = {},
): Promise<ProbeAnswer & { reason: string | null }> {
  const started = performance.now();
  try {
    const res = await fetch(url, { headers, signal: AbortSignal.timeout(timeoutMs) });
    if (res.status === 200) {
      await res.body?.cancel();
      return { ok: true, status: 200, latencyMs: performance.now() - started, error: null, reason: null };
    }
    const refusal = gatewayRefusal(await res.text().catch(() => ""));
    const latencyMs = performance.now() - started;
    const error = refusal
      ? `gateway answered ${res.status} ${refusal.code}: ${refusal.message}`
      : `readiness answered ${res.status}`;
    return { ok: false, status: res.status, latencyMs, error, reason: refusal?.reason ?? null };
  } catch (err) {
    const e = err as Error;
    const error =
      e.name === "TimeoutError" ? `no answer within ${timeoutMs} ms` : `unreachable: ${e.message}`;
    return { ok: false, status: null, latencyMs: null, error, reason: null };
  }
}

/** The gateway's (or runtime's) error body `{error: {code, message, details: {reason}}}`, if that is what came. */
function gatewayRefusal(body: string): { code: string; message: string; reason: string | null } | null {
  try {
    const error = (
      JSON.parse(body) as { error?: { code?: unknown; message?: unknown; details?: { reason?: unknown } } }
    ).error;
    if (typeof error?.code !== "string") return null;
    const reason = error.details?.reason;
    return {
      code: error.code,
      message: String(error.message ?? ""),
      reason: typeof reason === "string" ? reason : null,
    };
  } catch {
    return null;
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
