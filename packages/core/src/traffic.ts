import { z } from "zod";

/**
 * Traffic splitting (canary): a deployment serves its live revision and, while a canary runs, a
 * second revision with `canaryPercent` of the requests. The API stores the split on the
 * deployment (`deployments.traffic`); the controller keeps replicas of both revisions; the gateway
 * picks a revision per request with `chooseRevision`, then a replica of it. Promote makes the
 * canary the deployment's revision (a normal rollout); abort drops it.
 */

/**
 * On a request: pins it to one serving revision, for testing (its version number `7` or id).
 * On a response: the version of the revision that served it.
 */
export const REVISION_HEADER = "x-tessera-revision";

export const canaryPercent = z
  .number()
  .min(0, "must be between 0 and 100")
  .max(100, "must be between 0 and 100")
  .refine((p) => Number.isInteger(p * 10), "at most one decimal (e.g. 0.5)");

/** What `deployments.traffic` holds while a canary runs (null otherwise). */
export const trafficSplit = z
  .object({
    canaryRevisionId: z.uuid(),
    canaryPercent,
    startedAt: z.iso.datetime(),
  })
  .strict();
export type TrafficSplit = z.infer<typeof trafficSplit>;

export interface ServingRevision {
  id: string;
  version: number;
}

export interface RevisionChoice {
  revision: ServingRevision;
  /** Chosen by the pin header rather than by weight. */
  pinned: boolean;
  canary: boolean;
}

export type RevisionChoiceResult = RevisionChoice | { error: "NOT_SERVING"; message: string };

/**
 * The revision one request goes to. `pin` is the REVISION_HEADER value (absent: weighted
 * choice); a pin naming a revision that is not serving is an error (the gateway answers 404
 * NOT_FOUND), never a silent fallback. `random` returns [0, 1) (injectable for tests).
 */
export function chooseRevision(
  live: ServingRevision,
  canary: { revision: ServingRevision; percent: number } | null,
  pin?: string | null,
  random: () => number = Math.random,
): RevisionChoiceResult {
  const serving = canary ? [live, canary.revision] : [live];
  if (pin !== undefined && pin !== null && pin.trim() !== "") {
    const wanted = pin.trim();
    const hit = serving.find((r) => r.id === wanted || String(r.version) === wanted.replace(/^v/, ""));
    if (!hit)
      return {
        error: "NOT_SERVING",
        message: `revision ${wanted} is not serving (serving: ${serving.map((r) => r.version).join(", ")})`,
      };
    return { revision: hit, pinned: true, canary: hit !== live };
  }
  if (canary && canary.percent > 0 && random() * 100 < canary.percent)
    return { revision: canary.revision, pinned: false, canary: true };
  return { revision: live, pinned: false, canary: false };
}

/**
 * Replicas each side should run while a canary gets `percent` of the traffic: the canary gets its
 * share of `total`, the live revision the rest, and each side keeps at least one replica while
 * the deployment runs any (a 0% canary still answers pinned requests; a 100% one can be aborted
 * without a cold start). For the controller.
 */
export function splitReplicas(total: number, percent: number): { live: number; canary: number } {
  if (total <= 0) return { live: 0, canary: 0 };
  const share = Math.round((total * Math.min(100, Math.max(0, percent))) / 100);
  return { live: Math.max(1, total - share), canary: Math.max(1, share) };
}
