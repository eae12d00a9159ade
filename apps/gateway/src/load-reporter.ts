import { redisKeys } from "@tessera/core";
import type { Redis } from "ioredis";
import type { Log } from "./log.js";
import type { Router } from "./router.js";

/** Samples are trimmed by the autoscaler; the expiry only cleans up after deleted deployments. */
const SAMPLE_KEY_TTL_MS = 10 * 60_000;

/**
 * Reports ongoing (queued + in-flight) requests per deployment to Redis in the autoscaler's
 * format, as the peak of each interval: sorted set `ongoing(deploymentId)`, score = time in ms, member
 * `${gatewayId}:${timeMs}:${ongoing}`. A deployment is reported while it has requests and once
 * more with 0 when it drains, so the autoscaler's window sees the drop.
 */
export class LoadReporter {
  private readonly lastReported = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;
  private readonly keys: ReturnType<typeof redisKeys>;
  private failing = false;
  reports = 0;

  constructor(
    private readonly redis: Redis,
    prefix: string,
    private readonly gatewayId: string,
    private readonly router: Router,
    private readonly log: Log,
    intervalMs = 1_000,
  ) {
    this.keys = redisKeys(prefix);
    this.timer = setInterval(() => void this.report(), intervalMs);
    this.timer.unref();
  }

  async report(): Promise<void> {
    const now = Date.now();
    const batch = this.redis.multi();
    let count = 0;
    const sent: [string, number][] = [];
    const current = new Map<string, number>();
    for (const [id, lane] of this.router.lanes) current.set(id, lane.takePeak());
    for (const id of this.lastReported.keys()) if (!current.has(id)) current.set(id, 0);
    for (const [id, ongoing] of current) {
      if (ongoing === 0 && (this.lastReported.get(id) ?? 0) === 0) continue;
      const key = this.keys.ongoing(id);
      batch.zadd(key, now, `${this.gatewayId}:${now}:${ongoing}`);
      batch.pexpire(key, SAMPLE_KEY_TTL_MS);
      sent.push([id, ongoing]);
      count++;
    }
    if (count === 0) {
      batch.discard();
      return;
    }
    try {
      await batch.exec();
      for (const [id, ongoing] of sent) {
        if (ongoing === 0) this.lastReported.delete(id);
        else this.lastReported.set(id, ongoing);
      }
      this.reports++;
      if (this.failing) this.log("info", "reporting load to redis again");
      this.failing = false;
    } catch (err) {
      if (!this.failing) this.log("warn", "could not report load to redis", { err: String(err) });
      this.failing = true;
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
