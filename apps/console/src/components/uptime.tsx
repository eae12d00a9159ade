"use client";

import { useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { DataTable } from "@/components/data-table";
import { FormError } from "@/components/form";
import { Loading, When } from "@/components/when";
import { shownError } from "@/lib/errors";
import { count, ms, percent } from "@/lib/format";
import { useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";

export type SloWindow = "24h" | "30d";

export function WindowSwitch({ value, onChange }: { value: SloWindow; onChange: (w: SloWindow) => void }) {
  return (
    <div className="tabs" role="tablist" aria-label="SLO window">
      {(["24h", "30d"] as const).map((w) => (
        <button key={w} type="button" role="tab" aria-selected={value === w} onClick={() => onChange(w)}>
          {w === "24h" ? "Last 24 hours" : "Last 30 days"}
        </button>
      ))}
    </div>
  );
}

interface Bar {
  start: string | Date;
  probes: number;
  okProbes: number;
  requests: number;
  errors: number;
  availability: number | null;
}

/** Below the target is amber, below 99 % red; grey where nothing was measured. */
function barColour(availability: number | null, target: number): string {
  if (availability === null) return "#d1d5db";
  if (availability >= target) return "#16a34a";
  return availability >= 0.99 ? "#f59e0b" : "#dc2626";
}

/** One coloured bar per hour (24 h) or day (30 d); the title tells what each bar measured. */
export function UptimeBars({ bars, target, window }: { bars: Bar[]; target: number; window: SloWindow }) {
  const label = (b: Bar) => {
    const at = new Date(b.start);
    const when = window === "24h" ? at.toLocaleString() : at.toLocaleDateString();
    return b.availability === null
      ? `${when}: no data`
      : `${when}: ${percent(b.availability)} (${b.okProbes}/${b.probes} probes ok, ${b.requests - b.errors}/${b.requests} requests ok)`;
  };
  return (
    <div
      role="img"
      aria-label={`Uptime per ${window === "24h" ? "hour" : "day"}`}
      style={{ display: "flex", gap: 2, height: 32, alignItems: "stretch" }}
    >
      {bars.map((b) => (
        <span
          key={String(b.start)}
          title={label(b)}
          style={{ flex: 1, minWidth: 2, borderRadius: 2, background: barColour(b.availability, target) }}
        />
      ))}
    </div>
  );
}

interface Incident {
  id: string;
  openedAt: string | Date;
  closedAt: string | Date | null;
  reason: string;
  failedProbes: number;
}

export function IncidentsTable({
  incidents,
  label = "Incidents",
}: {
  incidents: Incident[] | undefined;
  label?: string;
}) {
  return (
    <DataTable
      label={label}
      empty="No incidents: every probe in this window answered."
      rows={incidents}
      rowKey={(i) => i.id}
      columns={[
        { header: "Opened", cell: (i) => <When at={i.openedAt} /> },
        { header: "Closed", cell: (i) => (i.closedAt ? <When at={i.closedAt} /> : <strong>ongoing</strong>) },
        { header: "Failed probes", cell: (i) => i.failedProbes },
        { header: "Reason", cell: (i) => i.reason },
      ]}
    />
  );
}

/** A deployment's uptime: bars, availability against the target, latency percentiles and incidents. */
export function DeploymentUptime({ deploymentId }: { deploymentId: string }) {
  const { org } = useConsole();
  const trpc = useTRPC();
  const [window, setWindow] = useState<SloWindow>("24h");
  const slo = useQuery({
    ...trpc.slo.deployment.queryOptions({ orgId: org.id, deploymentId, window }),
    refetchInterval: 60_000,
  });
  const s = slo.data;
  return (
    <section aria-label="Uptime">
      <WindowSwitch value={window} onChange={setWindow} />
      <FormError error={shownError(slo.error)} />
      {slo.isLoading ? <Loading what="uptime" /> : null}
      {s ? (
        <>
          <div className="panel">
            <UptimeBars bars={s.bars} target={s.target} window={window} />
            <p className="muted">
              <When at={s.from} /> – <When at={s.to} />
            </p>
          </div>
          <DataTable
            label="Availability and latency"
            rows={[
              { name: "Availability", value: percent(s.availability, 3) },
              { name: "Target", value: percent(s.target, 1) },
              { name: "Error budget left", value: percent(s.errorBudgetRemaining, 1) },
              { name: "Probes ok", value: `${count(s.probes.ok)} / ${count(s.probes.total)}` },
              {
                name: "Requests ok",
                value: `${count(s.requests.total - s.requests.errors)} / ${count(s.requests.total)}`,
              },
              { name: "Latency p50", value: ms(s.latencyMs.p50) },
              { name: "Latency p95", value: ms(s.latencyMs.p95) },
              { name: "Latency p99", value: ms(s.latencyMs.p99) },
            ]}
            rowKey={(r) => r.name}
            columns={[
              { header: "Measure", cell: (r) => r.name },
              { header: window === "24h" ? "Last 24 hours" : "Last 30 days", cell: (r) => r.value },
            ]}
          />
          <h3>Incidents</h3>
          <IncidentsTable incidents={s.incidents} />
        </>
      ) : null}
    </section>
  );
}
