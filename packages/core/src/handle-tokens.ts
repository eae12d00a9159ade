import { createHmac, timingSafeEqual } from "node:crypto";

/**
 * Handles let one deployment call another deployment of the SAME application through the
 * gateway's router. A replica gets a token naming its organisation and application, signed with
 * the platform's handle secret (`TESSERA_HANDLE_SECRET`, known to the provisioner and gateway,
 * never to replicas). The gateway only routes a handle call to deployments of the application the
 * token names, so a handle can never reach another organisation.
 *
 * Wire protocol (see README "Composition"):
 *   TESSERA_HANDLE_URL = {gateway}/-/handles/{orgSlug}/{appName}
 *   {METHOD} {HANDLE_URL}/{deployment}/{route...}        call a route of another deployment
 *   POST     {HANDLE_URL}/{deployment}/-/call/{method}   call a method: body {args, kwargs} -> {result}
 *   header   authorization: Bearer {TESSERA_HANDLE_TOKEN}; x-request-id is propagated.
 */
export const HANDLE_PATH_PREFIX = "/-/handles/";
export const HANDLE_SECRET_ENV = "TESSERA_HANDLE_SECRET";

const TOKEN_RE = /^th_([0-9a-f-]{36})\.([0-9a-f-]{36})\.([A-Za-z0-9_-]{43})$/;

function signature(secret: string, orgId: string, applicationId: string): string {
  return createHmac("sha256", secret).update(`handle:${orgId}:${applicationId}`).digest("base64url");
}

export function mintHandleToken(secret: string, orgId: string, applicationId: string): string {
  if (!secret) throw new Error("handle secret must not be empty");
  return `th_${orgId}.${applicationId}.${signature(secret, orgId, applicationId)}`;
}

export function verifyHandleToken(
  secret: string,
  token: string,
): { orgId: string; applicationId: string } | null {
  const m = TOKEN_RE.exec(token);
  if (!m || !secret) return null;
  const [, orgId, applicationId, sig] = m as unknown as [string, string, string, string];
  const expected = Buffer.from(signature(secret, orgId, applicationId));
  const given = Buffer.from(sig);
  return expected.length === given.length && timingSafeEqual(expected, given)
    ? { orgId, applicationId }
    : null;
}

export function handleBaseUrl(gatewayUrl: string, orgSlug: string, appName: string): string {
  return `${gatewayUrl.replace(/\/+$/, "")}${HANDLE_PATH_PREFIX}${orgSlug}/${appName}`;
}
