import { readFileSync } from "node:fs";
import { join } from "node:path";
import { applications, deployments, revisions } from "@tessera/db";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestEnv, failure, type TestEnv, type TestUser } from "./helpers.js";

// The deploy-time inspector imports the tenant's module: Debian's python has fastapi/pandas.
process.env.TESSERA_RAY_INSPECT_PYTHON = process.env.TESSERA_TEST_RAY_PYTHON ?? "/usr/bin/python3";

const EXAMPLES = join(import.meta.dirname, "..", "..", "..", "examples");
const composition = {
  files: { "graph.py": readFileSync(join(EXAMPLES, "ray-serve-composition", "graph.py"), "utf8") },
};

/** A Ray Serve 1.x style module: `.options(version=..., prev_version=...).deploy()`. */
function legacy(version: string, prevVersion?: string) {
  const options = prevVersion
    ? `version="${version}", prev_version="${prevVersion}"`
    : `version="${version}"`;
  return {
    files: {
      "svc.py": [
        "from ray import serve",
        "",
        "@serve.deployment(num_replicas=2)",
        "class CustomService:",
        "    def __call__(self, request):",
        `        return "${version}"`,
        "",
        `CustomService.options(${options}).deploy()`,
        "",
      ].join("\n"),
    },
  };
}

let env: TestEnv;
let u: TestUser;
let orgId: string;
let applicationId: string;
let clusterId: string;

beforeAll(async () => {
  env = await createTestEnv("apiray");
  u = await env.user("ray@example.com");
  orgId = u.orgId;
  const c = await u.api.clusters.create({
    orgId,
    name: "main",
    quota: { cpus: 8, memoryMb: 8192, gpus: 1, maxReplicas: 10 },
  });
  clusterId = c.cluster.id;
  applicationId = (await u.api.applications.create({ orgId, clusterId, name: "graph" })).id;
});
afterAll(async () => {
  await env?.tdb.drop();
});

/** Runs `fn` while the environment variable `name` is `value`. */
async function withEnv<T>(name: string, value: string, fn: () => Promise<T>): Promise<T> {
  const saved = process.env[name];
  process.env[name] = value;
  try {
    return await fn();
  } finally {
    if (saved === undefined) delete process.env[name];
    else process.env[name] = saved;
  }
}

const versions = async (appId: string) =>
  Object.fromEntries(
    (await env.db.select().from(deployments).where(eq(deployments.applicationId, appId))).map((d) => [
      d.name,
      d.version,
    ]),
  );

