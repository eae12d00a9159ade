import { setTimeout as sleep } from "node:timers/promises";
import { bundleDirectory } from "../bundle.js";
import { type ApiClient, CliError } from "../client.js";
import { MANIFEST_FILE, type Manifest, readManifest } from "../manifest.js";
import { type OrgInfo, resolveApplication } from "../org.js";

export interface DeployOptions {
  dir: string;
  name?: string;
  application?: string;
  cluster?: string;
  /** Overrides of the manifest's config (`runtime`, `entry`). */
  runtime?: string;
  entry?: string;
  /** Return after submitting instead of following the rollout. */
  detach?: boolean;
  timeoutS: number;
  pollMs?: number;
}

export interface DeployResult {
  deploymentId: string;
  version: number;
  state: string;
  reason: string | null;
  endpoint: string;
}

/**
 * Bundle a directory, deploy it as the next revision (version-aware: the current version is read
 * and named as prevVersion, so a concurrent deploy by a teammate is refused, not overwritten), then
 * follow the job: its log, the environment build log, replica states, until the revision is live
 * or has failed.
 */
export async function deploy(
  api: ApiClient,
  org: OrgInfo,
  gatewayUrl: string,
  o: DeployOptions,
  print: (line: string) => void,
): Promise<DeployResult> {
  const code = await bundleDirectory(o.dir);
  const manifest = await readManifest(o.dir);
  if (manifest.rayServe) return deployRayServe(api, org, gatewayUrl, o, manifest, code, print);
  const name = o.name ?? manifest.name;
  const appName = o.application ?? manifest.application ?? name;
  if (!name) throw new CliError(`name the deployment: --name, or "name" in ${MANIFEST_FILE}`);
  const config: Record<string, unknown> = { ...manifest.config };
  if (o.runtime) config.runtime = o.runtime;
  if (o.entry) config.entry = o.entry;

  const app = await resolveApplication(api, org, appName!, o.cluster ?? manifest.cluster, print);
  const current = (
    await api.applications.get.query({ orgId: org.id, applicationId: app.id })
  ).deployments.find((d) => d.name === name);
  const prevVersion = current?.version ?? 0;
  const submitted = await api.deployments.deploy.mutate({
    orgId: org.id,
    applicationId: app.id,
    name,
    config,
    code,
    prevVersion,
  });
  const endpoint = `${gatewayUrl.replace(/\/+$/, "")}/v1/${org.slug}/${app.name}/`;
  const version = submitted.revision.version;
  print(`submitted ${app.name}/${name} revision ${version} (job ${submitted.jobId})`);
  if (o.detach)
    return { deploymentId: submitted.deployment.id, version, state: "deploying", reason: null, endpoint };
  return follow(
    api,
    org,
    {
      deploymentId: submitted.deployment.id,
      version,
      jobId: submitted.jobId,
      envHash: submitted.revision.envHash,
    },
    endpoint,
    Date.now() + o.timeoutS * 1000,
    o.pollMs,
    print,
  );
}

/**
 * A Ray Serve application (`rayServe` in tessera.json): every Ray deployment becomes a deployment
 * of the application, submitted together with the versions last seen, then followed one by one.
 */
