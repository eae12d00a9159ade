"use client";

import { useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { DataTable } from "@/components/data-table";
import { FormError, SelectField } from "@/components/form";
import { When } from "@/components/when";
import { shownError } from "@/lib/errors";
import { count, percent } from "@/lib/format";
import { useTRPC } from "@/lib/trpc";

const WINDOWS = [
  [1, "Last hour"],
  [24, "Last 24 hours"],
  [24 * 7, "Last 7 days"],
] as const;

/**
 * What the platform overview adds to the admin page: request and error rate per organisation
 * (from the hourly rollup), open uptime incidents and failed environment builds.
 */
export function PlatformHealth() {
  const trpc = useTRPC();
  const [windowHours, setWindowHours] = useState(24);
  const overview = useQuery({
    ...trpc.admin.overview.queryOptions({ windowHours }),
    refetchInterval: 10_000,
  });
  const o = overview.data;
  return (
    <>
      <h3>Traffic per organisation</h3>
      <FormError error={shownError(overview.error)} />
      <SelectField
        label="Traffic window"
        value={String(windowHours)}
        onChange={(e) => setWindowHours(Number(e.target.value))}
      >
        {WINDOWS.map(([h, label]) => (
          <option key={h} value={h}>
            {label}
          </option>
        ))}
      </SelectField>
      <DataTable
        label="Traffic per organisation"
        empty="No metered requests in this window (usage is rolled up every hour)."
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
      <h3>Open incidents</h3>
      <DataTable
        label="Open incidents"
        empty="No open incidents: every probed deployment answers."
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
      <h3>Environment build failures</h3>
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
    </>
  );
}
