import { type PlatformNotice, type PlatformNotifier, redisKeys } from "@tessera/core";
import type { Redis } from "ioredis";

/** Publishes platform notices on the Redis channels gateways and consoles subscribe to. */
export function createRedisNotifier(redis: Redis, prefix?: string): PlatformNotifier {
  const keys = redisKeys(prefix);
  return async (notice: PlatformNotice) => {
    switch (notice.kind) {
      case "apiKeyRevoked":
        await redis.publish(keys.apiKeysChanged, notice.prefix);
        return;
      case "routingChanged":
        await redis.publish(keys.routingChanged, notice.deploymentId);
        return;
    }
  };
}
