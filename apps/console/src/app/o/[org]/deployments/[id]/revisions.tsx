"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { DataTable } from "@/components/data-table";
import { FormError } from "@/components/form";
import { StateBadge } from "@/components/state-badge";
import { Loading, When } from "@/components/when";
import { configDiff } from "@/lib/config-diff";
import { shownError } from "@/lib/errors";
import { atLeast, useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";
import type { DeploymentView, RevisionView } from "./types";

/** Revision history: what changed between two revisions, and one-click rollback to any of them. */
export function Revisions({
  dep,
  onRolledBack,
}: {
  dep: DeploymentView;
  onRolledBack: (jobId: string) => void;
}) {
  const { org } = useConsole();
  const trpc = useTRPC();
  const qc = useQueryClient();
  const input = { orgId: org.id, deploymentId: dep.id };
  const revisions = useQuery({ ...trpc.deployments.revisions.queryOptions(input), refetchInterval: 5_000 });
  const [compare, setCompare] = useState<RevisionView | null>(null);
  const [confirm, setConfirm] = useState<RevisionView | null>(null);
  const rollback = useMutation(
    trpc.deployments.rollback.mutationOptions({
      onSuccess: (r) => {
        qc.invalidateQueries({ queryKey: trpc.deployments.pathKey() });
        setConfirm(null);
        onRolledBack(r.jobId);
      },
    }),
  );
  const canRollBack = atLeast(org.role, "admin");
  if (revisions.isLoading) return <Loading what="revisions" />;
  const rows = revisions.data ?? [];
  const current = rows.find((r) => r.id === dep.desiredRevisionId) ?? rows[0];
  const diff = compare && current ? configDiff(compare.config, current.config) : [];

  return (
    <>
      <FormError error={shownError(revisions.error ?? rollback.error)} />
      <DataTable
        label="Revisions"
        rows={rows}
        rowKey={(r) => r.id}
        columns={[
          {
            header: "Version",
            cell: (r) => (
              <>
                v{r.version}
                {r.id === dep.liveRevisionId ? <span className="badge ok"> serving</span> : null}
              </>
            ),
          },
          { header: "State", cell: (r) => <StateBadge state={r.state} /> },
          { header: "Created", cell: (r) => <When at={r.createdAt} /> },
          {
            header: "Entry",
            cell: (r) => <code>{String((r.config as { entry?: string }).entry ?? "")}</code>,
          },
          { header: "Failure", cell: (r) => r.failureReason ?? "" },
          {
            header: "",
            cell: (r) =>
              r.id === current?.id ? (
                <span className="muted">current</span>
              ) : (
                <div className="row">
                  <button type="button" className="secondary" onClick={() => setCompare(r)}>
                    Diff with v{current?.version}
                  </button>
                  {canRollBack ? (
                    <button type="button" className="secondary" onClick={() => setConfirm(r)}>
                      Roll back to v{r.version}
                    </button>
                  ) : null}
                </div>
              ),
          },
        ]}
      />
      {confirm ? (
        <div className="panel" role="alertdialog" aria-labelledby="rollback-title">
          <p id="rollback-title">
            Roll back to v{confirm.version}? Its code and config become a new revision (v
            {(rows[0]?.version ?? 0) + 1}), rolled out without downtime.
          </p>
          <div className="row">
            <button
              type="button"
              disabled={rollback.isPending}
              onClick={() => rollback.mutate({ ...input, revisionId: confirm.id, prevVersion: dep.version })}
            >
              Roll back
            </button>
            <button type="button" className="secondary" onClick={() => setConfirm(null)}>
              Cancel
            </button>
          </div>
        </div>
      ) : null}
      {compare && current ? (
        <section className="panel" aria-label="Config diff">
          <h3>
            Config: v{compare.version} → v{current.version}
          </h3>
          {diff.length === 0 ? (
            <p className="muted">Same config (the code may differ).</p>
          ) : (
            <DataTable
              label="Config differences"
              rows={diff}
              rowKey={(d) => d.path}
              columns={[
                { header: "Field", cell: (d) => <code>{d.path}</code> },
                {
                  header: `v${compare.version}`,
                  cell: (d) => <code className="field-error">{d.before ?? "—"}</code>,
                },
                {
                  header: `v${current.version}`,
                  cell: (d) => <code style={{ color: "var(--ok)" }}>{d.after ?? "—"}</code>,
                },
              ]}
            />
          )}
          <button type="button" className="secondary" onClick={() => setCompare(null)}>
            Close
          </button>
        </section>
      ) : null}
    </>
  );
}
