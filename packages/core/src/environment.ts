import { createHash } from "node:crypto";
import { z } from "zod";

const packageRequirement = z
  .string()
  .trim()
  .min(1, "requirement must not be empty")
  .max(500)
  .refine((s) => !/[\n\r;|&`$]/.test(s), "requirement contains shell metacharacters");

/** Ray's runtime_env conda dict: `{channels, dependencies: ["python=3.11", {pip: [...]}]}`. */
export const condaSpec = z.object({
  kind: z.literal("conda"),
  channels: z.array(z.string().min(1).max(200)).max(20).default([]),
  dependencies: z
    .array(z.union([packageRequirement, z.object({ pip: z.array(packageRequirement).max(500) }).strict()]))
    .max(500),
});

export const pipSpec = z.object({
  kind: z.literal("pip"),
  requirements: z.array(packageRequirement).max(500),
  python: z
    .string()
    .regex(/^3\.\d+$/, "python must look like 3.X")
    .optional(),
});

export const npmSpec = z.object({
  kind: z.literal("npm"),
  dependencies: z.record(
    z
      .string()
      .min(1)
      .max(214)
      .regex(/^(@[a-z0-9-~][a-z0-9-._~]*\/)?[a-z0-9-~][a-z0-9-._~]*$/, "invalid npm package name"),
    z.string().min(1).max(500),
  ),
});

export const noEnvSpec = z.object({ kind: z.literal("none") });

export const environmentSpec = z.discriminatedUnion("kind", [noEnvSpec, pipSpec, condaSpec, npmSpec]);
export type EnvironmentSpec = z.infer<typeof environmentSpec>;

/** Sort keys recursively so that two equal specs always serialise identically. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * Normalise a spec so that specs which install the same thing hash the same: whitespace trimmed,
 * package lists sorted (install order does not change what pip/npm resolve), duplicates dropped.
 * The runtime is part of the identity because a node env and a python env never share a directory.
 */
export function normaliseEnvironmentSpec(spec: EnvironmentSpec): EnvironmentSpec {
  const uniqSorted = (xs: string[]) => [...new Set(xs.map((x) => x.trim()))].sort();
  switch (spec.kind) {
    case "none":
      return spec;
    case "pip":
      return {
        kind: "pip",
        requirements: uniqSorted(spec.requirements),
        ...(spec.python ? { python: spec.python } : {}),
      };
    case "npm":
      return {
        kind: "npm",
        dependencies: Object.fromEntries(
          Object.entries(spec.dependencies)
            .map(([k, v]) => [k, v.trim()])
            .sort(),
        ),
      };
    case "conda": {
      const plain = uniqSorted(spec.dependencies.filter((d): d is string => typeof d === "string"));
      const pip = uniqSorted(spec.dependencies.flatMap((d) => (typeof d === "string" ? [] : d.pip)));
      return {
        kind: "conda",
        channels: spec.channels.map((c) => c.trim()),
        dependencies: pip.length ? [...plain, { pip }] : plain,
      };
    }
  }
}

export function environmentHash(runtime: string, spec: EnvironmentSpec): string {
  return createHash("sha256")
    .update(canonicalJson({ runtime, spec: normaliseEnvironmentSpec(spec) }))
    .digest("hex")
    .slice(0, 32);
}
