import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { type CodeBundle, codeBundle, entryPoint, environmentSpec } from "@tessera/core";
import { applications, deployments, revisions } from "@tessera/db";
import {
  inspectRayServeApp,
  type PlannedRayDeployment,
  planRayServeApplication,
  RayServeInspectError,
  type RayServePlan,
} from "@tessera/runtime-python";
import { and, eq, inArray, isNull } from "drizzle-orm";
import { z } from "zod";
import { apiError, isUniqueViolation, validationError } from "../errors.js";
import { orgProcedure, router } from "../trpc.js";
import { enforceDeployPlan, planTransaction } from "./billing.js";
import {
  clusterQuota,
  commitRevision,
  deployRequest,
  ensureEnvironment,
  findApplication,
  initialScaling,
  quotaErrors,
  redeployScaling,
  revisionLabel,
  type Tx,
  throwIfAny,
  versionConflict,
} from "./deployments.js";

/**
 * The interpreter that imports tenants' Ray Serve modules at deploy time (with fastapi & co;
 * `TESSERA_RAY_INSPECT_MEMORY_MB` raises its 4096 MB address-space limit, e.g. for torch).
 */
export const RAY_INSPECT_PYTHON_ENV = "TESSERA_RAY_INSPECT_PYTHON";
/** `uid` or `uid:gid`: the unprivileged user the import runs as (the API must run as root). */
export const RAY_INSPECT_UID_ENV = "TESSERA_RAY_INSPECT_UID";

/** The configured inspecting user; a malformed setting refuses deploys rather than running as root. */
function inspectingUser(): { uid?: number; gid?: number } {
  const raw = process.env[RAY_INSPECT_UID_ENV]?.trim();
  if (!raw) return {};
  const match = /^(\d+)(?::(\d+))?$/.exec(raw);
  if (!match)
    throw apiError(
      "ENV_UNSUPPORTED",
      `Ray Serve deploys are not available on this platform: ${RAY_INSPECT_UID_ENV} must be uid or uid:gid, got ${JSON.stringify(raw)}`,
    );
  return { uid: Number(match[1]), gid: match[2] === undefined ? undefined : Number(match[2]) };
}

const deployInput = z.object({
  applicationId: z.uuid(),
  /** `module:app`: the module's bound application (or a `.deploy()`-era deployment). */
  entry: entryPoint,
  code: z.unknown(),
  /** Per Tessera deployment name: the version the caller last saw (0 or absent for a new one). */
  prevVersions: z.record(z.string(), z.number().int().min(0)).default({}),
  /** Label of every revision this deploy creates; defaults to each deployment's Ray `version`. */
  label: revisionLabel.optional(),
  /** Replaces every deployment's runtime_env (e.g. one environment holding fastapi and pandas). */
  environment: environmentSpec.optional(),
});

/** Writes the bundle to a private temporary directory for the inspector. */
async function unpack(code: CodeBundle): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "tessera-ray-inspect-"));
  for (const [path, content] of Object.entries(code.files)) {
    const file = join(dir, path);
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, code.encoding === "base64" ? Buffer.from(content, "base64") : content);
  }
  return dir;
}

