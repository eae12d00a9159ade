import { createHmac, timingSafeEqual } from "node:crypto";
import { RUNTIME_ENV } from "./runtime-contract.js";

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

export interface ReplicaHandleEnvInput {
  /** Base URL replicas reach the gateway at (not necessarily the public one). */
  gatewayUrl: string;
  secret: string;
  orgId: string;
  orgSlug: string;
  applicationId: string;
  appName: string;
}

/**
 * The handle variables of a replica's environment (TESSERA_HANDLE_URL, TESSERA_HANDLE_TOKEN): the
 * provisioner passes them as `extraEnv` to every replica of the application, so handler code can
 * call the application's other deployments. The secret itself never reaches the replica.
 */
export function replicaHandleEnv(input: ReplicaHandleEnvInput): Record<string, string> {
  return {
    [RUNTIME_ENV.HANDLE_URL]: handleBaseUrl(input.gatewayUrl, input.orgSlug, input.appName),
    [RUNTIME_ENV.HANDLE_TOKEN]: mintHandleToken(input.secret, input.orgId, input.applicationId),
  };
}
