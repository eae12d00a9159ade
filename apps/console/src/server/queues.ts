import { bullQueueMonitor } from "@tessera/billing";
import type { QueueMonitor } from "@tessera/core";
import { Redis } from "ioredis";

const holder = globalThis as unknown as { __tesseraQueueMonitor?: QueueMonitor };

/**
 * Depths of the provisioner's BullMQ queues for the admin monitoring page (`admin.queues`), on its
 * own connection: BullMQ queue handles keep theirs busy, apart from the job queue's.
 */
export function queueMonitor(): QueueMonitor {
  holder.__tesseraQueueMonitor ??= bullQueueMonitor(
    new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379", { maxRetriesPerRequest: null }),
    process.env.REDIS_PREFIX,
  );
  return holder.__tesseraQueueMonitor;
}
