import { notFound } from "next/navigation";
import { currentUser } from "@/server/session";
import { AdminDashboard } from "./dashboard";

export const dynamic = "force-dynamic";

/** Platform admins only; everyone else (signed in or not) gets a plain 404. */
export default async function AdminPage() {
  const me = await currentUser();
  if (!me?.user.isPlatformAdmin) notFound();
  return <AdminDashboard email={me.user.email} />;
}
