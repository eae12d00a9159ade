import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { type ClusterDriver, LocalDriver } from "@tessera/cluster";
import { EnvironmentBuilder } from "@tessera/env-builder";
import { createGateway, type Gateway } from "@tessera/gateway";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeWheel } from "../../../packages/env-builder/test/support/wheels.js";
import type { DriverLogHooks } from "../src/index.js";
import {
  createTestPlatform,
  localDriverTestConfig,
  REDIS_URL,
  type TestPlatform,
  waitFor,
} from "./support/platform.js";

/**
 * Ray Serve programs deployed unchanged, every piece real: `rayServe.deploy` imports the module
 * and writes one deployment per Ray deployment, the provisioner runs them as local replicas on
 * Debian's python (FastAPI, Starlette and pandas standing in for the environment PyPI would
 * build), and plain JSON posts with an API key come in through the gateway. The composition
 * graph's handles go replica -> gateway -> replica. A `runtime_env` pip list is built from local
 * wheels (no PyPI here: the operator's pip arguments point at a wheel directory).
 */
const REPO = resolve(import.meta.dirname, "../../..");
const RAY_PYTHON = process.env.TESSERA_TEST_RAY_PYTHON ?? "/usr/bin/python3";
process.env.TESSERA_RAY_INSPECT_PYTHON = RAY_PYTHON;
const bundle = (dir: string, file: string) => ({
  files: { [file]: readFileSync(join(REPO, "examples", dir, file), "utf8") },
});
const HANDLE_SECRET = "ray-e2e-handle-secret";

let dataDir: string;
let platform: TestPlatform;
let gateway: Gateway;
let driver: LocalDriver | undefined;
let api: Awaited<ReturnType<TestPlatform["user"]>>["api"];
let orgId: string;
let slug: string;
let key: string;
let clusterId: string;

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "tessera-ray-e2e-"));
  const wheels = join(dataDir, "wheels");
  mkdirSync(wheels);
  makeWheel(RAY_PYTHON, wheels, "tessprobe", "1.0");
  makeWheel(RAY_PYTHON, wheels, "tessprobe", "2.0");
  platform = await createTestPlatform(
    "raye2e",
    () =>
      (_cluster: unknown, hooks: DriverLogHooks): ClusterDriver => {
        driver ??= new LocalDriver({
          driverConfig: localDriverTestConfig(dataDir, {
            python: RAY_PYTHON,
            maxQuickCrashes: 3,
            drainTimeoutS: 5,
          }),
          // Venvs see Debian's site-packages (starlette) and install from the local wheels only.
          environmentBuilder: new EnvironmentBuilder({
            root: join(dataDir, "envs"),
            python: RAY_PYTHON,
            pipArgs: ["--no-index", "--find-links", wheels],
            systemSitePackages: true,
            micromamba: false,
          }),
          onLog: hooks.onLog,
          onError: () => {},
        });
        return driver;
      },
  );
  gateway = await createGateway({
    db: platform.tdb.db,
    redisUrl: REDIS_URL,
    redisPrefix: platform.prefix,
    port: 0,
    handleSecret: HANDLE_SECRET,
    coldStartTimeoutS: 60,
    routingRefreshMs: 1000,
    loadReportMs: 250,
    log: () => {},
  });
  const provisioner = platform.startProvisioner({
    handles: { secret: HANDLE_SECRET, gatewayUrl: gateway.url },
    maxDrainS: 5,
  });
  await provisioner.ready;
  const user = await platform.user("ml@acme.example");
  api = user.api;
  orgId = user.orgId;
  slug = (await api.orgs.list()).find((o) => o.id === orgId)!.slug;
  key = (await api.apiKeys.create({ orgId, name: "ci" })).key;
  clusterId = (
    await api.clusters.create({
      orgId,
      name: "main",
      quota: { cpus: 8, memoryMb: 16384, gpus: 1, maxReplicas: 20 },
    })
  ).cluster.id;
});

