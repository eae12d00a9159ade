import Link from "next/link";
import { currentUser } from "@/server/session";

export const dynamic = "force-dynamic";

export default async function Landing() {
  const signedIn = await currentUser();
  return (
    <main className="hero">
      <h1>Tessera</h1>
      <p>
        Deploy a Python or TypeScript class and get an autoscaled HTTP endpoint behind an API key. Each
        deployment brings its own conda, pip or npm environment, rolls out without downtime and scales to zero
        when idle.
      </p>
      <div className="row">
        {signedIn ? (
          <Link className="button" href="/dashboard">
            Open the console
          </Link>
        ) : (
          <>
            <Link className="button" href="/sign-up">
              Sign up
            </Link>
            <Link className="button secondary" href="/sign-in">
              Sign in
            </Link>
          </>
        )}
      </div>
    </main>
  );
}
