"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { CopyButton } from "@/components/copy-button";
import { FormError, TextField } from "@/components/form";
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
      {keys.data && keys.data.length === 0 ? (
        <div className="panel empty">No API keys yet. Create one to call your deployments.</div>
      ) : null}
      {keys.data && keys.data.length > 0 ? (
        <div className="panel table-wrap">
          <table>
            <thead>
              <tr>
                <th>Name</th>
                <th>Key</th>
                <th>Created</th>
                <th>Last used</th>
                <th>Status</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {keys.data.map((k) => (
                <tr key={k.id}>
                  <td>{k.name}</td>
                  <td>
                    <code>{k.prefix}…</code>
                  </td>
                  <td>
                    <When at={k.createdAt} />
                  </td>
                  <td>
                    <When at={k.lastUsedAt} />
                  </td>
                  <td>
                    {k.revokedAt ? (
                      <span className="badge bad">revoked</span>
                    ) : (
                      <span className="badge ok">active</span>
                    )}
                  </td>
                  <td>
                    {canManage && !k.revokedAt ? (
                      <button
                        type="button"
                        className="secondary"
                        onClick={() => setConfirming({ id: k.id, name: k.name })}
                      >
                        Revoke
                      </button>
                    ) : null}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
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
