import type { Redis } from "ioredis";

/**
 * One autoscaler acts at a time when several provisioners run: the holder of a short Redis lease
 * ticks, the others wait and take over when it lapses. (Writes are compare-and-set anyway; the
 * lease keeps two loops from interleaving their hysteresis state.)
 */
const ACQUIRE_OR_RENEW = `
if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("PEXPIRE", KEYS[1], ARGV[2])
  return 1
end
if redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then return 1 end
return 0`;

const RELEASE = `
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0`;

export function leaderLeaseKey(prefix: string): string {
  return `${prefix}autoscaler:leader`;
}

export async function acquireOrRenewLease(
  redis: Redis,
  key: string,
  holder: string,
  ttlMs: number,
): Promise<boolean> {
  return (await redis.eval(ACQUIRE_OR_RENEW, 1, key, holder, String(Math.max(1, Math.round(ttlMs))))) === 1;
}

export async function releaseLease(redis: Redis, key: string, holder: string): Promise<void> {
  await redis.eval(RELEASE, 1, key, holder);
}
