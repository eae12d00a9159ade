"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useRouter } from "next/navigation";
import { CopyButton } from "@/components/copy-button";
import { FormError, SelectField, TextField } from "@/components/form";
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
        <div className="panel table-wrap">
          <table>
            <thead>
              <tr>
                <th>Email</th>
                <th>Role</th>
                <th>Joined</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {members.data.map((m) => (
                <tr key={m.userId}>
                  <td>
                    {m.email}
                    {m.name ? <span className="muted"> ({m.name})</span> : null}
                  </td>
                  <td>
                    {isOwner ? (
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
                    )}
                  </td>
                  <td>
                    <When at={m.joinedAt} />
                  </td>
                  <td>
                    {m.email === user.email ? (
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
                    ) : null}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
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
      {invitations.data && invitations.data.length === 0 ? (
        <p className="muted">No invitations yet.</p>
      ) : null}
      {invitations.data && invitations.data.length > 0 ? (
        <div className="panel table-wrap">
          <table>
            <thead>
              <tr>
                <th>Email</th>
                <th>Role</th>
                <th>State</th>
                <th>Expires</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {invitations.data.map((i) => (
                <tr key={i.id}>
                  <td>{i.email}</td>
                  <td>{i.role}</td>
                  <td>
                    <span
                      className={`badge ${i.state === "accepted" ? "ok" : i.state === "pending" ? "busy" : "bad"}`}
                    >
                      {i.state}
                    </span>
                  </td>
                  <td>
                    <When at={i.expiresAt} />
                  </td>
                  <td>
                    {isAdmin && i.state === "pending" ? (
                      <button
                        type="button"
                        className="secondary"
                        onClick={() => revokeInvite.mutate({ ...input, invitationId: i.id })}
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
    </>
  );
}
