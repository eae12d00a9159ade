import { usageByDay } from "@tessera/billing/service";
import { z } from "zod";
import { apiError } from "../errors.js";
import { orgProcedure, router } from "../trpc.js";

const DAY_MS = 86_400_000;
const MAX_RANGE_DAYS = 400;

/** `{from, to}` as dates (default: the last 30 days), refused when reversed or too long. */
export const usageRange = z.object({ from: z.coerce.date().optional(), to: z.coerce.date().optional() });

export function resolveRange(input: { from?: Date; to?: Date }, now = new Date()) {
  const to = input.to ?? now;
  const from = input.from ?? new Date(to.getTime() - 30 * DAY_MS);
  if (from >= to)
    throw apiError("VALIDATION_FAILED", "from must be before to", {
      fieldErrors: { from: "must be before to" },
    });
  if (to.getTime() - from.getTime() > MAX_RANGE_DAYS * DAY_MS)
    throw apiError("VALIDATION_FAILED", `at most ${MAX_RANGE_DAYS} days at once`, {
      fieldErrors: { from: `at most ${MAX_RANGE_DAYS} days before to` },
    });
  return { from, to };
}

export const usageRouter = router({
  /** Metered usage per UTC day and deployment of the organisation. */
  byDay: orgProcedure("member")
    .input(usageRange)
    .query(({ ctx, input }) => usageByDay(ctx.db, { orgId: ctx.org.id, ...resolveRange(input) })),
});
