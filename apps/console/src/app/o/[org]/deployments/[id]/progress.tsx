"use client";

import { useQuery } from "@tanstack/react-query";
import { StateBadge } from "@/components/state-badge";
import { useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";
import { useLogTail } from "@/lib/use-log-tail";
import type { DeploymentView } from "./types";

const SETTLED = new Set(["live", "failed", "superseded", "rolled_back"]);

/**
 * A rollout as it happens: the desired revision's state, its environment build log streaming in,
 * the provisioner job and its log, and which revision keeps serving meanwhile.
 */
export function DeployProgress({ dep, jobId }: { dep: DeploymentView; jobId: string | null }) {
  const { org } = useConsole();
  const trpc = useTRPC();
  const desired = dep.desiredRevision;
  const live = dep.liveRevision;
  const rollingOut = !!desired && !SETTLED.has(desired.state);
  const job = useQuery({
    ...trpc.jobs.get.queryOptions({ orgId: org.id, jobId: jobId ?? "00000000-0000-0000-0000-000000000000" }),
    enabled: !!jobId,
    refetchInterval: (q) =>
      q.state.data && ["succeeded", "failed"].includes(q.state.data.job.state) ? false : 2_000,
  });
  const env = useQuery({
    ...trpc.environments.get.queryOptions({
      orgId: org.id,
      hash: desired?.envHash ?? "0".repeat(32),
      limit: 1,
    }),
    enabled: !!desired,
    refetchInterval: (q) =>
      q.state.data && ["ready", "failed"].includes(q.state.data.environment.state) ? false : 2_000,
  });
  const cluster = useQuery({
    ...trpc.clusters.get.queryOptions({ orgId: org.id, clusterId: dep.clusterId }),
    refetchInterval: (q) => (q.state.data?.state === "ready" ? false : 3_000),
  });
  const envBuilding = !!env.data && !["ready", "failed"].includes(env.data.environment.state);
  const envLines = useLogTail<{ id: number; line: string }>(
    desired
      ? (sinceId) => trpc.environments.get.queryOptions({ orgId: org.id, hash: desired.envHash, sinceId })
      : null,
    desired?.envHash ?? "",
    envBuilding || rollingOut,
  );

  if (!desired) return null;
  return (
    <section className="panel" aria-labelledby="progress-title" data-testid="deploy-progress">
      <h2 id="progress-title">
        Revision v{desired.version} <StateBadge state={desired.state} />
      </h2>
      {desired.failureReason ? (
        <p className="form-error" role="alert">
          Failed: {desired.failureReason}
        </p>
      ) : null}
      {live && live.id !== desired.id ? (
        <p>
          <span className="badge ok">serving</span> v{live.version} keeps serving traffic until v
          {desired.version} is ready.
        </p>
      ) : null}
      {!live && rollingOut ? <p className="muted">No revision serves traffic yet.</p> : null}
      {cluster.data && cluster.data.state !== "ready" ? (
        <p>
          Cluster <strong>{cluster.data.name}</strong>: <StateBadge state={cluster.data.state} />
          {cluster.data.stateReason ? <span className="field-error"> {cluster.data.stateReason}</span> : null}
        </p>
      ) : null}
      {job.data ? (
        <p>
          Provisioner job <code>{job.data.job.kind}</code>: <StateBadge state={job.data.job.state} />
          {job.data.job.state === "queued" ? (
            <span className="muted"> — waiting for the provisioner to pick it up.</span>
          ) : null}
          {job.data.job.error ? <span className="field-error"> {job.data.job.error}</span> : null}
        </p>
      ) : null}
      {job.data && job.data.lines.length > 0 ? (
        <pre className="log" role="log" aria-label="Job log">
          {job.data.lines.map((l) => l.line).join("\n")}
        </pre>
      ) : null}
      {env.data ? (
        <>
          <h3>
            Environment <code>{env.data.environment.hash.slice(0, 12)}</code>{" "}
            <StateBadge state={env.data.environment.state} />
          </h3>
          {env.data.environment.failureReason ? (
            <p className="form-error">{env.data.environment.failureReason}</p>
          ) : null}
          {envLines.length > 0 ? (
            <pre className="log" role="log" aria-label="Environment build log">
              {envLines.map((l) => l.line).join("\n")}
            </pre>
          ) : (
            <p className="muted">{envBuilding ? "Waiting for build output…" : "No build output."}</p>
          )}
        </>
      ) : null}
    </section>
  );
}
