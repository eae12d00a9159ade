import { z } from "zod";
import { environmentSpec } from "./environment.js";

/** DNS-label style names: used in URLs (`/v1/{org}/{app}`), namespaces and process names. */
export const slug = z
  .string()
  .min(1, "must not be empty")
  .max(63, "at most 63 characters")
  .regex(
    /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/,
    "lower-case letters, digits and '-', starting and ending with a letter or digit",
  );

export const entryPoint = z
  .string()
  .regex(
    /^[A-Za-z_][A-Za-z0-9_./-]*:[A-Za-z_$][A-Za-z0-9_$]*$/,
    "entry must be 'module:Class' (e.g. 'handler:Dataframe' or 'src/handler.ts:Dataframe')",
  );

export const resources = z
  .object({
    cpus: z.number().positive("cpus must be > 0").max(64).default(1),
    gpus: z.number().min(0, "gpus must be >= 0").max(8).default(0),
    memoryMb: z.number().int().min(64, "memoryMb must be at least 64").max(262_144).default(512),
  })
  .strict();

export const autoscalingConfig = z
  .object({
    minReplicas: z.number().int().min(0).max(100),
    maxReplicas: z.number().int().min(1).max(100),
    initialReplicas: z.number().int().min(0).max(100).optional(),
    targetOngoingRequests: z.number().positive().max(10_000).default(2),
    upscaleDelayS: z.number().min(0).max(3600).default(30),
    downscaleDelayS: z.number().min(0).max(86_400).default(600),
  })
  .strict()
  .superRefine((a, ctx) => {
    if (a.maxReplicas < a.minReplicas)
      ctx.addIssue({ code: "custom", path: ["maxReplicas"], message: "maxReplicas must be >= minReplicas" });
    if (
      a.initialReplicas !== undefined &&
      (a.initialReplicas < a.minReplicas || a.initialReplicas > a.maxReplicas)
    )
      ctx.addIssue({
        code: "custom",
        path: ["initialReplicas"],
        message: "initialReplicas must lie between minReplicas and maxReplicas",
      });
  });
export type AutoscalingConfig = z.infer<typeof autoscalingConfig>;

export const healthCheckConfig = z
  .object({
    periodS: z.number().min(1).max(300).default(5),
    timeoutS: z.number().min(0.1).max(60).default(2),
    failureThreshold: z.number().int().min(1).max(20).default(3),
    startupTimeoutS: z.number().min(1).max(3600).default(120),
  })
  .strict();

export const rolloutConfig = z
  .object({
    maxSurge: z.number().int().min(0).max(100).default(1),
    maxUnavailable: z.number().int().min(0).max(100).default(0),
  })
  .strict()
  .refine((r) => r.maxSurge + r.maxUnavailable > 0, {
    message: "maxSurge and maxUnavailable cannot both be 0",
    path: ["maxSurge"],
  });

export const runtimeKind = z.enum(["python", "node"]);
export type RuntimeKind = z.infer<typeof runtimeKind>;

/** Scaling part of a deployment's config: changeable without a new revision. */
export const scalingConfig = z
  .object({
    numReplicas: z.number().int().min(0).max(100).optional(),
    autoscaling: autoscalingConfig.optional(),
  })
  .superRefine((s, ctx) => {
    if (s.numReplicas !== undefined && s.autoscaling !== undefined)
      ctx.addIssue({
        code: "custom",
        path: ["autoscaling"],
        message: "set either numReplicas or autoscaling, not both",
      });
  });

/**
 * The full configuration of one deployment, as stored in each revision. Field names follow
 * design.md; defaults are those a user of Ray Serve would expect.
 */
export const deploymentConfig = z
  .object({
    runtime: runtimeKind,
    entry: entryPoint,
    environment: environmentSpec.default({ kind: "none" }),
    resources: resources.default({ cpus: 1, gpus: 0, memoryMb: 512 }),
    numReplicas: z.number().int().min(0).max(100).optional(),
    autoscaling: autoscalingConfig.optional(),
    maxOngoingRequests: z.number().int().min(1).max(10_000).default(8),
    maxQueuedRequests: z.number().int().min(0).max(100_000).default(100),
    requestTimeoutS: z.number().min(0.1).max(3600).default(60),
    maxBodyBytes: z
      .number()
      .int()
      .min(1024)
      .max(1024 * 1024 * 1024)
      .default(10 * 1024 * 1024),
    healthCheck: healthCheckConfig.default({
      periodS: 5,
      timeoutS: 2,
      failureThreshold: 3,
      startupTimeoutS: 120,
    }),
    rollout: rolloutConfig.default({ maxSurge: 1, maxUnavailable: 0 }),
    userConfig: z.record(z.string(), z.unknown()).default({}),
    exposeTracebacks: z.boolean().default(false),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.numReplicas !== undefined && c.autoscaling !== undefined)
      ctx.addIssue({
        code: "custom",
        path: ["autoscaling"],
        message: "set either numReplicas or autoscaling, not both",
      });
    if (c.runtime === "node" && (c.environment.kind === "pip" || c.environment.kind === "conda"))
      ctx.addIssue({
        code: "custom",
        path: ["environment", "kind"],
        message: `a node deployment cannot use a ${c.environment.kind} environment`,
      });
    if (c.runtime === "python" && c.environment.kind === "npm")
      ctx.addIssue({
        code: "custom",
        path: ["environment", "kind"],
        message: "a python deployment cannot use an npm environment",
      });
  });
export type DeploymentConfigInput = z.input<typeof deploymentConfig>;
export type DeploymentConfig = z.output<typeof deploymentConfig>;

/** Replicas to run before the autoscaler has seen traffic. */
export function initialReplicaCount(c: Pick<DeploymentConfig, "numReplicas" | "autoscaling">): number {
  if (c.autoscaling) return c.autoscaling.initialReplicas ?? c.autoscaling.minReplicas;
  return c.numReplicas ?? 1;
}

/** A code bundle: relative path -> file contents (utf-8 text, or base64 when `encoding` says so). */
export const codeBundle = z.object({
  files: z
    .record(
      z
        .string()
        .min(1)
        .max(255)
        .refine(
          (p) => !p.startsWith("/") && !p.split("/").includes(".."),
          "file paths must be relative, without '..'",
        ),
      z.string(),
    )
    .refine((f) => Object.keys(f).length > 0, "the bundle has no files")
    .refine((f) => Object.keys(f).length <= 500, "at most 500 files"),
  encoding: z.enum(["utf8", "base64"]).default("utf8"),
});
export type CodeBundle = z.infer<typeof codeBundle>;

/** Flatten zod issues into `{ "path.to.field": "message" }` for field-level errors in API and UI. */
export function fieldErrors(error: z.ZodError): Record<string, string> {
  const out: Record<string, string> = {};
  for (const issue of error.issues) {
    const key = issue.path.map(String).join(".") || "_";
    if (!(key in out)) out[key] = issue.message;
  }
  return out;
}
