import { notFound, redirect } from "next/navigation";
import type { ReactNode } from "react";
import { currentUser, serverApi } from "@/server/session";
import { Shell } from "./shell";

export const dynamic = "force-dynamic";

/**
 * Every organisation page: signed-in users only, and only organisations the user belongs to; any
 * other slug is a 404, so other tenants' organisations are not even confirmed to exist.
 */
export default async function OrgLayout({
  children,
  params,
}: {
  children: ReactNode;
  params: Promise<{ org: string }>;
}) {
  const { org: slug } = await params;
  const me = await currentUser();
  if (!me) redirect(`/sign-in?callbackUrl=${encodeURIComponent(`/o/${slug}`)}`);
  const { orgs } = await (await serverApi(me.sessionId)).auth.me();
  const org = orgs.find((o) => o.slug === slug);
  if (!org) notFound();
  return (
    <Shell
      value={{
        org,
        orgs,
        user: { email: me.user.email, name: me.user.name, isPlatformAdmin: me.user.isPlatformAdmin },
        gatewayUrl: process.env.TESSERA_GATEWAY_URL ?? "http://127.0.0.1:8080",
      }}
    >
      {children}
    </Shell>
  );
}