afterAll(async () => {
  await gateway?.close();
  await platform?.close();
  const last = new LocalDriver({ driverConfig: { dataDir }, onError: () => {} });
  await last.stopAllReplicas({ drainTimeoutS: 0 });
  await last.close();
  await driver?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

/** A JSON post through the gateway, as `requests.post(url, json=...)` would send it. */
async function post(app: string, path: string, body: unknown) {
  const res = await fetch(`${gateway.url}/v1/${slug}/${app}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  try {
    return { status: res.status, body: JSON.parse(text) as Record<string, any> };
  } catch {
    return { status: res.status, body: { raw: text } as Record<string, any> };
  }
}

async function deployRay(app: string, entry: string, code: { files: Record<string, string> }) {
  const applicationId = (await api.applications.create({ orgId, clusterId, name: app })).id;
  return api.rayServe.deploy({ orgId, applicationId, entry, code });
}

/** Every deployment's revision live (or, scaled to zero, at least accepted by the controller). */
async function waitAllLive(out: Awaited<ReturnType<typeof deployRay>>) {
  for (const d of out.deployments)
    await waitFor(
      `${d.deployment.name} live`,
      async () => {
        const revs = await api.deployments.revisions({ orgId, deploymentId: d.deployment.id });
        const rev = revs.find((r) => r.id === d.revision.id);
        if (rev?.state === "failed" || rev?.state === "rolled_back")
          throw new Error(`${d.deployment.name} failed: ${rev.failureReason}`);
        return rev?.state === "live" ? rev : undefined;
      },
      120_000,
    );
}

describe("Ray Serve programs through the gateway", () => {
  it("serves the FastAPI-ingress example: POST /deduplicate and POST /sort over rows", async () => {
    const out = await deployRay("frames", "service:app", bundle("ray-serve-fastapi", "service.py"));
    expect(out.deployments.map((d) => d.deployment.name)).toEqual(["custom-service"]);
    await waitAllLive(out);
    const rows = [
      { a: 2, b: "x" },
      { a: 1, b: "y" },
      { a: 2, b: "z" },
    ];
    const dedup = await waitFor("the gateway routes to the replicas", async () => {
      const r = await post("frames", "/deduplicate", { rows, columns: ["a"] });
      return r.status === 200 ? r : undefined;
    });
    expect(dedup.body).toEqual({ rows: [rows[0], rows[1]], removed: 1 });
    const sorted = await post("frames", "/sort", { rows, columns: ["a", "b"] });
    expect(sorted.body.rows.map((r: { b: string }) => r.b)).toEqual(["y", "x", "z"]);
    const invalid = await post("frames", "/sort", { rows: "not rows" });
    expect(invalid.status).toBe(422);
  });

  it("runs the composition graph as four deployments, calling each other through the gateway", async () => {
    const out = await deployRay("graph", "graph:app", bundle("ray-serve-composition", "graph.py"));
    expect(out.ingress).toBe("ingress");
    await waitAllLive(out);
    // length-model autoscales from zero: the first handle call wakes it.
    const answer = await waitFor(
      "the graph answers",
      async () => {
        const r = await post("graph", "/", { text: "Hello big World" });
        return r.status === 200 ? r : undefined;
      },
      120_000,
    );
    expect(answer.body).toEqual({ words: ["hello", "big", "world"], scores: { count: 3, length: 6.5 } });
    const batched = await Promise.all([1, 2, 3, 4].map((n) => post("graph", "/", { text: "ab ".repeat(n) })));
    expect(batched.map((r) => r.body.scores?.length)).toEqual([1, 2, 3, 4]);
    // The handle calls went through the gateway: it woke length-model from zero replicas.
    const lengthModel = out.deployments.find((d) => d.rayName === "LengthModel")!.deployment;
    expect(lengthModel.targetReplicas).toBe(0);
    const awake = await api.deployments.replicas({ orgId, deploymentId: lengthModel.id });
    expect(awake.filter((r) => r.state === "ready").length).toBeGreaterThanOrEqual(1);
  });

  it("builds a deployment's runtime_env pip packages from local wheels", async () => {
    const code = {
      files: {
        "probe.py": [
          "from ray import serve",
          "from starlette.requests import Request",
          "",
          '@serve.deployment(ray_actor_options={"runtime_env": {"pip": ["tessprobe==2.0"]}})',
          "class Probe:",
          "    def __call__(self, request: Request):",
          "        import tessprobe",
          '        return {"version": tessprobe.VERSION}',
          "",
          "app = Probe.bind()",
          "",
        ].join("\n"),
      },
    };
    const out = await deployRay("probe", "probe:app", code);
    expect(out.deployments[0]!.revision.config).toMatchObject({
      environment: { kind: "pip", requirements: ["tessprobe==2.0"] },
    });
    await waitAllLive(out);
    const answer = await waitFor("the probe answers", async () => {
      const r = await post("probe", "/", {});
      return r.status === 200 ? r : undefined;
    });
    expect(answer.body).toEqual({ version: "2.0" });
  });

  it("honours autoscaling_config: replicas follow the load up", async () => {
    const code = {
      files: {
        "slow.py": [
          "import asyncio",
          "from ray import serve",
          "",
          "@serve.deployment(autoscaling_config={'min_replicas': 1, 'max_replicas': 2,",
          "    'target_ongoing_requests': 1, 'upscale_delay_s': 0, 'downscale_delay_s': 2})",
          "class Slow:",
          "    async def __call__(self, request):",
          "        await asyncio.sleep(0.3)",
          "        return 'done'",
          "",
          "app = Slow.bind()",
          "",
        ].join("\n"),
      },
    };
    const out = await deployRay("slow", "slow:app", code);
    await waitAllLive(out);
    const dep = out.deployments[0]!.deployment.id;
    const ready = async () =>
      (await api.deployments.replicas({ orgId, deploymentId: dep })).filter((r) => r.state === "ready")
        .length;
    // Two requests always in flight against a target of one per replica: two replicas.
    let running = true;
    const failures: number[] = [];
    const workers = [0, 1].map(async () => {
      while (running) {
        const r = await post("slow", "/", {}).catch(() => ({ status: 0 }));
        if (r.status !== 200) failures.push(r.status);
      }
    });
    await waitFor("two replicas under load", async () => (await ready()) === 2, 60_000);
    running = false;
    await Promise.all(workers);
    expect(failures).toEqual([]);
    // Scaling down when idle is the autoscaler's own (end-to-end.test.ts): the mapping is what is tested here.
    const steps = (await api.deployments.scalingEvents({ orgId, deploymentId: dep })).map((e) => [
      e.fromReplicas,
      e.toReplicas,
    ]);
    expect(steps).toContainEqual([1, 2]);
  });
});
