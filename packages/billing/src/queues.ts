import { CONTROL_QUEUE, type QueueDepth, type QueueMonitor, redisKeys } from "@tessera/core";
import { Queue } from "bullmq";
import type { Redis } from "ioredis";
import { BILLING_QUEUE } from "./jobs.js";

/**
 * Depths of the provisioner's BullMQ queues (control and billing by default) for the admin view.
 * Queue handles are opened once, on the given connection, and closed with `close()`.
 */
export function bullQueueMonitor(
  redis: Redis,
  prefix?: string,
  names: readonly string[] = [CONTROL_QUEUE, BILLING_QUEUE],
): QueueMonitor & { close(): Promise<void> } {
  const queues = names.map((n) => new Queue(n, { connection: redis, prefix: redisKeys(prefix).bullPrefix }));
  return {
    async depths(): Promise<QueueDepth[]> {
      return Promise.all(
        queues.map(async (q) => {
          const c = await q.getJobCounts("waiting", "active", "delayed", "failed", "completed", "paused");
          return {
            queue: q.name,
            waiting: c.waiting ?? 0,
            active: c.active ?? 0,
            delayed: c.delayed ?? 0,
            failed: c.failed ?? 0,
            completed: c.completed ?? 0,
            paused: c.paused ?? 0,
          };
        }),
      );
    },
    async close() {
      await Promise.all(queues.map((q) => q.close()));
    },
  };
}
