"use client";

import { useQuery } from "@tanstack/react-query";
import Link from "next/link";
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
      {deps.data && deps.data.length > 0 ? (
        <div className="panel table-wrap">
          <table>
            <thead>
              <tr>
                <th>Deployment</th>
                <th>Application</th>
                <th>State</th>
                <th>Version</th>
                <th>Replicas</th>
                <th>Updated</th>
              </tr>
            </thead>
            <tbody>
              {deps.data.map((d) => (
                <tr key={d.id}>
                  <td>
                    <Link href={`${base}/deployments/${d.id}`}>{d.name}</Link>
                  </td>
                  <td>{appName.get(d.applicationId) ?? "…"}</td>
                  <td>
                    <StateBadge state={d.state} />
                  </td>
                  <td>v{d.version}</td>
                  <td>{d.targetReplicas}</td>
                  <td>
                    <When at={d.updatedAt} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </>
  );
}
