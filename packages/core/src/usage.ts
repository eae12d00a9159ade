import { z } from "zod";

/**
 * Usage events: what the gateway, the env builder and the controller report for metering. Each
 * event carries a globally unique `id` chosen by its producer (e.g. the request id); recording
 * the same id twice counts once, so producers may replay a buffer after an outage.
 *
 * - `request`: one handled request (`quantity` 1), with `status`, `latencyMs`, `bytesIn/bytesOut`.
 * - `build_seconds`: wall time of an environment build charged to the org that asked for it.
 * - `egress_bytes`: bytes sent out other than request responses (e.g. streamed by handles).
 *
 * Replica-seconds are not events: they are derived from the replicas' start/stop records.
 */
export const USAGE_EVENT_KINDS = ["request", "build_seconds", "egress_bytes"] as const;
export type UsageEventKind = (typeof USAGE_EVENT_KINDS)[number];

export const usageEventSchema = z
  .object({
    id: z.string().min(1).max(200),
    orgId: z.uuid(),
    deploymentId: z.uuid().nullish(),
    revisionId: z.uuid().nullish(),
    kind: z.enum(USAGE_EVENT_KINDS),
    quantity: z.number().finite().min(0),
    status: z.number().int().min(100).max(599).nullish(),
    latencyMs: z.number().finite().min(0).nullish(),
    bytesIn: z.number().int().min(0).nullish(),
    bytesOut: z.number().int().min(0).nullish(),
    at: z.coerce.date(),
    meta: z.record(z.string(), z.unknown()).nullish(),
  })
  .strict();
export type UsageEvent = z.input<typeof usageEventSchema>;
