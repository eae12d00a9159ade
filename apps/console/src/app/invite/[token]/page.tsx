"use client";

import { useMutation, useQuery } from "@tanstack/react-query";
import Link from "next/link";
import { useParams } from "next/navigation";
import { FormError } from "@/components/form";
import { Loading } from "@/components/when";
import { shownError } from "@/lib/errors";
import { useTRPC } from "@/lib/trpc";

export default function AcceptInvitationPage() {
  const { token } = useParams<{ token: string }>();
  const trpc = useTRPC();
  const invitation = useQuery(trpc.invitations.lookup.queryOptions({ token }));
  const me = useQuery(trpc.auth.whoami.queryOptions());
  const accept = useMutation(
    trpc.invitations.accept.mutationOptions({ onSuccess: (r) => window.location.assign(`/o/${r.orgSlug}`) }),
  );
  const here = `/invite/${token}`;
  const signedIn = me.data?.kind === "user";

  return (
    <main className="narrow">
      <h1>Invitation</h1>
      {invitation.isLoading || me.isLoading ? <Loading what="the invitation" /> : null}
      <FormError error={shownError(invitation.error)} />
      {invitation.data ? (
        <div className="panel">
          <p>
            You are invited to join <strong>{invitation.data.orgName}</strong> as{" "}
            <strong>{invitation.data.role}</strong> (sent to {invitation.data.email}).
          </p>
          {invitation.data.state !== "pending" ? (
            <p className="form-error">This invitation is {invitation.data.state}.</p>
          ) : signedIn ? (
            <>
              <FormError error={shownError(accept.error)} />
              <button type="button" onClick={() => accept.mutate({ token })} disabled={accept.isPending}>
                Accept and join {invitation.data.orgName}
              </button>
            </>
          ) : (
            <p>
              <Link href={`/sign-up?callbackUrl=${encodeURIComponent(here)}`}>Sign up</Link> or{" "}
              <Link href={`/sign-in?callbackUrl=${encodeURIComponent(here)}`}>sign in</Link> as{" "}
              {invitation.data.email} to accept.
            </p>
          )}
        </div>
      ) : null}
    </main>
  );
}
