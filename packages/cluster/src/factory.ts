import { kubernetesDriverConfig, TesseraError } from "@tessera/core";
import type { ClusterDriver } from "./driver.js";
import { KubernetesDriver } from "./kubernetes/driver.js";
import { loadKubeConfig } from "./kubernetes/kubeconfig.js";
import type { ManifestOptions } from "./kubernetes/manifests.js";
import { LocalDriver, type LocalDriverOptions } from "./local/driver.js";

export interface ClusterDriverRow {
  /** The cluster's id, when the driver serves that one cluster (narrows what it watches). */
  id?: string;
  driver: "local" | "kubernetes" | string;
  driverConfig?: Record<string, unknown>;
}

/**
 * Driver settings an operator put in `clusters.driver_config` besides the kubeconfig, checked
 * against the same contract the API validates them with (rows written another way included).
 */
function kubernetesManifestOptions(raw: Record<string, unknown>): Partial<ManifestOptions> {
  const parsed = kubernetesDriverConfig.safeParse(raw);
  if (!parsed.success)
    throw new TesseraError(
      "VALIDATION_FAILED",
      `invalid kubernetes driverConfig: ${parsed.error.issues
        .map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`)
        .join("; ")}`,
    );
  const c = parsed.data;
  const out: Partial<ManifestOptions> = {
    registry: c.registry ?? process.env.TESSERA_RUNTIME_REGISTRY,
    runtimeTag: c.runtimeTag ?? process.env.TESSERA_RUNTIME_TAG,
    gatewayNamespace: c.gatewayNamespace ?? process.env.TESSERA_GATEWAY_NAMESPACE,
    gpuResource: c.gpuResource,
    fractionalGpuResource: c.fractionalGpuResource,
    drainTimeoutS: c.drainTimeoutS,
  };
  if (c.envStorageClass !== undefined || c.envVolume === "claim")
    out.envVolume = {
      kind: "claim",
      sizeGi: c.envVolumeSizeGi ?? 20,
      ...(c.envStorageClass ? { storageClassName: c.envStorageClass } : {}),
    };
  return Object.fromEntries(
    Object.entries(out).filter(([, v]) => v !== undefined),
  ) as Partial<ManifestOptions>;
}

/** What the process creating drivers wires in (not part of the cluster row). */
export interface DriverHooks {
  /** onLog (replica output), onError, dataDir (when the row names none), a shared environmentBuilder. */
  local?: Omit<LocalDriverOptions, "driverConfig" | "clusterId">;
}

/** The driver a cluster row asks for. */
export function createDriver(cluster: ClusterDriverRow, hooks: DriverHooks = {}): ClusterDriver {
  const config = cluster.driverConfig ?? {};
  switch (cluster.driver) {
    case "local":
      return new LocalDriver({
        ...hooks.local,
        driverConfig: config,
        ...(cluster.id ? { clusterId: cluster.id } : {}),
      });
    case "kubernetes":
      return new KubernetesDriver({
        kubeConfig: loadKubeConfig(config),
        ...(cluster.id ? { clusterId: cluster.id } : {}),
        ...kubernetesManifestOptions(config),
      });
    default:
      throw new TesseraError("VALIDATION_FAILED", `no cluster driver '${cluster.driver}' in this build`);
  }
}
