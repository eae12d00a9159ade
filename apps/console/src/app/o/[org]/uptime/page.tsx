"use client";

import { useQuery } from "@tanstack/react-query";
import Link from "next/link";
import { useState } from "react";
import { DataTable } from "@/components/data-table";
import { FormError, SelectField } from "@/components/form";
import { StateBadge } from "@/components/state-badge";
import { Loading, When } from "@/components/when";
import { shownError } from "@/lib/errors";
import { count, ms, percent } from "@/lib/format";
import { useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";

/** The organisation's SLO overview: availability and latency of every deployment, and recent incidents. */
export default function UptimePage() {
  const { org } = useConsole();
  const trpc = useTRPC();
  const [window, setWindow] = useState<"24h" | "30d">("24h");
  const summary = useQuery({
    ...trpc.slo.summary.queryOptions({ orgId: org.id, window }),
    refetchInterval: 60_000,
  });
  const incidents = useQuery(trpc.slo.incidents.queryOptions({ orgId: org.id, limit: 50 }));
  const names = new Map(summary.data?.map((d) => [d.deploymentId, d.name]));
  const deploymentLink = (id: string, name: string) => (
    <Link href={`/o/${org.slug}/deployments/${id}`}>{name}</Link>
  );
  return (
    <>
      <h1>Uptime and SLOs</h1>
      <p className="muted">
        Every ready deployment is probed through the gateway; availability counts successful probes and
        requests answered below 500. A deployment's Uptime tab shows its uptime per hour or day.
      </p>
      <SelectField label="Window" value={window} onChange={(e) => setWindow(e.target.value as "24h" | "30d")}>
        <option value="24h">Last 24 hours</option>
        <option value="30d">Last 30 days</option>
      </SelectField>
      <FormError error={shownError(summary.error ?? incidents.error)} />
      {summary.isLoading ? <Loading what="SLOs" /> : null}
      <DataTable
        label="SLO by deployment"
        empty={
          <>
            No deployments yet. <Link href={`/o/${org.slug}/deploy`}>Deploy one</Link>: it is probed as soon
            as it is ready.
          </>
        }
        rows={summary.data}
        rowKey={(d) => d.deploymentId}
        columns={[
          { header: "Deployment", cell: (d) => deploymentLink(d.deploymentId, d.name) },
          { header: "State", cell: (d) => <StateBadge state={d.state} /> },
          { header: "Availability", cell: (d) => percent(d.availability, 3) },
          { header: "Error budget left", cell: (d) => percent(d.errorBudgetRemaining, 1) },
          { header: "Requests", cell: (d) => count(d.requests) },
          { header: "p50", cell: (d) => ms(d.latencyMs.p50) },
          { header: "p95", cell: (d) => ms(d.latencyMs.p95) },
          { header: "p99", cell: (d) => ms(d.latencyMs.p99) },
          { header: "Open incidents", cell: (d) => d.openIncidents },
        ]}
      />
      <h2>Recent incidents</h2>
      <DataTable
        label="Recent incidents"
        empty="No incidents: every probe answered."
        rows={incidents.data}
        rowKey={(i) => i.id}
        columns={[
          {
            header: "Deployment",
            cell: (i) => deploymentLink(i.deploymentId, names.get(i.deploymentId) ?? "deleted deployment"),
          },
          { header: "Opened", cell: (i) => <When at={i.openedAt} /> },
          {
            header: "Closed",
            cell: (i) => (i.closedAt ? <When at={i.closedAt} /> : <span className="badge bad">open</span>),
          },
          { header: "Failed probes", cell: (i) => i.failedProbes },
          { header: "Reason", cell: (i) => i.reason },
        ]}
      />
    </>
  );
}
