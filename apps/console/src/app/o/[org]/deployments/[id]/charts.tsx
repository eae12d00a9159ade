"use client";

import { useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { CartesianGrid, Legend, Line, LineChart, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { SelectField } from "@/components/form";
import { Loading } from "@/components/when";
import { useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";

const WINDOWS = [
  [15, "Last 15 minutes"],
  [60, "Last hour"],
  [360, "Last 6 hours"],
  [1440, "Last 24 hours"],
] as const;

const time = (t: number) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

function Chart({
  title,
  data,
  lines,
  unit,
  step,
}: {
  title: string;
  data: Record<string, number | null>[];
  lines: [key: string, label: string, color: string][];
  unit?: string;
  step?: boolean;
}) {
  return (
    <figure className="panel" style={{ margin: 0 }} aria-label={title}>
      <figcaption>
        <strong>{title}</strong>
      </figcaption>
      <div style={{ width: "100%", height: 200 }}>
        <ResponsiveContainer>
          <LineChart data={data} margin={{ top: 8, right: 8, bottom: 0, left: -10 }}>
            <CartesianGrid strokeDasharray="3 3" stroke="#e5e7eb" />
            <XAxis
              dataKey="t"
              type="number"
              domain={["dataMin", "dataMax"]}
              tickFormatter={time}
              fontSize={11}
            />
            <YAxis fontSize={11} unit={unit} allowDecimals />
            <Tooltip labelFormatter={(t) => new Date(Number(t)).toLocaleString()} />
            {lines.length > 1 ? <Legend /> : null}
            {lines.map(([key, label, color]) => (
              <Line
                key={key}
                type={step ? "stepAfter" : "monotone"}
                dataKey={key}
                name={label}
                stroke={color}
                // A lone point draws no line: show dots while there are only a few.
                dot={data.filter((d) => d[key] !== null && d[key] !== undefined).length < 3}
                isAnimationActive={false}
                connectNulls
              />
            ))}
          </LineChart>
        </ResponsiveContainer>
      </div>
    </figure>
  );
}

/** Requests per second, error rate, latency percentiles and replica count over a chosen window. */
export function TrafficCharts({ deploymentId }: { deploymentId: string }) {
  const { org } = useConsole();
  const trpc = useTRPC();
  const [windowMinutes, setWindowMinutes] = useState(60);
  const m = useQuery({
    ...trpc.metrics.deployment.queryOptions({ orgId: org.id, deploymentId, windowMinutes }),
    refetchInterval: 5_000,
  });
  const traffic = (m.data?.traffic ?? []).map((p) => ({ ...p, errorPct: p.errorRate * 100 }));
  return (
    <>
      <div className="row" style={{ justifyContent: "space-between" }}>
        <p data-testid="request-total">
          {m.data ? (
            <>
              <strong>{m.data.totals.requests}</strong> requests, <strong>{m.data.totals.errors}</strong>{" "}
              errors in the window
            </>
          ) : null}
        </p>
        <SelectField
          label="Window"
          value={windowMinutes}
          onChange={(e) => setWindowMinutes(Number(e.target.value))}
        >
          {WINDOWS.map(([v, label]) => (
            <option key={v} value={v}>
              {label}
            </option>
          ))}
        </SelectField>
      </div>
      {m.isLoading ? <Loading what="metrics" /> : null}
      {m.data ? (
        <div className="grid2">
          <Chart title="Requests per second" data={traffic} lines={[["rps", "req/s", "#3b4fd8"]]} />
          <Chart title="Error rate" data={traffic} lines={[["errorPct", "errors", "#b42318"]]} unit="%" />
          <Chart
            title="Latency"
            data={traffic}
            unit="ms"
            lines={[
              ["p50", "p50", "#067647"],
              ["p95", "p95", "#b54708"],
              ["p99", "p99", "#b42318"],
            ]}
          />
          <Chart title="Replicas" data={m.data.replicas} lines={[["replicas", "replicas", "#5d6270"]]} step />
        </div>
      ) : null}
    </>
  );
}
