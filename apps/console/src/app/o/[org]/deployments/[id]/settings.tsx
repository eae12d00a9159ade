"use client";

import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { FormError } from "@/components/form";
import {
  type AutoscalingValues,
  ScalingFields,
  type ScalingMode,
  scalingFromForm,
} from "@/components/scaling-fields";
import { shownError } from "@/lib/errors";
import { atLeast, useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";
import type { DeploymentView } from "./types";

/** Replica count or autoscaling bounds, applied without a new revision. */
export function ScalingSettings({ dep }: { dep: DeploymentView }) {
  const { org } = useConsole();
  const trpc = useTRPC();
  const qc = useQueryClient();
  const scaling = dep.scaling as { numReplicas?: number; autoscaling?: AutoscalingValues };
  const [mode, setMode] = useState<ScalingMode>(scaling.autoscaling ? "auto" : "fixed");
  const update = useMutation(
    trpc.deployments.updateScaling.mutationOptions({
      onSuccess: () => qc.invalidateQueries({ queryKey: trpc.deployments.pathKey() }),
    }),
  );
  const err = shownError(update.error);
  const fe = err?.fieldErrors ?? {};
  if (!atLeast(org.role, "admin"))
    return <p className="panel muted">Changing scaling takes the admin or owner role.</p>;

  return (
    <form
      className="panel"
      aria-label="Scaling settings"
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        const f = new FormData(e.currentTarget);
        update.mutate({ orgId: org.id, deploymentId: dep.id, ...scalingFromForm(f, mode) });
      }}
    >
      <p className="muted">
        Applies at once to the running revision; no redeploy. Target now: {dep.targetReplicas} replicas.
      </p>
      <ScalingFields
        mode={mode}
        onMode={setMode}
        errors={fe}
        numReplicas={scaling.numReplicas ?? dep.targetReplicas}
        autoscaling={scaling.autoscaling}
      />
      {err && Object.keys(fe).length === 0 ? <FormError error={err} /> : null}
      {update.isSuccess ? (
        <p role="status" className="badge ok">
          Saved: target {update.data.deployment.targetReplicas} replicas
        </p>
      ) : null}
      <div>
        <button type="submit" disabled={update.isPending}>
          Save scaling
        </button>
      </div>
    </form>
  );
}
