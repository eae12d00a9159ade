"use client";

import Link from "next/link";
import { signIn } from "next-auth/react";
import { useState } from "react";
import { TextField } from "@/components/form";

export function SignInForm({
  github,
  callbackUrl,
  oauthError,
}: {
  github: boolean;
  callbackUrl: string;
  oauthError?: string;
}) {
  const [error, setError] = useState<string | undefined>(oauthError);
  const [pending, setPending] = useState(false);
  async function submit(e: React.FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    setPending(true);
    setError(undefined);
    const res = await signIn("credentials", {
      email: String(form.get("email") ?? ""),
      password: String(form.get("password") ?? ""),
      redirect: false,
    });
    setPending(false);
    if (!res || res.error) {
      setError("Wrong email or password.");
      return;
    }
    window.location.assign(callbackUrl);
  }
  return (
    <div className="panel">
      <form onSubmit={submit} noValidate>
        <TextField label="Email" name="email" type="email" autoComplete="email" required />
        <TextField
          label="Password"
          name="password"
          type="password"
          autoComplete="current-password"
          required
        />
        {error ? (
          <p className="form-error" role="alert">
            {error}
          </p>
        ) : null}
        <button type="submit" disabled={pending}>
          {pending ? "Signing in…" : "Sign in"}
        </button>
      </form>
      {github ? (
        <p>
          <button type="button" className="secondary" onClick={() => signIn("github", { callbackUrl })}>
            Sign in with GitHub
          </button>
        </p>
      ) : null}
      <p className="muted">
        No account? <Link href={`/sign-up?callbackUrl=${encodeURIComponent(callbackUrl)}`}>Sign up</Link>
      </p>
    </div>
  );
}
