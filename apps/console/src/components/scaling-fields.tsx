"use client";

import { TextField } from "@/components/form";

export type ScalingMode = "fixed" | "auto";

export interface AutoscalingValues {
  minReplicas?: number;
  maxReplicas?: number;
  targetOngoingRequests?: number;
  upscaleDelayS?: number;
  downscaleDelayS?: number;
}

/** A number field's value; empty stays undefined so the API reports "required" rather than 0. */
export const numberField = (v: FormDataEntryValue | null) =>
  v === null || String(v).trim() === "" ? undefined : Number(v);

/** `{numReplicas}` or `{autoscaling}` from the fields below, as the API's scaling input. */
export function scalingFromForm(f: FormData, mode: ScalingMode) {
  if (mode === "fixed") return { numReplicas: numberField(f.get("numReplicas")) };
  return {
    autoscaling: {
      minReplicas: numberField(f.get("minReplicas")),
      maxReplicas: numberField(f.get("maxReplicas")),
      targetOngoingRequests: numberField(f.get("targetOngoingRequests")),
      upscaleDelayS: numberField(f.get("upscaleDelayS")),
      downscaleDelayS: numberField(f.get("downscaleDelayS")),
    },
  };
}

/**
 * Fixed replicas or autoscaling bounds, with the API's field errors under `errorPrefix`
 * (`config.` on deploys, nothing on scaling updates).
 */
export function ScalingFields({
  mode,
  onMode,
  errors,
  errorPrefix = "",
  numReplicas = 1,
  autoscaling = {},
}: {
  mode: ScalingMode;
  onMode: (m: ScalingMode) => void;
  errors: Record<string, string>;
  errorPrefix?: string;
  numReplicas?: number;
  autoscaling?: AutoscalingValues;
}) {
  const err = (k: string) => errors[`${errorPrefix}${k}`];
  const field = (name: keyof AutoscalingValues, label: string, fallback: number) => (
    <TextField
      label={label}
      name={name}
      type="number"
      defaultValue={autoscaling[name] ?? fallback}
      error={err(`autoscaling.${name}`)}
    />
  );
  return (
    <>
      <fieldset className="row" style={{ border: "none", padding: 0 }}>
        <legend className="muted">Scaling</legend>
        <label>
          <input
            type="radio"
            name="scalingMode"
            checked={mode === "fixed"}
            onChange={() => onMode("fixed")}
          />{" "}
          Fixed replicas
        </label>
        <label>
          <input type="radio" name="scalingMode" checked={mode === "auto"} onChange={() => onMode("auto")} />{" "}
          Autoscaling
        </label>
      </fieldset>
      {mode === "fixed" ? (
        <TextField
          label="Replicas"
          name="numReplicas"
          type="number"
          defaultValue={numReplicas}
          error={err("numReplicas")}
        />
      ) : (
        <div className="grid2">
          {field("minReplicas", "Min replicas", 0)}
          {field("maxReplicas", "Max replicas", 4)}
          {field("targetOngoingRequests", "Target ongoing requests per replica", 2)}
          {field("upscaleDelayS", "Upscale delay (s)", 30)}
          {field("downscaleDelayS", "Downscale delay (s)", 600)}
        </div>
      )}
      {err("autoscaling") ? <p className="field-error">{err("autoscaling")}</p> : null}
    </>
  );
}
