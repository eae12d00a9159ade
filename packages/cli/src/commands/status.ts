import type { ApiClient } from "../client.js";
import type { OrgInfo } from "../org.js";

export interface DeploymentStatusLine {
  application: string;
  deployment: string;
  version: number;
  state: string;
  targetReplicas: number;
  readyReplicas: number;
  reason: string | null;
}

/** One line per deployment of the organisation (or of one application). */
export async function status(
  api: ApiClient,
  org: OrgInfo,
  application?: string,
): Promise<DeploymentStatusLine[]> {
  const apps = (await api.applications.list.query({ orgId: org.id })).filter(
    (a) => !application || a.name === application,
  );
  const out: DeploymentStatusLine[] = [];
  for (const app of apps) {
    const deployments = await api.deployments.list.query({ orgId: org.id, applicationId: app.id });
    for (const d of deployments) {
      const reps = await api.deployments.replicas.query({ orgId: org.id, deploymentId: d.id });
      out.push({
        application: app.name,
        deployment: d.name,
        version: d.version,
        state: d.state,
        targetReplicas: d.targetReplicas,
        readyReplicas: reps.filter((r) => r.state === "ready").length,
        reason: d.stateReason,
      });
    }
  }
  return out;
}

export function formatStatus(lines: DeploymentStatusLine[]): string {
  if (lines.length === 0) return "no deployments yet: `tessera deploy examples/python-dataframe`";
  const rows = [
    ["APPLICATION", "DEPLOYMENT", "VERSION", "STATE", "REPLICAS", "REASON"],
    ...lines.map((l) => [
      l.application,
      l.deployment,
      String(l.version),
      l.state,
      `${l.readyReplicas}/${l.targetReplicas}`,
      l.reason ?? "",
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}
