"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useRouter } from "next/navigation";
import { CopyButton } from "@/components/copy-button";
import { DataTable } from "@/components/data-table";
import { FormError, SelectField, TextField } from "@/components/form";
import { StateBadge } from "@/components/state-badge";
import { Loading, When } from "@/components/when";
import { shownError } from "@/lib/errors";
import { atLeast, type Role, useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";

const ROLES: Role[] = ["member", "admin", "owner"];

export default function MembersPage() {
  const { org, user } = useConsole();
  const trpc = useTRPC();
  const qc = useQueryClient();
  const router = useRouter();
  const input = { orgId: org.id };
  const members = useQuery(trpc.members.list.queryOptions(input));
  const invitations = useQuery(trpc.invitations.list.queryOptions(input));
  const refresh = () => {
    qc.invalidateQueries({ queryKey: trpc.members.list.queryKey(input) });
    qc.invalidateQueries({ queryKey: trpc.invitations.list.queryKey(input) });
  };
  const invite = useMutation(trpc.invitations.create.mutationOptions({ onSuccess: refresh }));
  const revokeInvite = useMutation(trpc.invitations.revoke.mutationOptions({ onSuccess: refresh }));
  const setRole = useMutation(trpc.members.setRole.mutationOptions({ onSuccess: refresh }));
  const remove = useMutation(trpc.members.remove.mutationOptions({ onSuccess: refresh }));
  const leave = useMutation(
    trpc.members.leave.mutationOptions({ onSuccess: () => router.push("/dashboard") }),
  );
  const isAdmin = atLeast(org.role, "admin");
  const isOwner = org.role === "owner";
  const inviteErr = shownError(invite.error);
  const inviteLink = invite.data ? `${window.location.origin}/invite/${invite.data.token}` : null;
  const actionErr = shownError(setRole.error ?? remove.error ?? leave.error ?? revokeInvite.error);

  return (
    <>
      <h1>Members of {org.name}</h1>
      <FormError error={actionErr} />
      {members.isLoading ? <Loading what="members" /> : null}
      {members.data ? (
        <DataTable
          label="Members"
          rows={members.data}
          rowKey={(m) => m.userId}
          columns={[
            {
              header: "Email",
              cell: (m) => (
                <>
                  {m.email}
                  {m.name ? <span className="muted"> ({m.name})</span> : null}
                </>
              ),
            },
            {
              header: "Role",
              cell: (m) =>
                isOwner ? (
                  <select
                    aria-label={`Role of ${m.email}`}
                    value={m.role}
                    onChange={(e) =>
                      setRole.mutate({ ...input, userId: m.userId, role: e.target.value as Role })
                    }
                  >
                    {ROLES.map((r) => (
                      <option key={r}>{r}</option>
                    ))}
                  </select>
                ) : (
                  <span className="badge">{m.role}</span>
                ),
            },
            { header: "Joined", cell: (m) => <When at={m.joinedAt} /> },
            {
              header: "",
              cell: (m) =>
                m.email === user.email ? (
                  <button type="button" className="secondary" onClick={() => leave.mutate(input)}>
                    Leave
                  </button>
                ) : isAdmin ? (
                  <button
                    type="button"
                    className="secondary"
                    onClick={() => remove.mutate({ ...input, userId: m.userId })}
                  >
                    Remove
                  </button>
                ) : null,
            },
          ]}
        />
      ) : null}

      <h2>Invitations</h2>
      {isAdmin ? (
        <form
          className="panel"
          onSubmit={(e) => {
            e.preventDefault();
            const f = new FormData(e.currentTarget);
            invite.mutate({
              ...input,
              email: String(f.get("email") ?? ""),
              role: String(f.get("role")) as Role,
            });
          }}
          noValidate
        >
          <div className="row">
            <TextField
              label="Email"
              name="email"
              type="email"
              required
              error={inviteErr?.fieldErrors.email}
            />
            <SelectField label="Role" name="role" defaultValue="member" error={inviteErr?.fieldErrors.role}>
              {ROLES.filter((r) => r !== "owner" || isOwner).map((r) => (
                <option key={r}>{r}</option>
              ))}
            </SelectField>
            <div className="field">
              <button type="submit" disabled={invite.isPending}>
                Invite
              </button>
            </div>
          </div>
          {inviteErr && !inviteErr.fieldErrors.email ? <FormError error={inviteErr} /> : null}
          {inviteLink ? (
            <div role="status">
              <p>
                Send this link to <strong>{invite.data?.invitation.email}</strong> (valid 7 days, shown once):
              </p>
              <div className="secret">
                <code data-testid="invite-link">{inviteLink}</code>
                <CopyButton text={inviteLink} />
              </div>
            </div>
          ) : null}
        </form>
      ) : (
        <p className="muted">Admins and owners can invite people.</p>
      )}
      <DataTable
        empty="No invitations yet."
        label="Invitations"
        rows={invitations.data}
        rowKey={(i) => i.id}
        columns={[
          { header: "Email", cell: (i) => i.email },
          { header: "Role", cell: (i) => i.role },
          { header: "State", cell: (i) => <StateBadge state={i.state} /> },
          { header: "Expires", cell: (i) => <When at={i.expiresAt} /> },
          {
            header: "",
            cell: (i) =>
              isAdmin && i.state === "pending" ? (
                <button
                  type="button"
                  className="secondary"
                  onClick={() => revokeInvite.mutate({ ...input, invitationId: i.id })}
                >
                  Revoke
                </button>
              ) : null,
          },
        ]}
      />
    </>
  );
}
