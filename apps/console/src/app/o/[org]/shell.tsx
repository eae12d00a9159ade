"use client";

import Link from "next/link";
import { usePathname, useRouter } from "next/navigation";
import type { ReactNode } from "react";
import { type ConsoleContext, ConsoleContextProvider } from "@/lib/org-context";

export function Shell({ value, children }: { value: ConsoleContext; children: ReactNode }) {
  const pathname = usePathname();
  const router = useRouter();
  const base = `/o/${value.org.slug}`;
  const links: [string, string][] = [
    [base, "Deployments"],
    [`${base}/deploy`, "Deploy"],
    [`${base}/clusters`, "Clusters"],
    [`${base}/keys`, "API keys"],
    [`${base}/members`, "Members"],
    [`${base}/uptime`, "Uptime"],
    [`${base}/billing`, "Usage & billing"],
  ];
  return (
    <ConsoleContextProvider value={value}>
      <div className="shell">
        <aside className="sidebar">
          <div className="brand">Tessera</div>
          <label htmlFor="org-switcher" className="muted">
            Organisation
          </label>
          <select
            id="org-switcher"
            value={value.org.slug}
            onChange={(e) => {
              if (e.target.value === "__new") router.push("/orgs/new");
              else router.push(`/o/${e.target.value}`);
            }}
          >
            {value.orgs.map((o) => (
              <option key={o.id} value={o.slug}>
                {o.name} ({o.role})
              </option>
            ))}
            <option value="__new">+ New organisation…</option>
          </select>
          <nav aria-label="Console">
            {links.map(([href, label]) => (
              <Link key={href} href={href} aria-current={pathname === href ? "page" : undefined}>
                {label}
              </Link>
            ))}
            {value.user.isPlatformAdmin ? <Link href="/admin">Admin</Link> : null}
            <Link href="/sign-out">Sign out</Link>
          </nav>
          <small className="muted">{value.user.email}</small>
        </aside>
        <main className="main">{children}</main>
      </div>
    </ConsoleContextProvider>
  );
}
