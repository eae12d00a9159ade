"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import Link from "next/link";
import { useDeferredValue, useState } from "react";
import { DataTable } from "@/components/data-table";
import { FormError, TextField } from "@/components/form";
import { StateBadge } from "@/components/state-badge";
import { Loading, When } from "@/components/when";
import { shownError } from "@/lib/errors";
import { useTRPC } from "@/lib/trpc";
import { KubernetesClusterConfig } from "./kubernetes-cluster-config";
import { PlatformHealth } from "./platform-health";

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

/** Read-only platform view: every organisation, cluster and deployment, with live numbers. */
export function AdminDashboard({ email }: { email: string }) {
  const trpc = useTRPC();
  const [search, setSearch] = useState("");
  const q = useDeferredValue(search.trim());
  const filter = q ? { search: q } : {};
  const orgs = useQuery(trpc.admin.organisations.queryOptions(filter));
  const clusters = useQuery(trpc.admin.clusters.queryOptions(filter));
  const deployments = useQuery({
    ...trpc.metrics.adminDeployments.queryOptions({ ...filter, windowMinutes: 60 }),
    refetchInterval: 10_000,
  });
  const overview = useQuery({
    ...trpc.admin.overview.queryOptions({ windowHours: 24 }),
    refetchInterval: 10_000,
  });
  const queues = useQuery({ ...trpc.admin.queues.queryOptions(), refetchInterval: 10_000 });
  const qc = useQueryClient();
  const retry = useMutation(
    trpc.admin.retryJob.mutationOptions({
      onSuccess: () => qc.invalidateQueries({ queryKey: trpc.admin.overview.queryKey() }),
    }),
  );
  const err = shownError(orgs.error ?? clusters.error ?? deployments.error ?? overview.error ?? retry.error);

  return (
    <main className="main" style={{ maxWidth: 1200, margin: "0 auto" }}>
      <p>
        <Link href="/dashboard">← Console</Link> <span className="muted">· signed in as {email}</span>
      </p>
      <h1>Platform admin</h1>
      <TextField
        label="Search organisations, clusters and deployments"
        type="search"
        value={search}
        onChange={(e) => setSearch(e.target.value)}
        placeholder="slug, name…"
      />
      <FormError error={err} />
      <h2>Platform</h2>
      <div className="grid2">
        <section className="panel" aria-label="Replicas by state">
          <strong>Replicas</strong>
          <p>
            {overview.data
              ? Object.entries(overview.data.replicasByState)
                  .map(([state, n]) => `${n} ${state}`)
                  .join(" · ") || "none"
              : "…"}
          </p>
        </section>
        <section className="panel" aria-label="Queues">
          <strong>Queues</strong>
          {queues.data && !queues.data.configured ? (
            <p className="muted">No Redis access from the console.</p>
          ) : null}
          {queues.data?.queues.map((q) => (
            <p key={q.queue}>
              <code>{q.queue}</code>: {q.waiting} waiting, {q.active} active, {q.delayed} delayed, {q.failed}{" "}
              failed
            </p>
          ))}
        </section>
      </div>
      <h3>Failed jobs</h3>
      <DataTable
        label="Failed jobs"
        empty="No failed jobs."
        rows={overview.data?.failedJobs}
        rowKey={(j) => j.id}
        columns={[
          { header: "Job", cell: (j) => <code>{j.kind}</code> },
          { header: "Error", cell: (j) => j.error ?? "" },
          { header: "Attempts", cell: (j) => j.attempts },
          { header: "Finished", cell: (j) => <When at={j.finishedAt} /> },
          {
            header: "",
            cell: (j) => (
              <button
                type="button"
                className="secondary"
                disabled={retry.isPending}
                onClick={() => retry.mutate({ jobId: j.id })}
              >
                Retry
              </button>
            ),
          },
        ]}
      />
      <PlatformHealth />
      <h2>Deployments (last hour)</h2>
      {deployments.isLoading ? <Loading what="deployments" /> : null}
      <DataTable
        empty="No deployments match."
        label="All deployments"
        rows={deployments.data}
        rowKey={(d) => d.id}
        columns={[
          { header: "Organisation", cell: (d) => d.orgSlug },
          { header: "Deployment", cell: (d) => `${d.applicationName}/${d.name}` },
          { header: "State", cell: (d) => <StateBadge state={d.state} /> },
          {
            header: "Replicas (ready/running/target)",
            cell: (d) => `${d.readyReplicas}/${d.runningReplicas}/${d.targetReplicas}`,
          },
          { header: "Requests", cell: (d) => d.requests },
          { header: "req/s", cell: (d) => d.rps.toFixed(3) },
          { header: "Error rate", cell: (d) => pct(d.errorRate) },
        ]}
      />
      <h2>Organisations</h2>
      <DataTable
        empty="No organisations match."
        label="All organisations"
        rows={orgs.data}
        rowKey={(o) => o.id}
        columns={[
          { header: "Slug", cell: (o) => o.slug },
          { header: "Name", cell: (o) => o.name },
          { header: "Plan", cell: (o) => o.plan },
          { header: "Members", cell: (o) => o.memberCount },
          { header: "Personal", cell: (o) => (o.personal ? "yes" : "no") },
          { header: "Created", cell: (o) => <When at={o.createdAt} /> },
        ]}
      />
      <h2>Clusters</h2>
      <DataTable
        empty="No clusters match."
        label="All clusters"
        rows={clusters.data}
        rowKey={(c) => c.id}
        columns={[
          { header: "Organisation", cell: (c) => c.orgSlug },
          { header: "Cluster", cell: (c) => c.name },
          { header: "State", cell: (c) => <StateBadge state={c.state} /> },
          { header: "Driver", cell: (c) => `${c.driver} · ${c.region}` },
          {
            header: "Quota",
            cell: (c) => `${c.quota.cpus} CPU · ${c.quota.memoryMb} MB · ${c.quota.maxReplicas} replicas`,
          },
        ]}
      />
      <KubernetesClusterConfig clusters={(clusters.data ?? []).filter((c) => c.driver === "kubernetes")} />
    </main>
  );
}
