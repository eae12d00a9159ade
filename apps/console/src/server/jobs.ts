import type { JobQueue, PlatformNotifier } from "@tessera/core";
import { BullJobQueue, createRedisNotifier } from "@tessera/jobs";
import { Redis } from "ioredis";
import { db } from "./db";

/**
 * One Redis connection per server process, for the control queue (BullMQ) and the notices to
 * gateways (revoked keys). Kept on `globalThis` so development reloads do not open new ones.
 */
const holder = globalThis as unknown as {
  __tesseraRedis?: Redis;
  __tesseraJobs?: JobQueue;
  __tesseraNotify?: PlatformNotifier;
};

export function redis(): Redis {
  holder.__tesseraRedis ??= new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379", {
    // BullMQ requires it; commands wait for a reconnect instead of failing after N retries.
    maxRetriesPerRequest: null,
  });
  return holder.__tesseraRedis;
}

/** The API's job queue: a `jobs` row plus a BullMQ job the provisioner's workers pick up. */
export function jobQueue(): JobQueue {
  holder.__tesseraJobs ??= new BullJobQueue({ db: db(), redis: redis(), prefix: process.env.REDIS_PREFIX });
  return holder.__tesseraJobs;
}

/** Publishes platform notices (e.g. a revoked API key) to the gateways over Redis. */
export function platformNotifier(): PlatformNotifier {
  holder.__tesseraNotify ??= createRedisNotifier(redis(), process.env.REDIS_PREFIX);
  return holder.__tesseraNotify;
}
