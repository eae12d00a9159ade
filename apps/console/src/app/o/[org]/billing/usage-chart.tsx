"use client";

import { useQuery } from "@tanstack/react-query";
import { Bar, BarChart, CartesianGrid, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { Loading } from "@/components/when";
import { count, usd } from "@/lib/format";
import { useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";

export type Prices = Record<
  "requests" | "cpuSeconds" | "gpuSeconds" | "memoryGibSeconds" | "buildSeconds" | "egressBytes",
  number
>;

/** One row of `usage.byDay`: a UTC day and deployment (numbers over JSON). */
type UsageRow = { day: string } & Prices;

interface DayTotal {
  day: string;
  requests: number;
  cpuHours: number;
  cost: number;
}

/** Rows per day and deployment summed per day, priced with the plan's unit prices. */
function dailyTotals(rows: UsageRow[], prices: Prices): DayTotal[] {
  const byDay = new Map<string, DayTotal>();
  for (const r of rows) {
    const d = byDay.get(r.day) ?? { day: r.day, requests: 0, cpuHours: 0, cost: 0 };
    d.requests += Number(r.requests);
    d.cpuHours += Number(r.cpuSeconds) / 3600;
    for (const k of Object.keys(prices) as (keyof Prices)[]) d.cost += Number(r[k]) * prices[k];
    byDay.set(r.day, d);
  }
  return [...byDay.values()].sort((a, b) => a.day.localeCompare(b.day));
}

function DayBars({
  title,
  data,
  dataKey,
  color,
  format,
}: {
  title: string;
  data: DayTotal[];
  dataKey: keyof DayTotal;
  color: string;
  format: (v: number) => string;
}) {
  return (
    <figure className="panel" style={{ margin: 0 }} aria-label={title}>
      <figcaption>
        <strong>{title}</strong>
      </figcaption>
      <div style={{ width: "100%", height: 200 }}>
        <ResponsiveContainer>
          <BarChart data={data} margin={{ top: 8, right: 8, bottom: 0, left: 0 }}>
            <CartesianGrid strokeDasharray="3 3" stroke="#e5e7eb" />
            <XAxis dataKey="day" fontSize={11} />
            <YAxis fontSize={11} tickFormatter={(v) => format(Number(v))} width={70} />
            <Tooltip formatter={(v) => format(Number(v))} />
            <Bar dataKey={dataKey} name={title} fill={color} isAnimationActive={false} />
          </BarChart>
        </ResponsiveContainer>
      </div>
    </figure>
  );
}

/** Usage by day over the last 30 days (`usage.byDay`): requests, CPU core-hours and their cost under the plan. */
export function UsageByDay({ prices }: { prices: Prices }) {
  const { org } = useConsole();
  const trpc = useTRPC();
  const usage = useQuery(trpc.usage.byDay.queryOptions({ orgId: org.id }));
  if (usage.isLoading) return <Loading what="usage by day" />;
  if (!usage.data) return null;
  const days = dailyTotals(usage.data, prices);
  return (
    <section aria-labelledby="usage-by-day">
      <h2 id="usage-by-day">Usage by day (last 30 days)</h2>
      {days.length === 0 ? (
        <p className="panel empty">No metered usage in the last 30 days. Usage is rolled up every hour.</p>
      ) : (
        <div className="grid">
          <DayBars title="Requests per day" data={days} dataKey="requests" color="#2563eb" format={count} />
          <DayBars
            title="CPU core-hours per day"
            data={days}
            dataKey="cpuHours"
            color="#7c3aed"
            format={count}
          />
          <DayBars title="Cost per day" data={days} dataKey="cost" color="#059669" format={usd} />
        </div>
      )}
    </section>
  );
}
