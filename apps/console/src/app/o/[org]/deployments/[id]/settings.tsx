"use client";

import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { FormError, TextField } from "@/components/form";
import { shownError } from "@/lib/errors";
import { atLeast, useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";
import type { DeploymentView } from "./types";

interface Autoscaling {
  minReplicas: number;
  maxReplicas: number;
  targetOngoingRequests?: number;
  upscaleDelayS?: number;
  downscaleDelayS?: number;
}

const num = (v: FormDataEntryValue | null) => (v === null || String(v).trim() === "" ? undefined : Number(v));

/** Replica count or autoscaling bounds, applied without a new revision. */
export function ScalingSettings({ dep }: { dep: DeploymentView }) {
  const { org } = useConsole();
  const trpc = useTRPC();
  const qc = useQueryClient();
  const scaling = dep.scaling as { numReplicas?: number; autoscaling?: Autoscaling };
  const [mode, setMode] = useState<"fixed" | "auto">(scaling.autoscaling ? "auto" : "fixed");
  const update = useMutation(
    trpc.deployments.updateScaling.mutationOptions({
      onSuccess: () => qc.invalidateQueries({ queryKey: trpc.deployments.pathKey() }),
    }),
  );
  const err = shownError(update.error);
  const fe = err?.fieldErrors ?? {};
  const a = scaling.autoscaling;
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
        const input = { orgId: org.id, deploymentId: dep.id };
        if (mode === "fixed") update.mutate({ ...input, numReplicas: num(f.get("numReplicas")) });
        else
          update.mutate({
            ...input,
            autoscaling: {
              minReplicas: num(f.get("minReplicas")),
              maxReplicas: num(f.get("maxReplicas")),
              targetOngoingRequests: num(f.get("targetOngoingRequests")),
              upscaleDelayS: num(f.get("upscaleDelayS")),
              downscaleDelayS: num(f.get("downscaleDelayS")),
            },
          });
      }}
    >
      <p className="muted">
        Applies at once to the running revision; no redeploy. Target now: {dep.targetReplicas} replicas.
      </p>
      <fieldset className="row" style={{ border: "none", padding: 0 }}>
        <legend className="muted">Scaling</legend>
        <label>
          <input type="radio" name="mode" checked={mode === "fixed"} onChange={() => setMode("fixed")} />{" "}
          Fixed replicas
        </label>
        <label>
          <input type="radio" name="mode" checked={mode === "auto"} onChange={() => setMode("auto")} />{" "}
          Autoscaling
        </label>
      </fieldset>
      {mode === "fixed" ? (
        <TextField
          label="Replicas"
          name="numReplicas"
          type="number"
          defaultValue={scaling.numReplicas ?? dep.targetReplicas}
          error={fe.numReplicas}
        />
      ) : (
        <div className="grid2">
          <TextField
            label="Min replicas"
            name="minReplicas"
            type="number"
            defaultValue={a?.minReplicas ?? 0}
            error={fe["autoscaling.minReplicas"]}
          />
          <TextField
            label="Max replicas"
            name="maxReplicas"
            type="number"
            defaultValue={a?.maxReplicas ?? 4}
            error={fe["autoscaling.maxReplicas"]}
          />
          <TextField
            label="Target ongoing requests per replica"
            name="targetOngoingRequests"
            type="number"
            defaultValue={a?.targetOngoingRequests ?? 2}
            error={fe["autoscaling.targetOngoingRequests"]}
          />
          <TextField
            label="Upscale delay (s)"
            name="upscaleDelayS"
            type="number"
            defaultValue={a?.upscaleDelayS ?? 30}
            error={fe["autoscaling.upscaleDelayS"]}
          />
          <TextField
            label="Downscale delay (s)"
            name="downscaleDelayS"
            type="number"
            defaultValue={a?.downscaleDelayS ?? 600}
            error={fe["autoscaling.downscaleDelayS"]}
          />
        </div>
      )}
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
