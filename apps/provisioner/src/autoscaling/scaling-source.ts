import { type AutoscalingConfig, fieldErrors, resources, scalingConfig } from "@tessera/core";
import type { ReplicaResources } from "./quota.js";

/**
 * Which scaling mode a deployment is in right now. `deployments.scaling` (changed by the operator
 * API without a redeploy) wins; when it is empty the revision's own config decides.
 */
export type EffectiveScaling =
  | { mode: "fixed"; numReplicas: number }
  | { mode: "autoscaling"; config: AutoscalingConfig }
  | { mode: "invalid"; error: string };

export function resolveScaling(scaling: unknown, revisionConfig: unknown): EffectiveScaling {
  const fromRow = parse(scaling, "deployments.scaling");
  if (fromRow.mode !== "none") return fromRow;
  const rev =
    revisionConfig && typeof revisionConfig === "object" ? (revisionConfig as Record<string, unknown>) : {};
  const fromRevision = parse(
    { numReplicas: rev.numReplicas, autoscaling: rev.autoscaling },
    "revision config",
  );
  if (fromRevision.mode !== "none") return fromRevision;
  // A deployment config with neither runs one replica (see initialReplicaCount in @tessera/core).
  return { mode: "fixed", numReplicas: 1 };
}

function parse(value: unknown, where: string): EffectiveScaling | { mode: "none" } {
  if (value === null || value === undefined) return { mode: "none" };
  const parsed = scalingConfig.safeParse(value);
  if (!parsed.success) {
    const details = Object.entries(fieldErrors(parsed.error))
      .map(([k, v]) => `${k}: ${v}`)
      .join("; ");
    return { mode: "invalid", error: `${where} is invalid (${details})` };
  }
  if (parsed.data.autoscaling) return { mode: "autoscaling", config: parsed.data.autoscaling };
  if (parsed.data.numReplicas !== undefined) return { mode: "fixed", numReplicas: parsed.data.numReplicas };
  return { mode: "none" };
}

/** Per-replica resources of a revision config, with the schema's defaults. */
export function replicaResources(revisionConfig: unknown): ReplicaResources {
  const rev =
    revisionConfig && typeof revisionConfig === "object" ? (revisionConfig as Record<string, unknown>) : {};
  const parsed = resources.safeParse(rev.resources ?? {});
  return parsed.success ? parsed.data : { cpus: 1, memoryMb: 512, gpus: 0 };
}
