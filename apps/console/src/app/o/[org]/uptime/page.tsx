"use client";

import { useQuery } from "@tanstack/react-query";
import Link from "next/link";
import { useState } from "react";
import { DataTable } from "@/components/data-table";
import { FormError } from "@/components/form";
import { StateBadge } from "@/components/state-badge";
import { IncidentsTable, type SloWindow, WindowSwitch } from "@/components/uptime";
import { Loading } from "@/components/when";
import { shownError } from "@/lib/errors";
import { count, ms, percent } from "@/lib/format";
import { useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";

/** The organisation's SLO overview: availability and latency of every deployment, and recent incidents. */
export default function UptimePage() {
  const { org } = useConsole();
  const trpc = useTRPC();
  const [window, setWindow] = useState<SloWindow>("24h");
  const summary = useQuery({
    ...trpc.slo.summary.queryOptions({ orgId: org.id, window }),
    refetchInterval: 60_000,
  });
  const incidents = useQuery(trpc.slo.incidents.queryOptions({ orgId: org.id, limit: 50 }));
  const names = new Map(summary.data?.map((d) => [d.deploymentId, d.name]));
  return (
    <>
      <h1>Uptime and SLOs</h1>
      <p className="muted">
        Each ready deployment is probed through the gateway; availability counts successful probes and
        requests answered below 500. Open a deployment for its uptime bars.
      </p>
      <WindowSwitch value={window} onChange={setWindow} />
      <FormError error={shownError(summary.error ?? incidents.error)} />
      {summary.isLoading ? <Loading what="SLOs" /> : null}
      <DataTable
        label="SLO by deployment"
        empty={
          <>
            No deployments yet. <Link href={`/o/${org.slug}/deploy`}>Deploy one</Link> and it is probed as
            soon as it is ready.
          </>
        }
        rows={summary.data}
        rowKey={(d) => d.deploymentId}
        columns={[
          {
            header: "Deployment",
            cell: (d) => <Link href={`/o/${org.slug}/deployments/${d.deploymentId}`}>{d.name}</Link>,
          },
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
      <IncidentsTable
        label="Recent incidents"
        incidents={incidents.data?.map((i) => ({
          ...i,
          reason: `${names.get(i.deploymentId) ?? "deleted deployment"}: ${i.reason}`,
        }))}
      />
    </>
  );
}
