"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { CopyButton } from "@/components/copy-button";
import { DataTable } from "@/components/data-table";
import { FormError, TextField } from "@/components/form";
import { StateBadge } from "@/components/state-badge";
import { Loading, When } from "@/components/when";
import { shownError } from "@/lib/errors";
import { atLeast, useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";

export default function ApiKeysPage() {
  const { org } = useConsole();
  const trpc = useTRPC();
  const qc = useQueryClient();
  const keys = useQuery(trpc.apiKeys.list.queryOptions({ orgId: org.id }));
  const refresh = () => qc.invalidateQueries({ queryKey: trpc.apiKeys.list.queryKey({ orgId: org.id }) });
  const create = useMutation(trpc.apiKeys.create.mutationOptions({ onSuccess: refresh }));
  const revoke = useMutation(trpc.apiKeys.revoke.mutationOptions({ onSuccess: refresh }));
  const [confirming, setConfirming] = useState<{ id: string; name: string } | null>(null);
  const canManage = atLeast(org.role, "admin");
  const createErr = shownError(create.error);

  return (
    <>
      <h1>API keys</h1>
      <p className="muted">
        Keys authenticate calls to your deployments through the gateway (
        <code>Authorization: Bearer tsk_…</code>) and to the API from the CLI. Tessera stores only a hash: a
        key is shown once, when you create it.
      </p>
      {canManage ? (
        <form
          className="panel"
          onSubmit={(e) => {
            e.preventDefault();
            const name = String(new FormData(e.currentTarget).get("name") ?? "");
            create.mutate({ orgId: org.id, name });
          }}
        >
          <div className="row">
            <TextField
              label="Key name"
              name="name"
              placeholder="e.g. production"
              required
              error={createErr?.fieldErrors.name}
            />
            <div className="field">
              <button type="submit" disabled={create.isPending}>
                Create key
              </button>
            </div>
          </div>
          {createErr && !createErr.fieldErrors.name ? <FormError error={createErr} /> : null}
        </form>
      ) : (
        <p className="panel muted">Only admins and owners of {org.name} can create or revoke keys.</p>
      )}
      {create.data ? (
        <div className="panel" role="status" data-testid="new-key">
          <strong>Copy your new key now — it will not be shown again.</strong>
          <div className="secret">
            <code data-testid="new-key-value">{create.data.key}</code>
            <CopyButton text={create.data.key} />
            <button type="button" className="secondary" onClick={() => create.reset()}>
              Done
            </button>
          </div>
        </div>
      ) : null}
      {keys.isLoading ? <Loading what="API keys" /> : null}
      <FormError error={shownError(keys.error) ?? shownError(revoke.error)} />
      <DataTable
        empty="No API keys yet. Create one to call your deployments."
        label="API keys"
        rows={keys.data}
        rowKey={(k) => k.id}
        columns={[
          { header: "Name", cell: (k) => k.name },
          { header: "Key", cell: (k) => <code>{k.prefix}…</code> },
          { header: "Created", cell: (k) => <When at={k.createdAt} /> },
          { header: "Last used", cell: (k) => <When at={k.lastUsedAt} /> },
          {
            header: "Status",
            cell: (k) => <StateBadge state={k.revokedAt ? "revoked" : "active"} />,
          },
          {
            header: "",
            cell: (k) =>
              canManage && !k.revokedAt ? (
                <button
                  type="button"
                  className="secondary"
                  onClick={() => setConfirming({ id: k.id, name: k.name })}
                >
                  Revoke
                </button>
              ) : null,
          },
        ]}
      />
      {confirming ? (
        <div className="panel" role="alertdialog" aria-labelledby="revoke-title">
          <p id="revoke-title">
            Revoke <strong>{confirming.name}</strong>? Requests using it are refused from now on. This cannot
            be undone.
          </p>
          <div className="row">
            <button
              type="button"
              className="danger"
              disabled={revoke.isPending}
              onClick={async () => {
                await revoke.mutateAsync({ orgId: org.id, apiKeyId: confirming.id }).catch(() => undefined);
                setConfirming(null);
              }}
            >
              Yes, revoke
            </button>
            <button type="button" className="secondary" onClick={() => setConfirming(null)}>
              Cancel
            </button>
          </div>
        </div>
      ) : null}
    </>
  );
}
