"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import Link from "next/link";
import { useState } from "react";
import { DataTable } from "@/components/data-table";
import { FormError, SelectField } from "@/components/form";
import { Loading, When } from "@/components/when";
import { shownError } from "@/lib/errors";
import { count, percent } from "@/lib/format";
import { useTRPC } from "@/lib/trpc";

const WINDOWS = [
  [1, "Last hour"],
  [24, "Last 24 hours"],
  [24 * 7, "Last 7 days"],
] as const;

/** Platform health for operators: queues, replicas, traffic per org, failed jobs (with retry) and builds. */
export function PlatformMonitoring({ email }: { email: string }) {
  const trpc = useTRPC();
  const qc = useQueryClient();
  const [windowHours, setWindowHours] = useState(24);
  const overview = useQuery({
    ...trpc.admin.overview.queryOptions({ windowHours }),
    refetchInterval: 15_000,
  });
  const queues = useQuery({ ...trpc.admin.queues.queryOptions(), refetchInterval: 5_000 });
  const orgs = useQuery(trpc.admin.organisations.queryOptions({ limit: 500 }));
  const clusters = useQuery(trpc.admin.clusters.queryOptions({ limit: 500 }));
  const [retried, setRetried] = useState<Record<string, string>>({});
  const retry = useMutation(
    trpc.admin.retryJob.mutationOptions({
      onSuccess: ({ jobId }, { jobId: failedId }) => {
        setRetried((r) => ({ ...r, [failedId]: jobId }));
        qc.invalidateQueries({ queryKey: trpc.admin.overview.queryKey() });
        qc.invalidateQueries({ queryKey: trpc.admin.queues.queryKey() });
      },
    }),
  );
  const o = overview.data;
  const orgSlug = new Map(orgs.data?.map((x) => [x.id, x.slug]));
  const replicaStates = Object.entries(o?.replicasByState ?? {}).map(([state, n]) => ({
    state,
    n: Number(n),
  }));

  return (
    <main className="main" style={{ maxWidth: 1200, margin: "0 auto" }}>
      <p>
        <Link href="/admin">← Platform admin</Link> <span className="muted">· signed in as {email}</span>
      </p>
      <h1>Platform monitoring</h1>
      <FormError error={shownError(overview.error ?? queues.error ?? orgs.error ?? clusters.error)} />
      <p className="muted">
        {orgs.data ? `${orgs.data.length} organisations` : "…"} ·{" "}
        {clusters.data ? `${clusters.data.length} clusters` : "…"} ·{" "}
        {replicaStates.reduce((a, r) => a + r.n, 0)} replicas not stopped
      </p>

      <h2>Queues</h2>
      {queues.isLoading ? <Loading what="queue depths" /> : null}
      {queues.data && !queues.data.configured ? (
        <p className="panel empty">This console has no Redis access configured for queue depths.</p>
      ) : (
        <DataTable
          label="Queue depths"
          rows={queues.data?.queues}
          rowKey={(q) => q.queue}
          columns={[
            { header: "Queue", cell: (q) => q.queue },
            { header: "Waiting", cell: (q) => q.waiting },
            { header: "Active", cell: (q) => q.active },
            { header: "Delayed", cell: (q) => q.delayed },
            { header: "Failed", cell: (q) => q.failed },
            { header: "Completed", cell: (q) => q.completed },
            { header: "Paused", cell: (q) => q.paused },
          ]}
        />
      )}

      <h2>Replicas by state</h2>
      <DataTable
        label="Replicas by state"
        empty="No replicas running."
        rows={o ? replicaStates : undefined}
        rowKey={(r) => r.state}
        columns={[
          { header: "State", cell: (r) => r.state },
          { header: "Replicas", cell: (r) => r.n },
        ]}
      />

      <h2>Traffic per organisation</h2>
      <SelectField
        label="Window"
        value={String(windowHours)}
        onChange={(e) => setWindowHours(Number(e.target.value))}
      >
        {WINDOWS.map(([h, label]) => (
          <option key={h} value={h}>
            {label}
          </option>
        ))}
      </SelectField>
      {overview.isLoading ? <Loading what="the overview" /> : null}
      <DataTable
        label="Traffic per organisation"
        empty="No metered requests in this window (usage is rolled up hourly)."
        rows={o?.organisations}
        rowKey={(x) => x.orgId}
        columns={[
          { header: "Organisation", cell: (x) => x.slug },
          { header: "Plan", cell: (x) => x.plan },
          { header: "Requests", cell: (x) => count(x.requests) },
          { header: "req/s", cell: (x) => x.requestsPerSecond.toFixed(3) },
          { header: "Error rate", cell: (x) => percent(x.errorRate) },
          { header: "CPU core-hours", cell: (x) => count(x.cpuSeconds / 3600) },
        ]}
      />

      <h2>Open incidents</h2>
      <DataTable
        label="Open incidents"
        empty="No open incidents."
        rows={o?.openIncidents}
        rowKey={(i) => i.id}
        columns={[
          { header: "Organisation", cell: (i) => i.orgSlug },
          { header: "Deployment", cell: (i) => i.deployment },
          { header: "Since", cell: (i) => <When at={i.openedAt} /> },
          { header: "Failed probes", cell: (i) => i.failedProbes },
          { header: "Reason", cell: (i) => i.reason },
        ]}
      />

      <h2>Failed jobs</h2>
      <FormError error={shownError(retry.error)} />
      <DataTable
        label="Failed jobs"
        empty="No failed jobs."
        rows={o?.failedJobs}
        rowKey={(j) => j.id}
        columns={[
          { header: "Organisation", cell: (j) => (j.orgId ? (orgSlug.get(j.orgId) ?? j.orgId) : "platform") },
          { header: "Kind", cell: (j) => j.kind },
          { header: "Attempts", cell: (j) => j.attempts },
          { header: "Failed", cell: (j) => <When at={j.finishedAt} /> },
          { header: "Error", cell: (j) => <code>{j.error ?? "—"}</code> },
          {
            header: "",
            cell: (j) =>
              retried[j.id] ? (
                <span className="muted">retried</span>
              ) : (
                <button
                  type="button"
                  aria-label={`Retry job ${j.id}`}
                  disabled={retry.isPending}
                  onClick={() => retry.mutate({ jobId: j.id })}
                >
                  Retry
                </button>
              ),
          },
        ]}
      />

      <h2>Environment build failures</h2>
      <DataTable
        label="Environment build failures"
        empty="No failed environment builds."
        rows={o?.failedBuilds}
        rowKey={(b) => b.hash}
        columns={[
          { header: "Environment", cell: (b) => <code>{b.hash.slice(0, 12)}</code> },
          { header: "Runtime", cell: (b) => b.runtime },
          { header: "Failed", cell: (b) => <When at={b.finishedAt} /> },
          { header: "Reason", cell: (b) => <code>{b.reason ?? "—"}</code> },
        ]}
      />
    </main>
  );
}
