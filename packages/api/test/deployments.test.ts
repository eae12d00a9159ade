import { environmentHash } from "@tessera/core";
import { deployments, environmentLogs, environments, jobLogs, replicaLogs, revisions } from "@tessera/db";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestEnv, failure, sampleCode, sampleConfig, type TestEnv, type TestUser } from "./helpers.js";

let env: TestEnv;
let u: TestUser;
let orgId: string;
let clusterId: string;
let applicationId: string;

beforeAll(async () => {
  env = await createTestEnv("apideploy");
  u = await env.user("deployer@example.com");
  orgId = u.orgId;
  const c = await u.api.clusters.create({
    orgId,
    name: "main",
    quota: { cpus: 4, memoryMb: 8192, gpus: 1, maxReplicas: 10 },
  });
  clusterId = c.cluster.id;
  expect(env.jobs.enqueued.at(-1)).toMatchObject({
    job: { kind: "provisionCluster", clusterId },
    orgId,
    jobId: c.jobId,
  });
  applicationId = (await u.api.applications.create({ orgId, clusterId, name: "app" })).id;
});
afterAll(async () => {
  await env?.tdb.drop();
});

const deploy = (name: string, config: unknown, prevVersion: number, code: unknown = sampleCode) =>
  u.api.deployments.deploy({ orgId, applicationId, name, config, code, prevVersion });

describe("deployment config validation", () => {
  const bad: [string, unknown, Record<string, string>][] = [
    [
      "unknown runtime",
      { ...sampleConfig, runtime: "ruby" },
      { "config.runtime": 'Invalid option: expected one of "python"|"node"' },
    ],
    [
      "entry without class",
      { ...sampleConfig, entry: "handler" },
      {
        "config.entry":
          "entry must be 'module:Class' (e.g. 'handler:Dataframe' or 'src/handler.ts:Dataframe')",
      },
    ],
    [
      "zero cpus",
      { ...sampleConfig, resources: { cpus: 0 } },
      { "config.resources.cpus": "cpus must be > 0" },
    ],
    [
      "negative gpus",
      { ...sampleConfig, resources: { gpus: -0.5 } },
      { "config.resources.gpus": "gpus must be >= 0" },
    ],
    [
      "tiny memory",
      { ...sampleConfig, resources: { memoryMb: 16 } },
      { "config.resources.memoryMb": "memoryMb must be at least 64" },
    ],
    [
      "replicas and autoscaling",
      { ...sampleConfig, autoscaling: { minReplicas: 1, maxReplicas: 2 } },
      { "config.autoscaling": "set either numReplicas or autoscaling, not both" },
    ],
    [
      "max below min",
      { ...sampleConfig, numReplicas: undefined, autoscaling: { minReplicas: 5, maxReplicas: 2 } },
      { "config.autoscaling.maxReplicas": "maxReplicas must be >= minReplicas" },
    ],
    [
      "initial outside bounds",
      {
        ...sampleConfig,
        numReplicas: undefined,
        autoscaling: { minReplicas: 1, maxReplicas: 3, initialReplicas: 9 },
      },
      {
        "config.autoscaling.initialReplicas": "initialReplicas must lie between minReplicas and maxReplicas",
      },
    ],
    [
      "node with pip env",
      { ...sampleConfig, runtime: "node", entry: "handler.ts:Echo" },
      { "config.environment.kind": "a node deployment cannot use a pip environment" },
    ],
    [
      "shell metacharacters in a requirement",
      { ...sampleConfig, environment: { kind: "pip", requirements: ["numpy; rm -rf /"] } },
      { "config.environment.requirements.0": "requirement contains shell metacharacters" },
    ],
    [
      "bad python version",
      { ...sampleConfig, environment: { kind: "pip", requirements: [], python: "2" } },
      { "config.environment.python": "python must look like 3.X" },
    ],
    [
      "fractional replicas",
      { ...sampleConfig, numReplicas: 1.5 },
      { "config.numReplicas": "Invalid input: expected int, received number" },
    ],
    ["unknown key", { ...sampleConfig, replicas: 3 }, { config: 'Unrecognized key: "replicas"' }],
    // The test cluster's quota: 4 cpus, 8192 MB, 1 gpu, 10 replicas.
    [
      "over the cluster's cpus",
      { ...sampleConfig, resources: { cpus: 6 } },
      { "config.resources.cpus": "exceeds the cluster quota of 4 cpus" },
    ],
    [
      "over the cluster's replicas",
      { ...sampleConfig, numReplicas: undefined, autoscaling: { minReplicas: 0, maxReplicas: 50 } },
      { "config.autoscaling.maxReplicas": "exceeds the cluster quota of 10 replicas" },
    ],
    [
      "no rollout progress",
      { ...sampleConfig, rollout: { maxSurge: 0, maxUnavailable: 0 } },
      { "config.rollout.maxSurge": "maxSurge and maxUnavailable cannot both be 0" },
    ],
  ];

  it.each(bad)("%s gives its field error", async (_label, config, expected) => {
    const err = await failure(deploy("echo-bad", config, 0));
    expect(err.code).toBe("VALIDATION_FAILED");
    expect(err.httpStatus).toBe(400);
    expect(err.fieldErrors).toEqual(expected);
  });

  it("reports config and code errors together, and path traversal in the bundle", async () => {
    const err = await failure(
      deploy("echo-bad", { ...sampleConfig, maxOngoingRequests: 0 }, 0, { files: { "../evil.py": "x" } }),
    );
    expect(err.fieldErrors).toEqual({
      "config.maxOngoingRequests": "Too small: expected number to be >=1",
      "code.files.../evil.py": "file paths must be relative, without '..'",
    });
    expect((await failure(deploy("echo-bad", sampleConfig, 0, { files: {} }))).fieldErrors).toEqual({
      "code.files": "the bundle has no files",
    });
    expect((await failure(deploy("Bad Name", sampleConfig, 0))).fieldErrors).toEqual({
      name: "lower-case letters, digits and '-', starting and ending with a letter or digit",
    });
  });

  it("stored nothing for the rejected deploys", async () => {
    expect(await u.api.deployments.list({ orgId })).toEqual([]);
    expect(env.jobs.enqueued.filter((j) => j.job.kind === "deployRevision")).toEqual([]);
  });
});

