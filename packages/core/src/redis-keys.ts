/**
 * Redis names shared by the gateway and the provisioner. Every name takes the deployment's key
 * prefix (`REDIS_PREFIX`, default `tessera:`) so that test runs and several platforms can share
 * one Redis without colliding.
 */
export const DEFAULT_REDIS_PREFIX = "tessera:";

export function redisKeys(prefix = process.env.REDIS_PREFIX ?? DEFAULT_REDIS_PREFIX) {
  return {
    prefix,
    /** Pub/sub channel: a message (a deployment id, or "*") means the routing table changed. */
    routingChanged: `${prefix}routing-changed`,
    /** Pub/sub channel: a message (a deployment id) asks the provisioner to wake a scaled-to-zero deployment. */
    wake: `${prefix}wake`,
    /**
     * Sorted set per deployment of ongoing-request samples reported by gateways:
     * score = sample time in ms, member = `${gatewayId}:${timeMs}:${ongoing}`.
     */
    ongoing: (deploymentId: string) => `${prefix}ongoing:${deploymentId}`,
    /** Pub/sub channel: a message (an API key prefix, or "*") means keys were revoked or changed. */
    apiKeysChanged: `${prefix}api-keys-changed`,
    /**
     * Requests admitted for an organisation in one UTC minute (`Math.floor(ms / 60 000)`), summed
     * over every gateway by INCRBY (billing's `OrgAdmission`).
     */
    requestsInMinute: (orgId: string, minute: number) => `${prefix}rate:${orgId}:${minute}`,
    /** BullMQ queue prefix. */
    bullPrefix: `${prefix}bull`,
  };
}

export function parseOngoingSample(
  member: string,
): { gatewayId: string; at: number; ongoing: number } | null {
  const parts = member.split(":");
  if (parts.length < 3) return null;
  const ongoing = Number(parts.pop());
  const at = Number(parts.pop());
  if (!Number.isFinite(ongoing) || !Number.isFinite(at)) return null;
  return { gatewayId: parts.join(":"), at, ongoing };
}