async function deployRayServe(
  api: ApiClient,
  org: OrgInfo,
  gatewayUrl: string,
  o: DeployOptions,
  manifest: Manifest,
  code: Awaited<ReturnType<typeof bundleDirectory>>,
  print: (line: string) => void,
): Promise<DeployResult> {
  const appName = o.application ?? manifest.application;
  if (!appName) throw new CliError(`name the application: --app, or "application" in ${MANIFEST_FILE}`);
  const app = await resolveApplication(api, org, appName, o.cluster ?? manifest.cluster, print);
  const current = (await api.applications.get.query({ orgId: org.id, applicationId: app.id })).deployments;
  const submitted = await api.rayServe.deploy.mutate({
    orgId: org.id,
    applicationId: app.id,
    entry: o.entry ?? manifest.rayServe!.entry,
    code,
    prevVersions: Object.fromEntries(current.map((d) => [d.name, d.version])),
    // Validated by the API, which answers field by field.
    environment: manifest.rayServe!.environment as Parameters<
      ApiClient["rayServe"]["deploy"]["mutate"]
    >[0]["environment"],
  });
  for (const w of submitted.warnings) print(`warning: ${w}`);
  for (const d of submitted.deployments)
    print(
      `submitted ${app.name}/${d.deployment.name} revision ${d.revision.version} (job ${d.jobId}) for Ray deployment ${d.rayName}`,
    );
  const endpoint = `${gatewayUrl.replace(/\/+$/, "")}/v1/${org.slug}/${app.name}/`;
  const deadline = Date.now() + o.timeoutS * 1000;
  const ingress = submitted.deployments.find((d) => d.deployment.name === submitted.ingress)!;
  let result: DeployResult = {
    deploymentId: ingress.deployment.id,
    version: ingress.revision.version,
    state: "deploying",
    reason: null,
    endpoint,
  };
  if (o.detach) return result;
  for (const d of submitted.deployments) {
    const r = await follow(
      api,
      org,
      {
        deploymentId: d.deployment.id,
        version: d.revision.version,
        jobId: d.jobId,
        envHash: d.revision.envHash,
      },
      endpoint,
      deadline,
      o.pollMs,
      print,
    );
    if (r.state === "failed") return r;
    if (d === ingress) result = r;
  }
  return result;
}

/** Follows one revision's rollout (job log, environment build, replicas) until live or failed. */
async function follow(
  api: ApiClient,
  org: OrgInfo,
  submitted: { deploymentId: string; version: number; jobId: string; envHash: string },
  endpoint: string,
  deadline: number,
  pollMs: number | undefined,
  print: (line: string) => void,
): Promise<DeployResult> {
  const { version } = submitted;
  let jobSince = 0;
  let envSince = 0;
  let lastReplicas = "";
  for (;;) {
    const job = await api.jobs.get.query({ orgId: org.id, jobId: submitted.jobId, sinceId: jobSince });
    for (const l of job.lines) print(`  ${l.line}`);
    jobSince = job.nextSinceId;
    const env = await api.environments.get
      .query({ orgId: org.id, hash: submitted.envHash, sinceId: envSince })
      .catch(() => null);
    if (env) {
      for (const l of env.lines) print(`  [env] ${l.line}`);
      envSince = env.nextSinceId;
    }
    const dep = await api.deployments.get.query({ orgId: org.id, deploymentId: submitted.deploymentId });
    const reps = await api.deployments.replicas.query({ orgId: org.id, deploymentId: dep.id });
    const summary = reps.map((r) => r.state).join(" ");
    if (summary !== lastReplicas) {
      print(`  replicas: ${summary || "none"}`);
      lastReplicas = summary;
    }
    const mine = dep.liveRevision?.version === version;
    const revisions = await api.deployments.revisions.query({ orgId: org.id, deploymentId: dep.id });
    const rev = revisions.find((r) => r.version === version);
    if (mine && dep.state === "ready") {
      print(`revision ${version} is live: ${endpoint}`);
      return { deploymentId: dep.id, version, state: "ready", reason: null, endpoint };
    }
    if (rev?.state === "failed" || rev?.state === "rolled_back") {
      const reason = rev.failureReason ?? dep.stateReason ?? "the rollout failed";
      print(`revision ${version} failed: ${reason}`);
      if (dep.liveRevision) print(`revision ${dep.liveRevision.version} is still serving`);
      return { deploymentId: dep.id, version, state: "failed", reason, endpoint };
    }
    if (Date.now() > deadline)
      throw new CliError(
        `revision ${version} of ${dep.name} is not live in time (state ${dep.state}); still rolling out`,
      );
    await sleep(pollMs ?? 1000);
  }
}