async function planFromCode(
  code: CodeBundle,
  entry: string,
  environment: z.infer<typeof environmentSpec> | undefined,
): Promise<RayServePlan> {
  const user = inspectingUser();
  const dir = await unpack(code);
  try {
    const app = await inspectRayServeApp({
      python: process.env[RAY_INSPECT_PYTHON_ENV] || "python3",
      codeDir: dir,
      entry,
      memoryLimitMb: Number(process.env.TESSERA_RAY_INSPECT_MEMORY_MB) || undefined,
      ...user,
    });
    return planRayServeApplication(app, { entry, environment });
  } catch (err) {
    if (!(err instanceof RayServeInspectError)) throw err;
    if ((err.details as { reason?: string }).reason === "INSPECTOR_UNAVAILABLE")
      throw apiError(
        "ENV_UNSUPPORTED",
        `Ray Serve deploys are not available on this platform: ${err.message} (see ${RAY_INSPECT_PYTHON_ENV}, ${RAY_INSPECT_UID_ENV})`,
      );
    const details = err.details as {
      reason: string;
      unsupportedCalls?: { call: string; file: string; line: number }[];
    };
    const fieldErrors: Record<string, string> = { entry: err.message };
    for (const c of details.unsupportedCalls ?? [])
      fieldErrors[`code.${c.file}:${c.line}`] = `${c.call} is not supported on Tessera`;
    throw apiError("VALIDATION_FAILED", `the Ray Serve application cannot be deployed: ${err.message}`, {
      fieldErrors,
      reason: details.reason,
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * One deployment of the plan inside the shared transaction: create or compare-and-set, honouring
 * the caller's prevVersion and the code's `prev_version` (the live revision's label).
 */
async function commitPlanned(
  tx: Tx,
  ctx: { orgId: string; userId: string | null },
  app: { id: string; clusterId: string },
  d: PlannedRayDeployment,
  prevVersion: number,
  label: string | undefined,
  envHash: string,
  code: CodeBundle,
) {
  const conflict = (current: number, prev: number) =>
    versionConflict(current, prev, `prevVersions.${d.name}`, `deployment ${d.name}`);
  let [dep] = await tx
    .select()
    .from(deployments)
    .where(
      and(eq(deployments.applicationId, app.id), eq(deployments.name, d.name), isNull(deployments.deletedAt)),
    )
    .for("update");
  const created = !dep;
  if (!dep) {
    if (prevVersion !== 0) throw conflict(0, prevVersion);
    if (d.prevLabel)
      throw apiError(
        "CONFLICT",
        `deployment ${d.name} does not exist, so it is not at version ${d.prevLabel}`,
        {
          fieldErrors: { [`deployments.${d.rayName}.prev_version`]: "there is no live version" },
        },
      );
    [dep] = await tx
      .insert(deployments)
      .values({
        orgId: ctx.orgId,
        applicationId: app.id,
        clusterId: app.clusterId,
        name: d.name,
        ...initialScaling(d.config),
      })
      .returning();
  } else if (d.prevLabel) {
    // Ray's version-aware deploy: prev_version names the version the code was written against.
    const current = dep.desiredRevisionId
      ? (
          await tx
            .select({ label: revisions.label })
            .from(revisions)
            .where(eq(revisions.id, dep.desiredRevisionId))
        )[0]
      : undefined;
    if (current?.label !== d.prevLabel)
      throw apiError(
        "CONFLICT",
        `deployment ${d.name} is at version ${JSON.stringify(current?.label ?? null)}, not ${JSON.stringify(d.prevLabel)} (prev_version): someone else deployed; reload and retry`,
        {
          fieldErrors: { [`deployments.${d.rayName}.prev_version`]: `is ${current?.label ?? "unlabelled"}` },
        },
      );
  }
  const out = await commitRevision(tx, dep!, {
    prevVersion,
    config: d.config as unknown as Record<string, unknown>,
    code,
    envHash,
    createdBy: ctx.userId,
    scaling: created ? undefined : redeployScaling(d.config, dep!.targetReplicas),
    label: label ?? d.label ?? null,
    conflict,
  });
  return { ...out, created, rayName: d.rayName };
}

export const rayServeRouter = router({
  /**
   * Deploys a Ray Serve application unchanged: imports it (TESSERA_RAY_INSPECT_PYTHON), maps every
   * deployment's options, then creates or updates one Tessera deployment per Ray deployment in
   * ONE transaction (each compare-and-set on its prevVersion: one stale version and nothing is
   * stored), makes the Ray ingress the application's ingress and enqueues the rollouts.
   */
  deploy: orgProcedure("admin")
    .input(deployInput)
    .mutation(async ({ ctx, input }) => {
      const app = await findApplication(ctx.db, ctx.org.id, input.applicationId);
      const bundle = codeBundle.safeParse(input.code);
      if (!bundle.success) throw validationError(bundle.error, "code");
      const plan = await planFromCode(bundle.data, input.entry, input.environment);
      throwIfAny(plan.errors, "the Ray Serve application cannot be deployed");
      const quota = await clusterQuota(ctx.db, app.clusterId);
      const overQuota: Record<string, string> = {};
      for (const d of plan.deployments)
        Object.assign(overQuota, quotaErrors(d.config, quota, `deployments.${d.rayName}.config`));
      throwIfAny(overQuota, "over the cluster quota");
      const envHashes = new Map<string, string>();
      for (const d of plan.deployments) envHashes.set(d.name, await ensureEnvironment(ctx.db, d.config));

      // Locked in name order, so two concurrent deploys of one application cannot deadlock.
      const ordered = [...plan.deployments].sort((a, b) => (a.name < b.name ? -1 : 1));
      let results: Awaited<ReturnType<typeof commitPlanned>>[];
      try {
        // One plan lock and one check for the whole application, so its order of writes does not matter.
        results = await planTransaction(ctx, ctx.org.id, async (tx) => {
          const existing = await tx
            .select()
            .from(deployments)
            .where(
              and(
                eq(deployments.applicationId, app.id),
                inArray(
                  deployments.name,
                  ordered.map((d) => d.name),
                ),
                isNull(deployments.deletedAt),
              ),
            );
          // No row locks needed: every change to what the plan counts of them takes the plan lock too.
          await enforceDeployPlan(
            ctx,
            tx,
            ctx.org.id,
            ordered.map((d) =>
              deployRequest(
                d.config,
                existing.find((e) => e.name === d.name),
              ),
            ),
          );
          const out = [];
          for (const d of ordered)
            out.push(
              await commitPlanned(
                tx,
                { orgId: ctx.org.id, userId: ctx.userId },
                app,
                d,
                input.prevVersions[d.name] ?? 0,
                input.label,
                envHashes.get(d.name)!,
                bundle.data,
              ),
            );
          await tx
            .update(applications)
            .set({ ingressDeployment: plan.ingress })
            .where(eq(applications.id, app.id));
          return out;
        });
      } catch (err) {
        // Two first deploys of the same application race on the unique (application, name) index.
        if (isUniqueViolation(err))
          throw apiError(
            "CONFLICT",
            "another deploy of this application created its deployments first; retry",
          );
        throw err;
      }
      const deployed: {
        rayName: string;
        deployment: (typeof results)[number]["deployment"];
        revision: (typeof results)[number]["revision"];
        created: boolean;
        jobId: string;
      }[] = [];
      for (const r of results) {
        const { jobId } = await ctx.jobs.enqueue(
          { kind: "deployRevision", revisionId: r.revision.id },
          { orgId: ctx.org.id },
        );
        deployed.push({
          rayName: r.rayName,
          deployment: r.deployment,
          revision: r.revision,
          created: r.created,
          jobId,
        });
      }
      const unused = new Set(plan.deployments.map((d) => d.name));
      const stale = (
        await ctx.db
          .select({ name: deployments.name })
          .from(deployments)
          .where(and(eq(deployments.applicationId, app.id), isNull(deployments.deletedAt)))
      )
        .map((r) => r.name)
        .filter((n) => !unused.has(n));
      ctx.audit.targetId = app.id;
      ctx.audit.details = {
        entry: input.entry,
        ingress: plan.ingress,
        revisions: deployed.map((d) => ({
          name: d.deployment.name,
          version: d.revision.version,
          jobId: d.jobId,
        })),
      };
      return {
        ingress: plan.ingress,
        deployments: plan.deployments.map((d) => deployed.find((x) => x.rayName === d.rayName)!),
        warnings: [
          ...plan.warnings,
          ...stale.map(
            (n) => `deployment ${n} of this application is not part of the Ray application (left running)`,
          ),
        ],
      };
    }),
});
