"use client";

import { useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { Bar, BarChart, CartesianGrid, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { DataTable } from "@/components/data-table";
import { SelectField } from "@/components/form";
import { Loading, When } from "@/components/when";
import { useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";

const pct = (x: number | null, digits = 3) => (x === null ? "—" : `${(x * 100).toFixed(digits)}%`);
const ms = (x: number | null) => (x === null ? "—" : `${Math.round(x)} ms`);

/** Availability against the SLO target, error budget, latency percentiles, uptime bars, incidents. */
export function Uptime({ deploymentId }: { deploymentId: string }) {
  const { org } = useConsole();
  const trpc = useTRPC();
  const [window, setWindow] = useState<"24h" | "30d">("24h");
  const slo = useQuery({
    ...trpc.slo.deployment.queryOptions({ orgId: org.id, deploymentId, window }),
    refetchInterval: 30_000,
  });
  if (slo.isLoading) return <Loading what="uptime" />;
  const s = slo.data;
  if (!s) return null;
  const bars = s.bars.map((b) => ({
    t: new Date(b.start).getTime(),
    availability: b.availability === null ? null : Math.round(b.availability * 100_000) / 1000,
  }));
  return (
    <>
      <div className="row" style={{ justifyContent: "space-between" }}>
        <p>
          Availability <strong data-testid="availability">{pct(s.availability)}</strong> (target{" "}
          {pct(s.target, 1)}), error budget left <strong>{pct(s.errorBudgetRemaining, 1)}</strong>; p50{" "}
          {ms(s.latencyMs.p50)}, p95 {ms(s.latencyMs.p95)}, p99 {ms(s.latencyMs.p99)}; {s.requests.total}{" "}
          requests, {s.probes.total} probes.
        </p>
        <SelectField
          label="Window"
          value={window}
          onChange={(e) => setWindow(e.target.value as "24h" | "30d")}
        >
          <option value="24h">Last 24 hours</option>
          <option value="30d">Last 30 days</option>
        </SelectField>
      </div>
      <figure className="panel" style={{ margin: "0 0 1rem" }} aria-label="Availability per period">
        <figcaption>
          <strong>Availability per {window === "24h" ? "hour" : "day"}</strong>
        </figcaption>
        <div style={{ width: "100%", height: 180 }}>
          <ResponsiveContainer>
            <BarChart data={bars} margin={{ top: 8, right: 8, bottom: 0, left: -10 }}>
              <CartesianGrid strokeDasharray="3 3" stroke="#e5e7eb" />
              <XAxis
                dataKey="t"
                tickFormatter={(t) =>
                  window === "24h"
                    ? new Date(t).toLocaleTimeString([], { hour: "2-digit" })
                    : new Date(t).toLocaleDateString()
                }
                fontSize={11}
              />
              <YAxis domain={[0, 100]} unit="%" fontSize={11} />
              <Tooltip labelFormatter={(t) => new Date(Number(t)).toLocaleString()} />
              <Bar dataKey="availability" name="availability %" fill="#067647" isAnimationActive={false} />
            </BarChart>
          </ResponsiveContainer>
        </div>
      </figure>
      <DataTable
        label="Incidents"
        empty="No incidents in this window."
        rows={s.incidents}
        rowKey={(i) => i.id}
        columns={[
          { header: "Opened", cell: (i) => <When at={i.openedAt} /> },
          {
            header: "Closed",
            cell: (i) => (i.closedAt ? <When at={i.closedAt} /> : <span className="badge bad">open</span>),
          },
          { header: "Reason", cell: (i) => i.reason },
          { header: "Failed probes", cell: (i) => i.failedProbes },
        ]}
      />
    </>
  );
}
