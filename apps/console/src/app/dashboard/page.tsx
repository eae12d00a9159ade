import { redirect } from "next/navigation";
import { currentUser, serverApi } from "@/server/session";

export const dynamic = "force-dynamic";

/** Sends a signed-in user to their first organisation (the personal one from sign-up). */
export default async function Dashboard() {
  const me = await currentUser();
  if (!me) redirect("/sign-in");
  const { orgs } = await (await serverApi(me.sessionId)).auth.me();
  if (orgs.length === 0) redirect("/orgs/new");
  redirect(`/o/${orgs[0]!.slug}`);
}
