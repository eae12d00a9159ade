"use client";

import { useMutation } from "@tanstack/react-query";
import Link from "next/link";
import { FormError, TextField } from "@/components/form";
import { shownError } from "@/lib/errors";
import { useTRPC } from "@/lib/trpc";

export default function NewOrgPage() {
  const trpc = useTRPC();
  const create = useMutation(
    trpc.orgs.create.mutationOptions({
      // A full navigation: the organisation layout reads the user's memberships on the server.
      onSuccess: (org) => window.location.assign(`/o/${org.slug}`),
    }),
  );
  const err = shownError(create.error);
  return (
    <main className="narrow">
      <h1>New organisation</h1>
      <form
        className="panel"
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          const f = new FormData(e.currentTarget);
          const slug = String(f.get("slug") ?? "").trim();
          create.mutate({ name: String(f.get("name") ?? ""), ...(slug ? { slug } : {}) });
        }}
      >
        <TextField label="Name" name="name" required error={err?.fieldErrors.name} />
        <TextField
          label="Slug (optional)"
          name="slug"
          hint="Used in endpoint URLs: /v1/<slug>/<app>/…; derived from the name when empty."
          error={err?.fieldErrors.slug}
        />
        {err && !err.fieldErrors.name && !err.fieldErrors.slug ? <FormError error={err} /> : null}
        <div className="row">
          <button type="submit" disabled={create.isPending}>
            Create organisation
          </button>
          <Link href="/dashboard">Cancel</Link>
        </div>
      </form>
    </main>
  );
}
