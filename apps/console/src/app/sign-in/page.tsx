import { githubEnabled } from "@/server/auth-options";
import { SignInForm } from "./sign-in-form";

export const dynamic = "force-dynamic";

export default async function SignInPage({
  searchParams,
}: {
  searchParams: Promise<{ callbackUrl?: string; error?: string }>;
}) {
  const { callbackUrl, error } = await searchParams;
  return (
    <main className="narrow">
      <h1>Sign in to Tessera</h1>
      <SignInForm
        github={githubEnabled()}
        callbackUrl={safeCallback(callbackUrl)}
        oauthError={
          error === "OAuthAccountNotLinked"
            ? "That email has an account: sign in with its password."
            : undefined
        }
      />
    </main>
  );
}

/** Only same-site paths: an open redirect after sign-in would be a phishing aid. */
function safeCallback(url: string | undefined): string {
  return url?.startsWith("/") && !url.startsWith("//") ? url : "/dashboard";
}
