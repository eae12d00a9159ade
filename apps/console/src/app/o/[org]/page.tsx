"use client";

import { useQuery } from "@tanstack/react-query";
import Link from "next/link";
import { DataTable } from "@/components/data-table";
import { FormError } from "@/components/form";
import { StateBadge } from "@/components/state-badge";
import { Loading, When } from "@/components/when";
import { shownError } from "@/lib/errors";
import { useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";

export default function DeploymentsOverview() {
  const { org } = useConsole();
  const trpc = useTRPC();
  const apps = useQuery(trpc.applications.list.queryOptions({ orgId: org.id }));
  const deps = useQuery({ ...trpc.deployments.list.queryOptions({ orgId: org.id }), refetchInterval: 5_000 });
  const base = `/o/${org.slug}`;
  const appName = new Map((apps.data ?? []).map((a) => [a.id, a.name]));

  return (
    <>
      <div className="row" style={{ justifyContent: "space-between" }}>
        <h1>Deployments</h1>
        <Link className="button" href={`${base}/deploy`}>
          Deploy a handler
        </Link>
      </div>
      <FormError error={shownError(deps.error ?? apps.error)} />
      {deps.isLoading ? <Loading what="deployments" /> : null}
      {deps.data && deps.data.length === 0 ? (
        <div className="panel" data-testid="empty-deployments">
          <h2>Deploy your first handler</h2>
          <p>
            A handler is a class whose methods become HTTP routes. Try the example that ships with Tessera (
            <code>examples/ts-dataframe/handler.ts</code>):
          </p>
          <ol>
            <li>
              <Link href={`${base}/clusters`}>Create a cluster</Link> (where replicas run) — or let the deploy
              form create one for you.
            </li>
            <li>
              <Link href={`${base}/deploy`}>Deploy</Link>: runtime <code>node</code>, paste the handler, entry{" "}
              <code>handler.ts:Dataframe</code>.
            </li>
            <li>
              <Link href={`${base}/keys`}>Create an API key</Link> and call{" "}
              <code>POST /v1/{org.slug}/&lt;app&gt;/deduplicate</code>.
            </li>
          </ol>
        </div>
      ) : null}
      <DataTable
        label="Deployments"
        rows={deps.data}
        rowKey={(d) => d.id}
        columns={[
          { header: "Deployment", cell: (d) => <Link href={`${base}/deployments/${d.id}`}>{d.name}</Link> },
          { header: "Application", cell: (d) => appName.get(d.applicationId) ?? "…" },
          { header: "State", cell: (d) => <StateBadge state={d.state} /> },
          { header: "Version", cell: (d) => `v${d.version}` },
          { header: "Replicas", cell: (d) => d.targetReplicas },
          { header: "Updated", cell: (d) => <When at={d.updatedAt} /> },
        ]}
      />
    </>
  );
}
