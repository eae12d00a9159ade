"use client";

import { useMutation, useQuery } from "@tanstack/react-query";
import Link from "next/link";
import { useParams, useRouter, useSearchParams } from "next/navigation";
import { Suspense, useState } from "react";
import { DataTable } from "@/components/data-table";
import { FormError } from "@/components/form";
import { StateBadge } from "@/components/state-badge";
import { Loading, When } from "@/components/when";
import { shownError } from "@/lib/errors";
import { atLeast, useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";
import { TrafficCharts } from "./charts";
import { Logs } from "./logs";
import { DeployProgress } from "./progress";
import { Revisions } from "./revisions";
import { ScalingSettings } from "./settings";
import { Endpoint } from "./try-it";
import { Uptime } from "./uptime";

const TABS = ["Metrics", "Uptime", "Replicas", "Revisions", "Logs", "Scaling events", "Settings"] as const;
type Tab = (typeof TABS)[number];

function Replicas({ deploymentId }: { deploymentId: string }) {
  const { org } = useConsole();
  const trpc = useTRPC();
  const [includeStopped, setIncludeStopped] = useState(false);
  const replicas = useQuery({
    ...trpc.deployments.replicas.queryOptions({ orgId: org.id, deploymentId, includeStopped }),
    refetchInterval: 2_000,
  });
  return (
    <>
      <label>
        <input
          type="checkbox"
          checked={includeStopped}
          onChange={(e) => setIncludeStopped(e.target.checked)}
        />{" "}
        Include stopped and failed replicas
      </label>
      <DataTable
        empty="No replicas running."
        label="Replicas"
        rows={replicas.data}
        rowKey={(r) => r.id}
        columns={[
          { header: "Replica", cell: (r) => <code>{r.id.slice(0, 8)}</code> },
          { header: "State", cell: (r) => <StateBadge state={r.state} /> },
          { header: "Reason", cell: (r) => r.stateReason ?? "" },
          { header: "Restarts", cell: (r) => r.restarts },
          { header: "Started", cell: (r) => <When at={r.startedAt} /> },
          { header: "Ready", cell: (r) => <When at={r.readyAt} /> },
        ]}
      />
    </>
  );
}

function ScalingEvents({ deploymentId }: { deploymentId: string }) {
  const { org } = useConsole();
  const trpc = useTRPC();
  const events = useQuery({
    ...trpc.deployments.scalingEvents.queryOptions({ orgId: org.id, deploymentId }),
    refetchInterval: 5_000,
  });
  return (
    <DataTable
      empty="No scaling events yet. Deploys, the autoscaler and scaling changes record them here."
      label="Scaling events"
      rows={events.data}
      rowKey={(e) => e.id}
      columns={[
        { header: "When", cell: (e) => <When at={e.at} /> },
        { header: "Change", cell: (e) => `${e.fromReplicas} → ${e.toReplicas}` },
        { header: "Reason", cell: (e) => e.reason },
      ]}
    />
  );
}

function DeploymentDetail() {
  const { id } = useParams<{ id: string }>();
  const params = useSearchParams();
  const router = useRouter();
  const { org } = useConsole();
  const trpc = useTRPC();
  const [jobId, setJobId] = useState<string | null>(params.get("job"));
  const [tab, setTab] = useState<Tab>("Metrics");
  const dep = useQuery({
    ...trpc.deployments.get.queryOptions({ orgId: org.id, deploymentId: id }),
    refetchInterval: 2_000,
  });
  const app = useQuery({
    ...trpc.applications.get.queryOptions({ orgId: org.id, applicationId: dep.data?.applicationId ?? id }),
    enabled: !!dep.data,
  });
  const remove = useMutation(
    trpc.deployments.delete.mutationOptions({ onSuccess: () => router.push(`/o/${org.slug}`) }),
  );
  const [confirmDelete, setConfirmDelete] = useState(false);

  if (dep.isLoading) return <Loading what="the deployment" />;
  if (!dep.data) return <FormError error={shownError(dep.error)} />;
  const d = dep.data;
  return (
    <>
      <p>
        <Link href={`/o/${org.slug}`}>← Deployments</Link>
      </p>
      <h1>
        {app.data?.name ?? "…"} / {d.name} <StateBadge state={d.state} />
      </h1>
      <p className="muted">
        Version {d.version} · target {d.targetReplicas} replicas{d.stateReason ? ` · ${d.stateReason}` : ""}
      </p>
      <DeployProgress dep={d} jobId={jobId} />
      {app.data ? <Endpoint deploymentId={d.id} appName={app.data.name} /> : null}
      <div className="tabs" role="tablist" aria-label="Deployment details">
        {TABS.map((t) => (
          <button key={t} type="button" role="tab" aria-selected={tab === t} onClick={() => setTab(t)}>
            {t}
          </button>
        ))}
      </div>
      <div role="tabpanel" aria-label={tab}>
        {tab === "Metrics" ? <TrafficCharts deploymentId={d.id} /> : null}
        {tab === "Uptime" ? <Uptime deploymentId={d.id} /> : null}
        {tab === "Replicas" ? <Replicas deploymentId={d.id} /> : null}
        {tab === "Revisions" ? <Revisions dep={d} onRolledBack={setJobId} /> : null}
        {tab === "Logs" ? <Logs deploymentId={d.id} /> : null}
        {tab === "Scaling events" ? <ScalingEvents deploymentId={d.id} /> : null}
        {tab === "Settings" ? (
          <>
            <ScalingSettings dep={d} />
            {atLeast(org.role, "admin") ? (
              <div className="panel">
                <h3>Delete deployment</h3>
                <FormError error={shownError(remove.error)} />
                {confirmDelete ? (
                  <div className="row" role="alertdialog" aria-label="Confirm delete">
                    <span>Stop every replica and delete {d.name}?</span>
                    <button
                      type="button"
                      className="danger"
                      onClick={() => remove.mutate({ orgId: org.id, deploymentId: d.id })}
                    >
                      Yes, delete
                    </button>
                    <button type="button" className="secondary" onClick={() => setConfirmDelete(false)}>
                      Cancel
                    </button>
                  </div>
                ) : (
                  <button type="button" className="danger" onClick={() => setConfirmDelete(true)}>
                    Delete…
                  </button>
                )}
              </div>
            ) : null}
          </>
        ) : null}
      </div>
    </>
  );
}

export default function DeploymentPage() {
  return (
    <Suspense fallback={<Loading what="the deployment" />}>
      <DeploymentDetail />
    </Suspense>
  );
}
