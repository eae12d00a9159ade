import { createHmac, timingSafeEqual } from "node:crypto";

/**
 * Uptime probes reach a deployment's readiness route through the gateway, so a probe sees what a
 * client would: the routing table, the router's queue and timeouts. The prober authenticates with
 * a platform probe token, an HMAC over a fixed scope signed with the handle secret
 * (`TESSERA_HANDLE_SECRET`). The scope differs from every handle token's, so neither kind of token
 * verifies as the other, and API keys never reach the probe ingress.
 *
 * Wire protocol:
 *   GET {gateway}/-/probe/{orgSlug}/{appName}/{deployment}
 *   header authorization: Bearer {probe token}
 *   -> the replica's readiness answer (200 when ready), or a gateway error; a deployment scaled
 *      to zero is not woken: 503 UNAVAILABLE with details.reason "asleep".
 */
export const PROBE_PATH_PREFIX = "/-/probe/";
/** `details.reason` of the probe ingress's answer for a deployment that has no replica. */
export const PROBE_ASLEEP_REASON = "asleep";

const PROBE_SCOPE = "probe:platform";
const TOKEN_RE = /^tp_([A-Za-z0-9_-]{43})$/;

function signature(secret: string): string {
  return createHmac("sha256", secret).update(PROBE_SCOPE).digest("base64url");
}

export function mintProbeToken(secret: string): string {
  if (!secret) throw new Error("probe secret must not be empty");
  return `tp_${signature(secret)}`;
}

export function verifyProbeToken(secret: string, token: string): boolean {
  const m = TOKEN_RE.exec(token);
  if (!m || !secret) return false;
  const expected = Buffer.from(signature(secret));
  const given = Buffer.from(m[1]!);
  return expected.length === given.length && timingSafeEqual(expected, given);
}

export function probeIngressUrl(
  gatewayUrl: string,
  orgSlug: string,
  appName: string,
  deployment: string,
): string {
  const segment = encodeURIComponent;
  return `${gatewayUrl.replace(/\/+$/, "")}${PROBE_PATH_PREFIX}${segment(orgSlug)}/${segment(appName)}/${segment(deployment)}`;
}
