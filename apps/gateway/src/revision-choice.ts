import { chooseRevision, TesseraError } from "@tessera/core";
import type { DeploymentRoute } from "./routing-table.js";

/** The revision chosen to serve one request. */
export interface ServingChoice {
  revisionId: string;
  version: number;
  canary: boolean;
  pinned: boolean;
}

/**
 * Traffic splitting: which revision serves a request to `route`. With a canary, the weighted
 * choice of `chooseRevision` (a canary without a ready replica yet gets no unpinned traffic);
 * with the pin header (`x-tessera-revision: 7`), that revision or a NOT_FOUND / UNAVAILABLE error.
 * Null when there is nothing to choose (no canary, no pin): any ready replica serves, as during a
 * rollout.
 */
export function chooseServingRevision(
  route: DeploymentRoute,
  pinHeader: string | string[] | undefined,
  random: () => number = Math.random,
): ServingChoice | null {
  const pin = (Array.isArray(pinHeader) ? pinHeader[0] : pinHeader)?.trim() || null;
  if (!route.canary && !pin) return null;
  if (!route.liveRevisionId || route.liveVersion === null || route.liveVersion === undefined) {
    if (pin) throw new TesseraError("NOT_FOUND", `deployment ${route.name} has no live revision to pin`);
    return null;
  }
  const ready = new Set(route.replicas.map((r) => r.revisionId));
  const canary = route.canary
    ? {
        revision: { id: route.canary.revisionId, version: route.canary.version },
        percent: route.canary.percent,
      }
    : null;
  const weighted = canary && ready.has(canary.revision.id) ? canary : null;
  const choice = chooseRevision(
    { id: route.liveRevisionId, version: route.liveVersion },
    pin ? canary : weighted,
    pin,
    random,
  );
  if ("error" in choice) throw new TesseraError("NOT_FOUND", `deployment ${route.name}: ${choice.message}`);
  if (choice.pinned && route.replicas.length > 0 && !ready.has(choice.revision.id))
    throw new TesseraError(
      "UNAVAILABLE",
      `deployment ${route.name}: revision ${choice.revision.version} has no ready replica yet`,
      { reason: "revision_not_ready" },
    );
  return {
    revisionId: choice.revision.id,
    version: choice.revision.version,
    canary: choice.canary,
    pinned: choice.pinned,
  };
}
