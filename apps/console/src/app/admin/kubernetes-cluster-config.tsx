"use client";

import { useMutation, useQueryClient } from "@tanstack/react-query";
import { FormError, SelectField, TextArea, TextField } from "@/components/form";
import { shownError } from "@/lib/errors";
import { useTRPC } from "@/lib/trpc";

interface KubernetesCluster {
  id: string;
  name: string;
  orgSlug: string;
  state: string;
}

/**
 * Where a tenant's kubernetes cluster runs: kubeconfig (empty: the provisioner's in-cluster
 * service account) and image/storage settings. Operators only; tenants never see these values,
 * so the form never shows the current ones, it replaces them.
 */
export function KubernetesClusterConfig({ clusters }: { clusters: KubernetesCluster[] }) {
  const trpc = useTRPC();
  const qc = useQueryClient();
  const configure = useMutation(
    trpc.admin.setClusterDriverConfig.mutationOptions({
      onSuccess: () => qc.invalidateQueries({ queryKey: trpc.admin.clusters.queryKey() }),
    }),
  );
  const err = shownError(configure.error);
  const fe = err?.fieldErrors ?? {};
  if (clusters.length === 0) return null;
  return (
    <form
      className="panel"
      aria-label="Configure a kubernetes cluster"
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        const f = new FormData(e.currentTarget);
        const text = (k: string) => String(f.get(k) ?? "").trim() || undefined;
        const driverConfig = Object.fromEntries(
          [
            "kubeconfig",
            "context",
            "registry",
            "gatewayNamespace",
            "envStorageClass",
            "fractionalGpuResource",
          ]
            .map((k) => [k, text(k)])
            .filter(([, v]) => v !== undefined),
        );
        configure.mutate({ clusterId: String(f.get("clusterId")), driverConfig });
      }}
    >
      <h2>Configure a kubernetes cluster</h2>
      <p className="muted">
        Replaces the cluster's driver configuration and provisions it again. Leave the kubeconfig empty to use
        the provisioner's in-cluster service account.
      </p>
      <SelectField label="Cluster" name="clusterId" error={fe.clusterId}>
        {clusters.map((c) => (
          <option key={c.id} value={c.id}>
            {c.orgSlug}/{c.name} ({c.state})
          </option>
        ))}
      </SelectField>
      <TextArea
        label="Kubeconfig (text, or a path mounted into the provisioner)"
        name="kubeconfig"
        rows={6}
        error={fe["driverConfig.kubeconfig"]}
      />
      <div className="grid2">
        <TextField label="Context" name="context" error={fe["driverConfig.context"]} />
        <TextField
          label="Runtime image registry"
          name="registry"
          placeholder="registry.example.com/acme"
          error={fe["driverConfig.registry"]}
        />
        <TextField
          label="Gateway namespace"
          name="gatewayNamespace"
          placeholder="tessera-system"
          error={fe["driverConfig.gatewayNamespace"]}
        />
        <TextField
          label="Shared environment storage class (ReadWriteMany)"
          name="envStorageClass"
          error={fe["driverConfig.envStorageClass"]}
        />
        <TextField
          label="Fractional GPU resource"
          name="fractionalGpuResource"
          placeholder="nvidia.com/gpu.shared"
          error={fe["driverConfig.fractionalGpuResource"]}
        />
      </div>
      <FormError error={err} />
      <button type="submit" disabled={configure.isPending}>
        {configure.isPending ? "Saving…" : "Save and provision"}
      </button>
      {configure.isSuccess ? <p role="status">Saved; provisioning job {configure.data.jobId}.</p> : null}
    </form>
  );
}