describe("rayServe.deploy", () => {
  it("deploys every deployment of the graph as a Tessera deployment of the application", async () => {
    env.jobs.clear();
    const out = await u.api.rayServe.deploy({
      orgId,
      applicationId,
      entry: "graph:app",
      code: composition,
      label: "first",
    });
    expect(out.ingress).toBe("ingress");
    expect(out.deployments.map((d) => [d.rayName, d.deployment.name, d.revision.version, d.created])).toEqual(
      [
        ["Preprocessor", "preprocessor", 1, true],
        ["LengthModel", "length-model", 1, true],
        ["CountModel", "count-model", 1, true],
        ["Ingress", "ingress", 1, true],
      ],
    );
    expect(out.deployments.every((d) => d.revision.label === "first")).toBe(true);
    const [app] = await env.db.select().from(applications).where(eq(applications.id, applicationId));
    expect(app!.ingressDeployment).toBe("ingress");
    // Each deployment scaled on its own, as its Ray options declared.
    const rows = await env.db.select().from(deployments).where(eq(deployments.applicationId, applicationId));
    const byName = Object.fromEntries(rows.map((d) => [d.name, d]));
    expect(byName["length-model"]!.scaling).toEqual({
      autoscaling: {
        minReplicas: 0,
        maxReplicas: 4,
        targetOngoingRequests: 2,
        upscaleDelayS: 1,
        downscaleDelayS: 30,
      },
    });
    expect(byName.preprocessor!.scaling).toEqual({ numReplicas: 1 });
    const [rev] = await env.db
      .select()
      .from(revisions)
      .where(eq(revisions.deploymentId, byName["length-model"]!.id));
    expect(rev!.config).toMatchObject({
      entry: "graph:app",
      resources: { cpus: 0.5, gpus: 0, memoryMb: 300 },
      userConfig: { __ray_serve__: { deployment: "LengthModel", handles: { LengthModel: "length-model" } } },
    });
    const enqueued = env.jobs.enqueued.map((j) => j.job);
    expect(enqueued).toHaveLength(4);
    expect(enqueued).toEqual(
      expect.arrayContaining(
        out.deployments.map((d) => ({ kind: "deployRevision", revisionId: d.revision.id })),
      ),
    );
  });

  it("updates all deployments together, and refuses all of it when one prevVersion is stale", async () => {
    const prev = await versions(applicationId);
    const stale = await failure(
      u.api.rayServe.deploy({
        orgId,
        applicationId,
        entry: "graph:app",
        code: composition,
        prevVersions: { ...prev, "count-model": prev["count-model"]! - 1 },
      }),
    );
    expect(stale.code).toBe("CONFLICT");
    expect(stale.fieldErrors).toEqual({ "prevVersions.count-model": "is 1" });
    expect(await versions(applicationId)).toEqual(prev);
    expect(await env.db.select().from(revisions)).toHaveLength(4);

    const ok = await u.api.rayServe.deploy({
      orgId,
      applicationId,
      entry: "graph:app",
      code: composition,
      prevVersions: prev,
    });
    expect(ok.deployments.map((d) => d.revision.version)).toEqual([2, 2, 2, 2]);
    expect(ok.deployments.every((d) => d.revision.label === null && !d.created)).toBe(true);
  });

  it("maps version/prev_version of .deploy()-era code onto revision labels, refusing a stale one", async () => {
    const other = (
      await u.api.applications.create({
        orgId,
        clusterId: (await u.api.clusters.list({ orgId }))[0]!.id,
        name: "legacy",
      })
    ).id;
    const deployLegacy = (code: ReturnType<typeof legacy>, prevVersions: Record<string, number> = {}) =>
      u.api.rayServe.deploy({ orgId, applicationId: other, entry: "svc:CustomService", code, prevVersions });
    const noBase = await failure(deployLegacy(legacy("v2", "v1")));
    expect(noBase.code).toBe("CONFLICT");
    const v1 = await deployLegacy(legacy("v1"));
    expect(v1.deployments[0]).toMatchObject({
      deployment: { name: "custom-service" },
      revision: { label: "v1" },
    });
    const v2 = await deployLegacy(legacy("v2", "v1"), { "custom-service": 1 });
    expect(v2.deployments[0]!.revision).toMatchObject({ version: 2, label: "v2" });
    // A teammate still on v1 deploys against it: rejected, as Ray's prev_version check did.
    const raced = await failure(deployLegacy(legacy("v2b", "v1"), { "custom-service": 2 }));
    expect(raced.code).toBe("CONFLICT");
    expect(raced.message).toContain('is at version "v2", not "v1"');
    const history = await u.api.deployments.revisions({
      orgId,
      deploymentId: v2.deployments[0]!.deployment.id,
    });
    expect(history.map((r) => [r.version, r.label])).toEqual([
      [2, "v2"],
      [1, "v1"],
    ]);
  });

  it("labels plain deploys too (deployments.deploy takes a label)", async () => {
    const out = await u.api.deployments.deploy({
      orgId,
      applicationId,
      name: "plain",
      config: { runtime: "python", entry: "graph:app" },
      code: composition,
      prevVersion: 0,
      label: "  git-3f2a9c  ",
    });
    expect(out.revision.label).toBe("git-3f2a9c");
    const blank = await failure(
      u.api.deployments.deploy({
        orgId,
        applicationId,
        name: "plain",
        config: { runtime: "python", entry: "graph:app" },
        code: composition,
        prevVersion: 1,
        label: " ",
      }),
    );
    expect(blank.code).toBe("VALIDATION_FAILED");
  });

  it("warns about deployments of the application that the Ray application no longer has", async () => {
    const prev = await versions(applicationId);
    const out = await u.api.rayServe.deploy({
      orgId,
      applicationId,
      entry: "graph:app",
      code: composition,
      prevVersions: prev,
    });
    expect(out.warnings).toContain(
      "deployment plain of this application is not part of the Ray application (left running)",
    );
  });

  it("refuses unsupported Ray APIs, unknown options and over-quota resources, naming them", async () => {
    const before = await env.db.select().from(revisions);
    const refusal = (body: string) =>
      failure(
        u.api.rayServe.deploy({
          orgId,
          applicationId,
          entry: "app:app",
          code: { files: { "app.py": `from ray import serve\n\n${body}` } },
        }),
      );
    const multiplexed = await refusal(
      "@serve.deployment\nclass M:\n    async def __call__(self, request):\n        return serve.get_multiplexed_model_id()\n\napp = M.bind()\n",
    );
    expect(multiplexed.code).toBe("VALIDATION_FAILED");
    expect(multiplexed.fieldErrors).toEqual({
      "code.app.py:6": "serve.get_multiplexed_model_id is not supported on Tessera",
    });
    const option = await refusal(
      "@serve.deployment(max_replicas_per_node=1)\nclass M:\n    def __call__(self, r):\n        return 1\n\napp = M.bind()\n",
    );
    expect(option.fieldErrors).toEqual({
      "deployments.M.max_replicas_per_node": "not supported: Tessera places replicas itself",
    });
    const gpus = await refusal(
      "@serve.deployment(ray_actor_options={'num_gpus': 2})\nclass M:\n    def __call__(self, r):\n        return 1\n\napp = M.bind()\n",
    );
    expect(gpus.fieldErrors).toEqual({
      "deployments.M.config.resources.gpus": "exceeds the cluster quota of 1 gpus",
    });
    const broken = await refusal("def broken(:\n");
    expect(broken.code).toBe("VALIDATION_FAILED");
    expect(broken.fieldErrors!.entry).toContain("SyntaxError");
    expect(await env.db.select().from(revisions)).toHaveLength(before.length);
  });

  it("says so when the platform has no python to inspect with", async () => {
    const refused = await withEnv("TESSERA_RAY_INSPECT_PYTHON", "/nonexistent/python3", () =>
      failure(u.api.rayServe.deploy({ orgId, applicationId, entry: "graph:app", code: composition })),
    );
    expect(refused.code).toBe("ENV_UNSUPPORTED");
    expect(refused.message).toContain("TESSERA_RAY_INSPECT_PYTHON");
  });

  it("refuses deploys while the inspecting user is misconfigured, rather than importing as root", async () => {
    const refused = await withEnv("TESSERA_RAY_INSPECT_UID", "nobody", () =>
      failure(u.api.rayServe.deploy({ orgId, applicationId, entry: "graph:app", code: composition })),
    );
    expect(refused.code).toBe("ENV_UNSUPPORTED");
    expect(refused.message).toContain("TESSERA_RAY_INSPECT_UID must be uid or uid:gid");
  });

  it.skipIf(process.getuid?.() !== 0)("imports as TESSERA_RAY_INSPECT_UID when set", async () => {
    const other = (await u.api.applications.create({ orgId, clusterId: clusterId, name: "as-nobody" })).id;
    const whoami = {
      files: { "who.py": 'import os\nraise RuntimeError("uid %d" % os.getuid())\n' },
    };
    const refused = await withEnv("TESSERA_RAY_INSPECT_UID", "65534", () =>
      failure(u.api.rayServe.deploy({ orgId, applicationId: other, entry: "who:app", code: whoami })),
    );
    expect(refused.fieldErrors!.entry).toContain("RuntimeError: uid 65534");
    const out = await withEnv("TESSERA_RAY_INSPECT_UID", "65534:65534", () =>
      u.api.rayServe.deploy({ orgId, applicationId: other, entry: "graph:app", code: composition }),
    );
    expect(out.deployments).toHaveLength(4);
  });

  it("needs the admin role", async () => {
    const member = await env.user("member@example.com");
    const inv = await u.api.invitations.create({ orgId, email: member.email, role: "member" });
    await member.api.invitations.accept({ token: inv.token });
    const refused = await failure(
      member.api.rayServe.deploy({ orgId, applicationId, entry: "graph:app", code: composition }),
    );
    expect(refused.code).toBe("FORBIDDEN");
  });
});
