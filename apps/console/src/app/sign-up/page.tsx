"use client";

import { useMutation } from "@tanstack/react-query";
import Link from "next/link";
import { useSearchParams } from "next/navigation";
import { signIn } from "next-auth/react";
import { Suspense, useState } from "react";
import { FormError, TextField } from "@/components/form";
import { shownError } from "@/lib/errors";
import { useTRPC } from "@/lib/trpc";

function SignUpForm() {
  const trpc = useTRPC();
  const params = useSearchParams();
  const callback = params.get("callbackUrl");
  const target = callback?.startsWith("/") && !callback.startsWith("//") ? callback : "/dashboard";
  const [signInFailed, setSignInFailed] = useState(false);
  const signUp = useMutation(trpc.auth.signUp.mutationOptions());
  const err = shownError(signUp.error);

  async function submit(e: React.FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    const email = String(form.get("email") ?? "");
    const password = String(form.get("password") ?? "");
    const name = String(form.get("name") ?? "").trim();
    try {
      await signUp.mutateAsync({ email, password, ...(name ? { name } : {}) });
    } catch {
      return; // shown from signUp.error
    }
    const res = await signIn("credentials", { email, password, redirect: false });
    if (!res || res.error) setSignInFailed(true);
    else window.location.assign(target);
  }

  return (
    <form className="panel" onSubmit={submit} noValidate>
      <TextField label="Name (optional)" name="name" autoComplete="name" error={err?.fieldErrors.name} />
      <TextField
        label="Email"
        name="email"
        type="email"
        autoComplete="email"
        required
        error={err?.fieldErrors.email}
      />
      <TextField
        label="Password"
        name="password"
        type="password"
        autoComplete="new-password"
        required
        hint="At least 8 characters."
        error={err?.fieldErrors.password}
      />
      {err && Object.keys(err.fieldErrors).length === 0 ? <FormError error={err} /> : null}
      {signInFailed ? (
        <p className="form-error" role="alert">
          Your account was created but signing in failed; <Link href="/sign-in">sign in</Link>.
        </p>
      ) : null}
      <button type="submit" disabled={signUp.isPending}>
        {signUp.isPending ? "Creating your account…" : "Create account"}
      </button>
      <p className="muted">
        Have an account? <Link href="/sign-in">Sign in</Link>
      </p>
    </form>
  );
}

export default function SignUpPage() {
  return (
    <main className="narrow">
      <h1>Create your Tessera account</h1>
      <p className="muted">You get a personal organisation to deploy into right away.</p>
      <Suspense>
        <SignUpForm />
      </Suspense>
    </main>
  );
}
