import { notFound } from "next/navigation";
import { currentUser } from "@/server/session";
import { PlatformMonitoring } from "./monitoring";

export const dynamic = "force-dynamic";

/** Platform admins only; everyone else (signed in or not) gets a plain 404. */
export default async function AdminMonitoringPage() {
  const me = await currentUser();
  if (!me?.user.isPlatformAdmin) notFound();
  return <PlatformMonitoring email={me.user.email} />;
}
