"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { DataTable } from "@/components/data-table";
import { FormError, SelectField, TextField } from "@/components/form";
import { numberField } from "@/components/scaling-fields";
import { StateBadge } from "@/components/state-badge";
import { Loading, When } from "@/components/when";
import { shownError } from "@/lib/errors";
import { atLeast, useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";

/** "used / quota" with the share, e.g. "1.5 / 8 (19%)". */
function Usage({ used, quota, unit = "" }: { used: number; quota: number; unit?: string }) {
  const pct = quota > 0 ? Math.round((used / quota) * 100) : 0;
  return (
    <span>
      {Math.round(used * 100) / 100}
      {unit} / {quota}
      {unit} <span className={pct >= 90 ? "field-error" : "muted"}>({pct}%)</span>
    </span>
  );
}

export default function ClustersPage() {
  const { org } = useConsole();
  const trpc = useTRPC();
  const qc = useQueryClient();
  const input = { orgId: org.id };
  const clusters = useQuery({ ...trpc.clusters.list.queryOptions(input), refetchInterval: 5_000 });
  const usage = useQuery({ ...trpc.metrics.clusterUsage.queryOptions(input), refetchInterval: 5_000 });
  const create = useMutation(
    trpc.clusters.create.mutationOptions({
      onSuccess: () => qc.invalidateQueries({ queryKey: trpc.clusters.list.queryKey(input) }),
    }),
  );
  const err = shownError(create.error);
  const fe = err?.fieldErrors ?? {};
  const used = new Map((usage.data ?? []).map((u) => [u.clusterId, u]));
  const zero = { replicas: 0, cpus: 0, memoryMb: 0, gpus: 0, deployments: 0 };

  return (
    <>
      <h1>Clusters</h1>
      <p className="muted">
        A cluster is an isolated serving space with its own quota: every replica of its deployments counts
        against it.
      </p>
      {clusters.isLoading ? <Loading what="clusters" /> : null}
      <FormError error={shownError(clusters.error)} />
      <DataTable
        empty="No clusters yet. Create one below, then deploy into it."
        label="Clusters"
        rows={clusters.data}
        rowKey={(c) => c.id}
        columns={[
          { header: "Name", cell: (c) => c.name },
          {
            header: "State",
            cell: (c) => (
              <>
                <StateBadge state={c.state} />
                {c.stateReason ? <div className="muted">{c.stateReason}</div> : null}
              </>
            ),
          },
          { header: "Driver", cell: (c) => `${c.driver} · ${c.region}` },
          { header: "Deployments", cell: (c) => (used.get(c.id) ?? zero).deployments },
          {
            header: "Replicas",
            cell: (c) => <Usage used={(used.get(c.id) ?? zero).replicas} quota={c.quota.maxReplicas} />,
          },
          {
            header: "CPUs",
            cell: (c) => <Usage used={(used.get(c.id) ?? zero).cpus} quota={c.quota.cpus} />,
          },
          {
            header: "Memory",
            cell: (c) => (
              <Usage used={(used.get(c.id) ?? zero).memoryMb} quota={c.quota.memoryMb} unit=" MB" />
            ),
          },
          {
            header: "GPUs",
            cell: (c) => <Usage used={(used.get(c.id) ?? zero).gpus} quota={c.quota.gpus} />,
          },
          { header: "Created", cell: (c) => <When at={c.createdAt} /> },
        ]}
      />
      {atLeast(org.role, "admin") ? (
        <form
          className="panel"
          aria-label="Create a cluster"
          noValidate
          onSubmit={(e) => {
            e.preventDefault();
            const f = new FormData(e.currentTarget);
            create.mutate({
              ...input,
              name: String(f.get("name") ?? "").trim(),
              driver: String(f.get("driver")) as "local" | "kubernetes",
              region: String(f.get("region") ?? "").trim() || undefined,
              quota: {
                cpus: numberField(f.get("cpus")) as number,
                memoryMb: numberField(f.get("memoryMb")) as number,
                gpus: numberField(f.get("gpus")) as number,
                maxReplicas: numberField(f.get("maxReplicas")) as number,
              },
            });
          }}
        >
          <h2>Create a cluster</h2>
          <div className="grid2">
            <TextField
              label="Name"
              name="name"
              defaultValue={clusters.data?.length ? "" : "main"}
              error={fe.name}
            />
            <SelectField label="Driver" name="driver" defaultValue="local" error={fe.driver}>
              <option value="local">local (processes on this host)</option>
              <option value="kubernetes">kubernetes</option>
            </SelectField>
            <TextField label="Region" name="region" defaultValue="local" error={fe.region} />
            <TextField
              label="CPU quota"
              name="cpus"
              type="number"
              step="0.5"
              defaultValue="8"
              error={fe["quota.cpus"]}
            />
            <TextField
              label="Memory quota (MB)"
              name="memoryMb"
              type="number"
              defaultValue="16384"
              error={fe["quota.memoryMb"]}
            />
            <TextField
              label="GPU quota"
              name="gpus"
              type="number"
              step="0.1"
              defaultValue="0"
              error={fe["quota.gpus"]}
            />
            <TextField
              label="Max replicas"
              name="maxReplicas"
              type="number"
              defaultValue="20"
              error={fe["quota.maxReplicas"]}
            />
          </div>
          {err && Object.keys(fe).length === 0 ? <FormError error={err} /> : null}
          <button type="submit" disabled={create.isPending}>
            Create cluster
          </button>
        </form>
      ) : null}
    </>
  );
}
