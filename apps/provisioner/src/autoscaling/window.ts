import { parseOngoingSample } from "@tessera/core";
import type { OngoingPoint } from "./policy.js";

/**
 * Turns the raw samples gateways write (`${gatewayId}:${timeMs}:${ongoing}` members of the
 * deployment's sorted set) into the evenly spaced window the policy averages over.
 *
 * The look-back period is cut into buckets of `bucketMs`. A bucket's value is the sum over gateways
 * of each gateway's latest sample at or before the bucket's end — a gateway that reports less often
 * than once a bucket keeps counting with its last value until that value is `staleMs` old, after
 * which it counts as 0 (a gateway that stopped reporting has no requests in flight we can see).
 */
export interface WindowOptions {
  now: number;
  lookbackMs: number;
  bucketMs: number;
  staleMs: number;
}

export interface AggregatedWindow {
  points: OngoingPoint[];
  /** Gateways that contributed at least one sample. */
  gateways: number;
  /** Members that did not parse (a gateway bug, never a crash). */
  malformed: number;
}

export function aggregateOngoingSamples(members: readonly string[], opts: WindowOptions): AggregatedWindow {
  const bucketMs = Math.max(1, opts.bucketMs);
  const buckets = Math.max(1, Math.ceil(opts.lookbackMs / bucketMs));
  const firstEnd = opts.now - (buckets - 1) * bucketMs;

  const byGateway = new Map<string, { at: number; ongoing: number }[]>();
  let malformed = 0;
  for (const member of members) {
    const s = parseOngoingSample(member);
    if (!s || s.ongoing < 0) {
      malformed++;
      continue;
    }
    let list = byGateway.get(s.gatewayId);
    if (!list) {
      list = [];
      byGateway.set(s.gatewayId, list);
    }
    // A gateway clock slightly ahead of ours must not hide its newest sample.
    list.push({ at: Math.min(s.at, opts.now), ongoing: s.ongoing });
  }

  const points: OngoingPoint[] = [];
  for (let b = 0; b < buckets; b++) points.push({ at: firstEnd + b * bucketMs, ongoing: 0 });

  for (const samples of byGateway.values()) {
    samples.sort((a, b) => a.at - b.at);
    let i = -1;
    for (const point of points) {
      while (i + 1 < samples.length && samples[i + 1]!.at <= point.at) i++;
      if (i < 0) continue;
      const latest = samples[i]!;
      if (point.at - latest.at < opts.staleMs) point.ongoing += latest.ongoing;
    }
  }
  return { points, gateways: byGateway.size, malformed };
}
