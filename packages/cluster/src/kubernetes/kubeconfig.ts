import { existsSync } from "node:fs";
import { KubeConfig } from "@kubernetes/client-node";
import { TesseraError } from "@tessera/core";

/**
 * Resolve the API credentials of a kubernetes cluster row: `driverConfig.kubeconfig` holds either
 * the kubeconfig text or a path to it; without it (or with `inCluster: true`) the provisioner's
 * own service account is used. `driverConfig.context` picks a context other than the current one.
 */
export function loadKubeConfig(driverConfig: Record<string, unknown> = {}): KubeConfig {
  const kc = new KubeConfig();
  const source = driverConfig.kubeconfig;
  try {
    if (typeof source === "string" && source.trim() !== "" && driverConfig.inCluster !== true) {
      if (
        /\n/.test(source) ||
        /^\s*(apiVersion|kind|clusters)\s*:/.test(source) ||
        source.trim().startsWith("{")
      )
        kc.loadFromString(source);
      else if (existsSync(source)) kc.loadFromFile(source);
      else throw new TesseraError("VALIDATION_FAILED", `driverConfig.kubeconfig: no file at ${source}`);
    } else if (source !== undefined && typeof source !== "string") {
      throw new TesseraError(
        "VALIDATION_FAILED",
        "driverConfig.kubeconfig must be the kubeconfig text or a path to it",
      );
    } else {
      // Outside a pod loadFromCluster "succeeds" with a server of https://undefined:undefined.
      if (!process.env.KUBERNETES_SERVICE_HOST)
        throw new TesseraError(
          "VALIDATION_FAILED",
          "no driverConfig.kubeconfig given and not running inside a Kubernetes pod (KUBERNETES_SERVICE_HOST unset)",
        );
      kc.loadFromCluster();
    }
    if (typeof driverConfig.context === "string") kc.setCurrentContext(driverConfig.context);
  } catch (err) {
    if (err instanceof TesseraError) throw err;
    throw new TesseraError("VALIDATION_FAILED", `cannot load kubeconfig: ${(err as Error).message}`);
  }
  if (!kc.getCurrentCluster())
    throw new TesseraError(
      "VALIDATION_FAILED",
      "kubeconfig has no current cluster (set driverConfig.context or current-context)",
    );
  return kc;
}
