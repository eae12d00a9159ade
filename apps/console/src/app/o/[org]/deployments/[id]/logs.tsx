"use client";

import { useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { SelectField } from "@/components/form";
import { useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";
import { useLogTail } from "@/lib/use-log-tail";

const LEVELS = ["debug", "info", "warn", "error"] as const;
const SINCE = [
  [0, "All retained"],
  [15, "Last 15 minutes"],
  [60, "Last hour"],
  [1440, "Last 24 hours"],
] as const;

interface LogLine {
  id: number;
  replicaId: string;
  level: string;
  message: string;
  at: string | Date;
}

/** Replica logs, following new lines, filtered by replica, minimum level and time. */
export function Logs({ deploymentId }: { deploymentId: string }) {
  const { org } = useConsole();
  const trpc = useTRPC();
  const [replicaId, setReplicaId] = useState("");
  const [level, setLevel] = useState<(typeof LEVELS)[number]>("debug");
  const [sinceMinutes, setSinceMinutes] = useState(0);
  const replicas = useQuery(
    trpc.deployments.replicas.queryOptions({ orgId: org.id, deploymentId, includeStopped: true }),
  );
  const lines = useLogTail<LogLine>(
    (sinceId) =>
      trpc.deployments.logs.queryOptions({
        orgId: org.id,
        deploymentId,
        level,
        sinceId,
        ...(replicaId ? { replicaId } : {}),
      }),
    `${replicaId}:${level}`,
    true,
  );
  const cutoff = sinceMinutes ? Date.now() - sinceMinutes * 60_000 : 0;
  const shown = lines.filter((l) => new Date(l.at).getTime() >= cutoff);
  return (
    <>
      <div className="row">
        <SelectField label="Replica" value={replicaId} onChange={(e) => setReplicaId(e.target.value)}>
          <option value="">All replicas</option>
          {replicas.data?.map((r) => (
            <option key={r.id} value={r.id}>
              {r.id.slice(0, 8)} ({r.state})
            </option>
          ))}
        </SelectField>
        <SelectField
          label="Minimum level"
          value={level}
          onChange={(e) => setLevel(e.target.value as (typeof LEVELS)[number])}
        >
          {LEVELS.map((l) => (
            <option key={l}>{l}</option>
          ))}
        </SelectField>
        <SelectField
          label="Time"
          value={sinceMinutes}
          onChange={(e) => setSinceMinutes(Number(e.target.value))}
        >
          {SINCE.map(([v, label]) => (
            <option key={v} value={v}>
              {label}
            </option>
          ))}
        </SelectField>
      </div>
      {shown.length === 0 ? (
        <p className="panel empty">No log lines match. Replicas' output appears here as it is written.</p>
      ) : (
        <pre className="log" role="log" aria-label="Replica logs">
          {shown
            .map(
              (l) =>
                `${new Date(l.at).toLocaleTimeString()} ${l.replicaId.slice(0, 8)} ${l.level.toUpperCase().padEnd(5)} ${l.message}`,
            )
            .join("\n")}
        </pre>
      )}
    </>
  );
}
