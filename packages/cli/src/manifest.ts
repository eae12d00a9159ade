import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { CliError } from "./client.js";

/**
 * `tessera.json` beside the handler: where it goes and how it runs. Flags override it.
 * `config` is a deployment config as in the API (runtime, entry, environment, resources...);
 * the API validates it and answers field by field.
 */
export interface Manifest {
  name?: string;
  application?: string;
  cluster?: string;
  config: Record<string, unknown>;
  /**
   * An application directory: the subdirectories holding its deployments (each with its own
   * tessera.json), deployed in this order; the first is the ingress of a new application.
   */
  deployments?: string[];
  /**
   * A Ray Serve application (deployed with `rayServe.deploy`, one deployment per Ray deployment):
   * `entry` is `module:app`; `environment` replaces every deployment's runtime_env.
   */
  rayServe?: { entry: string; environment?: Record<string, unknown> };
}

export const MANIFEST_FILE = "tessera.json";

export async function readManifest(dir: string): Promise<Manifest> {
  let text: string;
  try {
    text = await readFile(join(dir, MANIFEST_FILE), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { config: {} };
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new CliError(`${MANIFEST_FILE} is not valid JSON: ${(err as Error).message}`);
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed))
    throw new CliError(`${MANIFEST_FILE} must hold a JSON object`);
  const m = parsed as Record<string, unknown>;
  for (const key of ["name", "application", "cluster"] as const)
    if (m[key] !== undefined && typeof m[key] !== "string")
      throw new CliError(`${MANIFEST_FILE}: "${key}" must be a string`);
  if (
    m.config !== undefined &&
    (typeof m.config !== "object" || m.config === null || Array.isArray(m.config))
  )
    throw new CliError(`${MANIFEST_FILE}: "config" must be an object`);
  let deployments: string[] | undefined;
  if (m.deployments !== undefined) {
    if (
      !Array.isArray(m.deployments) ||
      m.deployments.length === 0 ||
      !m.deployments.every(
        (d) => typeof d === "string" && /^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/.test(d) && d !== "..",
      )
    )
      throw new CliError(
        `${MANIFEST_FILE}: "deployments" must list the application's deployment subdirectories`,
      );
    if (m.config !== undefined)
      throw new CliError(
        `${MANIFEST_FILE}: an application lists "deployments"; each one's config is in its own ${MANIFEST_FILE}`,
      );
    deployments = m.deployments as string[];
  }
  const ray = m.rayServe as Record<string, unknown> | undefined;
  if (
    ray !== undefined &&
    (typeof ray !== "object" || ray === null || Array.isArray(ray) || typeof ray.entry !== "string")
  )
    throw new CliError(`${MANIFEST_FILE}: "rayServe" must be an object with an "entry" ('module:app')`);
  if (ray !== undefined && deployments)
    throw new CliError(`${MANIFEST_FILE}: a Ray Serve application ("rayServe") lists no "deployments"`);
  return {
    deployments,
    ...(ray
      ? {
          rayServe: {
            entry: ray.entry as string,
            environment: ray.environment as Record<string, unknown> | undefined,
          },
        }
      : {}),
    name: m.name as string | undefined,
    application: m.application as string | undefined,
    cluster: m.cluster as string | undefined,
    config: (m.config as Record<string, unknown> | undefined) ?? {},
  };
}
