import { DataTable } from "@/components/data-table";
import { limit } from "@/lib/format";

const LIMIT_LABELS = [
  ["maxDeployments", "Deployments"],
  ["maxReplicas", "Replicas at once"],
  ["maxCpus", "CPU cores at once"],
  ["maxGpus", "GPUs at once"],
  ["monthlyRequests", "Requests per month"],
  ["requestsPerMinute", "Requests per minute"],
] as const;

type Limits = Record<(typeof LIMIT_LABELS)[number][0], number | null>;

/** The plan's limits as the API reports them (null: none). */
export function PlanLimits({ limits }: { limits: Limits }) {
  return (
    <DataTable
      label="Plan limits"
      rows={LIMIT_LABELS.map(([key, label]) => ({ key, label, value: limits[key] }))}
      rowKey={(r) => r.key}
      columns={[
        { header: "Limit", cell: (r) => r.label },
        { header: "Value", cell: (r) => limit(r.value) },
      ]}
    />
  );
}
