import { createCaller, type PublicUser, validateSession } from "@tessera/api";
import type { NextRequest } from "next/server";
import { getServerSession } from "next-auth";
import { getToken } from "next-auth/jwt";
import { apiServices } from "./api-services";
import { authOptions } from "./auth-options";
import { db } from "./db";

/** The server session id named by a request's next-auth cookie (API route handlers). */
export async function sessionIdOfRequest(req: Request): Promise<string | null> {
  const token = await getToken({ req: req as NextRequest, secret: process.env.NEXTAUTH_SECRET });
  return typeof token?.sid === "string" ? token.sid : null;
}

/** The signed-in user of a server component, or null when signed out or the session was revoked. */
export async function currentUser(): Promise<{ user: PublicUser; sessionId: string } | null> {
  const session = (await getServerSession(authOptions)) as { sid?: string | null } | null;
  if (!session?.sid) return null;
  const valid = await validateSession(db(), session.sid);
  return valid ? { user: valid.user, sessionId: valid.sessionId } : null;
}

/** The tRPC API called in-process as the signed-in user (server components). */
export function serverApi(sessionId: string) {
  return createCaller({ ...apiServices(), auth: { sessionId } });
}
