import { createSession, oauthSignIn, verifyCredentials } from "@tessera/api";
import type { NextAuthOptions } from "next-auth";
import CredentialsProvider from "next-auth/providers/credentials";
import GitHubProvider from "next-auth/providers/github";
import { db } from "./db";

/** GitHub sign-in is offered only when the deployment configured an OAuth app for it. */
export function githubEnabled(): boolean {
  return Boolean(process.env.GITHUB_ID && process.env.GITHUB_SECRET);
}

/**
 * next-auth keeps a JWT in a cookie; the one claim that matters is `sid`, the id of a server-side
 * session row. The API validates that row on every request, so signing out (which deletes it)
 * ends the session at once even though the JWT itself would still decode.
 */
export const authOptions: NextAuthOptions = {
  secret: process.env.NEXTAUTH_SECRET,
  session: { strategy: "jwt" },
  pages: { signIn: "/sign-in", error: "/sign-in" },
  providers: [
    CredentialsProvider({
      name: "Email and password",
      credentials: {
        email: { label: "Email", type: "email" },
        password: { label: "Password", type: "password" },
      },
      async authorize(credentials) {
        const user = await verifyCredentials(db(), credentials?.email ?? "", credentials?.password ?? "");
        if (!user) return null;
        const { sessionId } = await createSession(db(), user.id);
        return { id: user.id, email: user.email, name: user.name, sid: sessionId };
      },
    }),
    ...(githubEnabled()
      ? [GitHubProvider({ clientId: process.env.GITHUB_ID!, clientSecret: process.env.GITHUB_SECRET! })]
      : []),
  ],
  callbacks: {
    async signIn({ user, account, profile }) {
      if (account?.provider !== "github") return true;
      // Map the GitHub identity to a Tessera user (created with a personal org on first sign-in).
      try {
        const tesseraUser = await oauthSignIn(db(), {
          provider: "github",
          providerAccountId: account.providerAccountId,
          email: user.email,
          name: user.name,
          login: (profile as { login?: string } | undefined)?.login,
        });
        const { sessionId } = await createSession(db(), tesseraUser.id);
        (user as { sid?: string }).sid = sessionId;
        user.id = tesseraUser.id;
        return true;
      } catch {
        return "/sign-in?error=OAuthAccountNotLinked";
      }
    },
    async jwt({ token, user }) {
      const sid = (user as { sid?: string } | undefined)?.sid;
      if (sid) token.sid = sid;
      return token;
    },
    async session({ session, token }) {
      return { ...session, sid: typeof token.sid === "string" ? token.sid : null };
    },
  },
};
