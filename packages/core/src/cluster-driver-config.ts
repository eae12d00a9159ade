import { z } from "zod";

const name = z.string().trim().min(1).max(253);

/**
 * `clusters.driver_config` of a `driver: kubernetes` cluster: where and how its namespace and
 * replica pods are made. Set by platform operators only: a kubeconfig is a credential of the
 * platform (and may name exec plugins or files the provisioner runs or reads), never tenant input.
 * `@tessera/cluster`'s `createDriver` reads the same keys.
 */
export const kubernetesDriverConfig = z
  .object({
    /** Kubeconfig text, or a path mounted into the provisioner; absent: its in-cluster service account. */
    kubeconfig: z
      .string()
      .min(1)
      .max(256 * 1024)
      .optional(),
    /** Use the in-cluster service account even if a kubeconfig is given. */
    inCluster: z.boolean().optional(),
    /** A kubeconfig context other than its current one. */
    context: name.optional(),
    /** Registry of the runtime images (`<registry>/tessera/runtime-python:<tag>`). */
    registry: name.optional(),
    runtimeTag: z.string().trim().min(1).max(128).optional(),
    /** Namespace of the gateway pods the tenant NetworkPolicy admits. */
    gatewayNamespace: name.optional(),
    /** Extended resource for whole GPUs (default `nvidia.com/gpu`). */
    gpuResource: name.optional(),
    /** Extended resource for fractional GPUs (time-sliced/MIG), e.g. `nvidia.com/gpu.shared`. */
    fractionalGpuResource: name.optional(),
    drainTimeoutS: z.number().min(0).max(3600).optional(),
    /** A ReadWriteMany storage class: environments are built once per cluster on a shared claim. */
    envStorageClass: name.optional(),
    envVolume: z.literal("claim").optional(),
    envVolumeSizeGi: z.number().int().min(1).max(10_000).optional(),
  })
  .strict();
export type KubernetesDriverConfig = z.infer<typeof kubernetesDriverConfig>;
