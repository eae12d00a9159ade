import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { type ClusterDriver, LocalDriver } from "@tessera/cluster";
import { jobs, organisations, replicas } from "@tessera/db";
import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
// The gateway app, started in-process next to the provisioner (no package dependency needed).
import { createGateway, type Gateway } from "../../gateway/src/index.js";
import type { DriverLogHooks, Provisioner } from "../src/index.js";
import { createTestPlatform, localDriverTestConfig, type TestPlatform, waitFor } from "./support/platform.js";

/**
 * Composition end to end: examples/composition-chain deployed through the tRPC API, run by the
 * provisioner on local processes with handle credentials, called through the gateway, the
 * `preprocess` stage calling `model` through the gateway's handle ingress.
 */
const REPO = resolve(import.meta.dirname, "../../..");
const CHAIN = join(REPO, "examples", "composition-chain");
const SECRET = "composition-e2e-secret";

let dataDir: string;
let platform: TestPlatform;
let provisioner: Provisioner;
let gateway: Gateway;
let driver: LocalDriver | undefined;
let api: Awaited<ReturnType<TestPlatform["user"]>>["api"];
let orgId: string;
let orgSlug: string;
let clusterId: string;
let apiKey: string;
const deploymentIds: Record<string, string> = {};

function manifest(stage: string): { name: string; config: Record<string, unknown> } {
  const m = JSON.parse(readFileSync(join(CHAIN, stage, "tessera.json"), "utf8"));
  // One replica each to start: the scaling test below changes one stage on its own.
  const { autoscaling: _, ...config } = m.config;
  return { name: m.name, config: { ...config, numReplicas: 1 } };
}

async function jobDone(jobId: string) {
  return waitFor(
    `job ${jobId}`,
    async () => {
      const [row] = await platform.tdb.db.select().from(jobs).where(eq(jobs.id, jobId));
      return row && (row.state === "succeeded" || row.state === "failed") ? row : undefined;
    },
    60_000,
  );
}

const readyCount = async (deploymentId: string) =>
  (
    await platform.tdb.db
      .select()
      .from(replicas)
      .where(and(eq(replicas.deploymentId, deploymentId), eq(replicas.state, "ready")))
  ).length;

async function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${gateway.url}/v1/${orgSlug}/chain${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "tessera-composition-e2e-"));
  platform = await createTestPlatform(
    "compe2e",
    () =>
      (_cluster: unknown, hooks: DriverLogHooks): ClusterDriver => {
        driver ??= new LocalDriver({
          driverConfig: localDriverTestConfig(dataDir),
          onLog: hooks.onLog,
          onError: () => {},
        });
        return driver;
      },
  );
  gateway = await createGateway({
    db: platform.tdb.db,
    redisUrl: process.env.REDIS_URL ?? "redis://127.0.0.1:6379",
    redisPrefix: platform.prefix,
    handleSecret: SECRET,
    routingRefreshMs: 500,
    loadReportMs: 200,
    log: () => {},
  });
  provisioner = platform.startProvisioner({ handles: { secret: SECRET, gatewayUrl: gateway.url } });
  await provisioner.ready;
  const u = await platform.user("composer@example.com");
  api = u.api;
  orgId = u.orgId;
  const [org] = await platform.tdb.db.select().from(organisations).where(eq(organisations.id, orgId));
  orgSlug = org!.slug;
  apiKey = (await api.apiKeys.create({ orgId, name: "e2e" })).key;
  clusterId = (await api.clusters.create({ orgId, name: "local" })).cluster.id;
  const applicationId = (await api.applications.create({ orgId, clusterId, name: "chain" })).id;
  // The ingress first: an application's first deployment becomes its ingress.
  for (const stage of ["preprocess", "model"]) {
    const m = manifest(stage);
    const r = await api.deployments.deploy({
      orgId,
      applicationId,
      name: m.name,
      config: m.config,
      code: { files: { "handler.py": readFileSync(join(CHAIN, stage, "handler.py"), "utf8") } },
      prevVersion: 0,
    });
    expect((await jobDone(r.jobId)).state).toBe("succeeded");
    deploymentIds[stage] = r.deployment.id;
  }
  await gateway.refresh();
}, 180_000);

afterAll(async () => {
  await provisioner?.close({ force: true }).catch(() => {});
  await gateway?.close();
  await platform?.close();
  const last = new LocalDriver({ driverConfig: { dataDir }, onError: () => {} });
  await last.stopAllReplicas({ drainTimeoutS: 0 });
  await last.close();
  rmSync(dataDir, { recursive: true, force: true });
});

describe("examples/composition-chain on the platform", () => {
  it("answers through the gateway, the ingress calling the model through a handle", async () => {
    const r = await post(
      "/classify",
      { text: "Please REFUND the double charge" },
      { "x-request-id": "e2e-chain-1" },
    );
    expect(r.status, r.text).toBe(200);
    expect(r.headers.get("x-request-id")).toBe("e2e-chain-1");
    expect(JSON.parse(r.text)).toMatchObject({
      normalised: "please refund the double charge",
      topic: "billing",
    });
  });

  it("streams the model's tokens through both hops", async () => {
    const r = await post("/generate", { prompt: "the site is down" });
    expect(r.status).toBe(200);
    const tokens = r.text
      .split("\n\n")
      .filter((b) => b.startsWith("data: "))
      .map((b) => b.slice(6));
    expect(tokens.join(" ")).toBe("this sounds like a outage question: the site is down");
  });

  it("autoscales the loaded stage on its own (handle calls count as its load) and keeps answering", async () => {
    await api.deployments.updateScaling({
      orgId,
      deploymentId: deploymentIds.model!,
      autoscaling: {
        minReplicas: 1,
        maxReplicas: 3,
        targetOngoingRequests: 1,
        upscaleDelayS: 0,
        downscaleDelayS: 600,
      },
    });
    // Streams keep the model busy (one token every 20 ms): every call reaches it through the
    // gateway's handle ingress, so the gateway reports it as the model's ongoing requests.
    let loading = true;
    const load = Array.from({ length: 6 }, async () => {
      while (loading)
        await post("/generate", { prompt: "the site is down and the payment failed again today" });
    });
    try {
      await waitFor(
        "the model scaled out to 3 replicas",
        async () => (await readyCount(deploymentIds.model!)) === 3,
        90_000,
      );
    } finally {
      loading = false;
      await Promise.all(load);
    }
    expect(await readyCount(deploymentIds.preprocess!)).toBe(1);
    await gateway.refresh();
    const many = await post("/classify-many", {
      texts: Array.from({ length: 8 }, () => "thanks, great work"),
    });
    expect(many.status, many.text).toBe(200);
    expect((JSON.parse(many.text) as { topic: string }[]).every((x) => x.topic === "praise")).toBe(true);
  });
});
