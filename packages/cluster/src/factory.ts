import { TesseraError } from "@tessera/core";
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

/** Driver settings an operator may put in `clusters.driver_config` besides the kubeconfig. */
function kubernetesManifestOptions(c: Record<string, unknown>): Partial<ManifestOptions> {
  const out: Partial<ManifestOptions> = {};
  const str = (k: string) => (typeof c[k] === "string" ? (c[k] as string) : undefined);
  const num = (k: string) =>
    typeof c[k] === "number" && Number.isFinite(c[k]) ? (c[k] as number) : undefined;
  out.registry = str("registry") ?? process.env.TESSERA_RUNTIME_REGISTRY;
  out.runtimeTag = str("runtimeTag") ?? process.env.TESSERA_RUNTIME_TAG;
  out.gatewayNamespace = str("gatewayNamespace") ?? process.env.TESSERA_GATEWAY_NAMESPACE;
  out.gpuResource = str("gpuResource");
  out.fractionalGpuResource = str("fractionalGpuResource");
  out.drainTimeoutS = num("drainTimeoutS");
  const envStorageClass = str("envStorageClass");
  if (envStorageClass !== undefined || c.envVolume === "claim")
    out.envVolume = {
      kind: "claim",
      sizeGi: num("envVolumeSizeGi") ?? 20,
      ...(envStorageClass ? { storageClassName: envStorageClass } : {}),
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