describe("deploy, redeploy, rollback", () => {
  let deploymentId: string;
  let rev1: string;

  it("creates the deployment, its first revision and environment, and enqueues deployRevision", async () => {
    const config = {
      ...sampleConfig,
      numReplicas: undefined,
      autoscaling: { minReplicas: 1, maxReplicas: 4, initialReplicas: 2 },
    };
    const r = await deploy("echo", config, 0);
    deploymentId = r.deployment.id;
    rev1 = r.revision.id;
    expect(r.deployment).toMatchObject({
      name: "echo",
      version: 1,
      desiredRevisionId: rev1,
      targetReplicas: 2,
      clusterId,
      state: "deploying",
    });
    expect(r.deployment.scaling).toMatchObject({
      autoscaling: { minReplicas: 1, maxReplicas: 4, targetOngoingRequests: 2 },
    });
    expect(r.revision).toMatchObject({ version: 1, state: "pending" });
    expect(r.revision.config).toMatchObject({
      runtime: "python",
      maxOngoingRequests: 4,
      healthCheck: { periodS: 5 },
    });
    const hash = environmentHash("python", { kind: "pip", requirements: ["numpy==1.26.4"] });
    expect(r.revision.envHash).toBe(hash);
    expect(await env.db.select().from(environments).where(eq(environments.hash, hash))).toHaveLength(1);
    expect(env.jobs.enqueued.at(-1)).toMatchObject({
      job: { kind: "deployRevision", revisionId: rev1 },
      orgId,
      jobId: r.jobId,
    });
    expect((await u.api.applications.get({ orgId, applicationId })).ingressDeployment).toBe("echo");
  });

  it("redeploys with the current version and refuses a stale or invented one", async () => {
    const r = await deploy("echo", { ...sampleConfig, numReplicas: 3 }, 1);
    expect(r.deployment).toMatchObject({
      version: 2,
      desiredRevisionId: r.revision.id,
      targetReplicas: 3,
      scaling: { numReplicas: 3 },
    });
    expect(r.revision.version).toBe(2);
    const stale = await failure(deploy("echo", sampleConfig, 1));
    expect(stale.code).toBe("CONFLICT");
    expect(stale.fieldErrors).toEqual({ prevVersion: "is 2" });
    expect((await failure(deploy("brand-new", sampleConfig, 4))).code).toBe("CONFLICT");
    expect((await u.api.deployments.revisions({ orgId, deploymentId })).map((x) => x.version)).toEqual([
      2, 1,
    ]);
  });

  it("lets exactly one of N concurrent deploys with the same prevVersion win", async () => {
    const N = 8;
    const results = await Promise.allSettled(
      Array.from({ length: N }, (_, i) => deploy("echo", { ...sampleConfig, userConfig: { attempt: i } }, 2)),
    );
    const won = results.filter((r) => r.status === "fulfilled");
    expect(won).toHaveLength(1);
    for (const r of results)
      if (r.status === "rejected") expect((await failure(Promise.reject(r.reason))).code).toBe("CONFLICT");
    const revs = await env.db.select().from(revisions).where(eq(revisions.deploymentId, deploymentId));
    expect(revs.map((x) => x.version).sort()).toEqual([1, 2, 3]);
    const dep = await u.api.deployments.get({ orgId, deploymentId });
    expect(dep.version).toBe(3);
    expect(dep.desiredRevisionId).toBe(
      (won[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof deploy>>>).value.revision.id,
    );
    expect(dep.desiredRevision?.version).toBe(3);
  });

  it("lets exactly one of N concurrent first deploys of a new name win", async () => {
    const results = await Promise.allSettled(
      Array.from({ length: 6 }, () => deploy("fresh", sampleConfig, 0)),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    for (const r of results)
      if (r.status === "rejected") expect((await failure(Promise.reject(r.reason))).code).toBe("CONFLICT");
    expect(
      (await u.api.deployments.list({ orgId, applicationId })).filter((d) => d.name === "fresh"),
    ).toHaveLength(1);
  });

  it("rolls back by copying an old revision into a new one", async () => {
    const r = await u.api.deployments.rollback({ orgId, deploymentId, revisionId: rev1, prevVersion: 3 });
    expect(r.revision.version).toBe(4);
    const [old, copy] = await Promise.all(
      [rev1, r.revision.id].map(
        async (id) => (await env.db.select().from(revisions).where(eq(revisions.id, id)))[0]!,
      ),
    );
    expect(copy!.config).toEqual(old!.config);
    expect(copy!.code).toEqual(old!.code);
    expect(copy!.envHash).toBe(old!.envHash);
    expect(env.jobs.enqueued.at(-1)?.job).toEqual({ kind: "deployRevision", revisionId: r.revision.id });
    expect(
      (await failure(u.api.deployments.rollback({ orgId, deploymentId, revisionId: rev1, prevVersion: 3 })))
        .code,
    ).toBe("CONFLICT");
  });

  it("scales without a new revision, recording an operator scaling event", async () => {
    const r = await u.api.deployments.updateScaling({ orgId, deploymentId, numReplicas: 0 });
    expect(r.deployment).toMatchObject({ version: 4, targetReplicas: 0, scaling: { numReplicas: 0 } });
    expect(env.jobs.enqueued.at(-1)?.job).toEqual({ kind: "scaleDeployment", deploymentId });
    const a = await u.api.deployments.updateScaling({
      orgId,
      deploymentId,
      autoscaling: { minReplicas: 1, maxReplicas: 5 },
    });
    expect(a.deployment.targetReplicas).toBe(1);
    const events = await u.api.deployments.scalingEvents({ orgId, deploymentId });
    expect(events.map((e) => [e.fromReplicas, e.toReplicas, e.reason])).toEqual([
      [0, 1, "operator"],
      [2, 0, "operator"],
    ]);
    const bad = await failure(
      u.api.deployments.updateScaling({
        orgId,
        deploymentId,
        autoscaling: { minReplicas: 3, maxReplicas: 1 },
      }),
    );
    expect(bad.fieldErrors).toEqual({ "autoscaling.maxReplicas": "maxReplicas must be >= minReplicas" });
    expect((await failure(u.api.deployments.updateScaling({ orgId, deploymentId }))).code).toBe(
      "VALIDATION_FAILED",
    );
    expect(
      (await failure(u.api.deployments.updateScaling({ orgId, deploymentId, numReplicas: 11 }))).fieldErrors,
    ).toEqual({
      numReplicas: "exceeds the cluster quota of 10 replicas",
    });
    expect((await u.api.deployments.revisions({ orgId, deploymentId })).length).toBe(4);
  });

  it("serves job progress, build logs and replica logs", async () => {
    const jobId = env.jobs.enqueued.at(-1)!.jobId;
    await env.db.insert(jobLogs).values([
      { jobId, line: "scaling to 1" },
      { jobId, line: "done" },
    ]);
    const j = await u.api.jobs.get({ orgId, jobId });
    expect(j.job.kind).toBe("scaleDeployment");
    expect(j.lines.map((l) => l.line)).toEqual(["scaling to 1", "done"]);
    expect(
      (await u.api.jobs.get({ orgId, jobId, sinceId: j.lines[0]!.id })).lines.map((l) => l.line),
    ).toEqual(["done"]);

    const hash = environmentHash("python", { kind: "pip", requirements: ["numpy==1.26.4"] });
    await env.db.insert(environmentLogs).values({ envHash: hash, line: "Collecting numpy==1.26.4" });
    const e = await u.api.environments.get({ orgId, hash });
    expect(e.environment.state).toBe("pending");
    expect(e.lines.map((l) => l.line)).toEqual(["Collecting numpy==1.26.4"]);
    expect((await failure(u.api.environments.get({ orgId, hash: "0".repeat(32) }))).code).toBe("NOT_FOUND");

    const replicaId = "00000000-0000-4000-8000-000000000001";
    await env.db.insert(replicaLogs).values(
      (["debug", "info", "warn", "error"] as const).map((level) => ({
        orgId,
        deploymentId,
        replicaId,
        level,
        message: `a ${level} line`,
      })),
    );
    const warn = await u.api.deployments.logs({ orgId, deploymentId, level: "warn" });
    expect(warn.lines.map((l) => l.message)).toEqual(["a warn line", "a error line"]);
    const after = await u.api.deployments.logs({ orgId, deploymentId, sinceId: warn.lines[0]!.id });
    expect(after.lines.map((l) => l.level)).toEqual(["error"]);
    expect(after.nextSinceId).toBe(after.lines[0]!.id);
  });
});

describe("deletes", () => {
  it("deletes deployments and applications through jobs, and clusters only when empty", async () => {
    const [fresh] = (await u.api.deployments.list({ orgId })).filter((d) => d.name === "fresh");
    const d = await u.api.deployments.delete({ orgId, deploymentId: fresh!.id });
    expect(env.jobs.enqueued.at(-1)).toMatchObject({
      job: { kind: "deleteDeployment", deploymentId: fresh!.id },
      jobId: d.jobId,
    });
    expect((await u.api.deployments.list({ orgId })).map((x) => x.name)).toEqual(["echo"]);
    // The name is free again at once.
    expect((await deploy("fresh", sampleConfig, 0)).revision.version).toBe(1);

    const conflict = await failure(u.api.clusters.delete({ orgId, clusterId }));
    expect(conflict.code).toBe("CONFLICT");
    await u.api.applications.delete({ orgId, applicationId });
    expect(env.jobs.enqueued.at(-1)?.job).toEqual({ kind: "deleteApplication", applicationId });
    expect(await u.api.deployments.list({ orgId })).toEqual([]);
    const c = await u.api.clusters.delete({ orgId, clusterId });
    expect(c.cluster.state).toBe("deleting");
    expect(env.jobs.enqueued.at(-1)?.job).toEqual({ kind: "destroyCluster", clusterId });
    expect(await u.api.clusters.list({ orgId })).toEqual([]);
  });
});

describe("after a failed rollout", () => {
  it("numbers the next revision after the newest one, with prevVersion the live version", async () => {
    const cluster = await u.api.clusters.create({
      orgId,
      name: "retry",
      quota: { cpus: 4, memoryMb: 8192, gpus: 0, maxReplicas: 10 },
    });
    const app = await u.api.applications.create({ orgId, clusterId: cluster.cluster.id, name: "retry-app" });
    const deploy = (config: unknown, prevVersion: number) =>
      u.api.deployments.deploy({
        orgId,
        applicationId: app.id,
        name: "retry",
        config,
        code: sampleCode,
        prevVersion,
      });
    const first = await deploy(sampleConfig, 0);
    const failed = await deploy({ ...sampleConfig, userConfig: { broken: true } }, 1);
    expect(failed.revision.version).toBe(2);
    // What the controller does when revision 2 never becomes healthy: back to the live revision.
    await env.db
      .update(deployments)
      .set({ version: 1, desiredRevisionId: first.revision.id })
      .where(eq(deployments.id, first.deployment.id));
    const next = await deploy(sampleConfig, 1);
    expect(next.revision.version).toBe(3);
    expect(next.deployment.version).toBe(3);
    expect((await failure(deploy(sampleConfig, 1))).code).toBe("CONFLICT");
  });
});
