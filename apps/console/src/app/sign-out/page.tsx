"use client";

import { useMutation } from "@tanstack/react-query";
import { signOut } from "next-auth/react";
import { useTRPC } from "@/lib/trpc";

export default function SignOutPage() {
  const trpc = useTRPC();
  const revoke = useMutation(trpc.auth.signOut.mutationOptions());
  async function signOutEverywhere() {
    // End the server session first (the API stops honouring it at once), then drop the cookie.
    await revoke.mutateAsync().catch(() => undefined);
    await signOut({ callbackUrl: "/" });
  }
  return (
    <main className="narrow">
      <h1>Sign out</h1>
      <div className="panel">
        <p>Sign out of the Tessera console on this browser?</p>
        <button type="button" onClick={signOutEverywhere} disabled={revoke.isPending}>
          Sign out
        </button>
      </div>
    </main>
  );
}
