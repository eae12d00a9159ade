import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  continuousLoad,
  deploy,
  type LocalStack,
  readyReplicaCount,
  send,
  startLocalStack,
  type Tenant,
  waitFailed,
  waitLive,
} from "./support/local-stack.js";
import { waitFor } from "./support/platform.js";

/**
 * The product as a tenant uses it, every piece real: the tRPC API enqueues on BullMQ, the
 * provisioner runs the examples as local processes, and requests come in through the gateway with
 * an API key, exactly as `curl` would send them.
 */
const REPO = resolve(import.meta.dirname, "../../..");
const example = (dir: string, file: string) => readFileSync(join(REPO, "examples", dir, file), "utf8");
const PYTHON = example("python-dataframe", "handler.py");
const TS = example("ts-dataframe", "handler.ts");

let stack: LocalStack;
let acme: Tenant;
let globex: Tenant;

beforeAll(async () => {
  stack = await startLocalStack("e2e");
  acme = await stack.tenant("ops@acme.example");
  globex = await stack.tenant("ops@globex.example");
});

afterAll(async () => {
  await stack?.close();
});

const rows = [
  { id: 2, name: "b" },
  { id: 1, name: "a" },
  { id: 2, name: "b" },
];
const pythonConfig = { runtime: "python", entry: "handler:Dataframe", numReplicas: 2, maxBodyBytes: 4096 };
const tsConfig = { runtime: "node", entry: "handler.ts:Dataframe", numReplicas: 1 };

describe("deploy and call through the gateway", () => {
  let pyDeployment: string;

  it("deploys the python example through the API and answers curl-style requests with an API key", async () => {
    const r = await deploy(acme, "frames", "dataframe", pythonConfig, { "handler.py": PYTHON });
    pyDeployment = r.deployment.id;
    await waitLive(acme, r.deployment.id, r.revision.id);
    await waitFor("gateway routes to the new replicas", async () => {
      const res = await send(acme, "frames", "/deduplicate", { rows });
      return res.status === 200 ? res : undefined;
    });
    const dedup = await send(acme, "frames", "/deduplicate", { rows });
    expect(dedup).toEqual({ status: 200, body: { rows: [rows[0], rows[1]], removed: 1 } });
    const sorted = await send(acme, "frames", "/sort", { rows, by: "id" });
    expect((sorted.body.rows as { id: number }[]).map((x) => x.id)).toEqual([1, 2, 2]);
  });

  it("deploys the TypeScript example", async () => {
    const r = await deploy(acme, "frames-ts", "dataframe", tsConfig, { "handler.ts": TS });
    await waitLive(acme, r.deployment.id, r.revision.id);
    const res = await waitFor("ts answers", async () => {
      const x = await send(acme, "frames-ts", "/sort", { rows, by: "name" });
      return x.status === 200 ? x : undefined;
    });
    expect((res.body.rows as { name: string }[]).map((x) => x.name)).toEqual(["a", "b", "b"]);
  });

  it("refuses a missing, a foreign and a revoked key, and an oversized body", async () => {
    expect((await send({ ...acme, key: "" }, "frames", "/info")).status).toBe(401);
    // globex's valid key, acme's application: never reaches it.
    const foreign = await send({ ...acme, key: globex.key }, "frames", "/info");
    expect([403, 404]).toContain(foreign.status);
    expect((await send(globex, "frames", "/info")).status).toBe(404);

    const big = JSON.stringify({ rows: [{ pad: "x".repeat(8192) }] });
    const tooBig = await send(acme, "frames", "/deduplicate", big);
    expect(tooBig.status).toBe(413);
    expect(tooBig.body).toMatchObject({ error: { code: "PAYLOAD_TOO_LARGE" } });

    const { key, apiKey } = await acme.api.apiKeys.create({ orgId: acme.orgId, name: "short-lived" });
    expect((await send({ ...acme, key }, "frames", "/info")).status).toBe(200);
    await acme.api.apiKeys.revoke({ orgId: acme.orgId, apiKeyId: apiKey.id });
    await waitFor("revoked key refused", async () => {
      const res = await send({ ...acme, key }, "frames", "/info");
      return res.status === 401 ? res : undefined;
    });
  });

  it("rolls out new code under continuous load without a failed request", async () => {
    const load = continuousLoad(() => send(acme, "frames", "/deduplicate", { rows }));
    const v2 = PYTHON.replace('"runtime": "python",', '"runtime": "python", "edition": 2,');
    expect(v2).not.toBe(PYTHON);
    const r = await deploy(acme, "frames", "dataframe", pythonConfig, { "handler.py": v2 });
    await waitLive(acme, r.deployment.id, r.revision.id);
    await waitFor("new code answers", async () => {
      const res = await send(acme, "frames", "/info");
      return res.body.edition === 2 ? res : undefined;
    });
    const { sent, failures } = await load.stop();
    expect(sent).toBeGreaterThan(10);
    expect(failures).toEqual([]);
  });

  it("keeps the old revision serving, with 0 failed requests, when new code is broken", async () => {
    const load = continuousLoad(() => send(acme, "frames", "/info"));
    const r = await deploy(acme, "frames", "dataframe", pythonConfig, {
      "handler.py": "raise RuntimeError('this revision cannot even import')\n",
    });
    const failed = await waitFailed(acme, r.deployment.id, r.revision.id);
    expect(failed.failureReason).toBeTruthy();
    const { sent, failures } = await load.stop();
    expect(sent).toBeGreaterThan(5);
    expect(failures).toEqual([]);
    expect((await send(acme, "frames", "/info")).body.edition).toBe(2);
  });

  it("routes around a killed replica and brings it back", async () => {
    const [victim] = (await stack.driver()!.listReplicas(acme.clusterId)).filter(
      (x) => x.deploymentId === pyDeployment && x.phase === "ready",
    );
    expect(victim).toBeTruthy();
    const pid = JSON.parse(
      readFileSync(
        join(stack.dataDir, "clusters", acme.clusterId, "replicas", victim!.replicaId, "replica.json"),
        "utf8",
      ),
    ).process.pid as number;
    const load = continuousLoad(() => send(acme, "frames", "/info"));
    process.kill(pid, "SIGKILL");
    await waitFor(
      "killed replica back",
      async () => {
        const now = (await stack.driver()!.listReplicas(acme.clusterId)).find(
          (x) => x.replicaId === victim!.replicaId,
        );
        return now?.phase === "ready" && now.restarts > 0 ? now : undefined;
      },
      60_000,
    );
    const { failures } = await load.stop();
    expect(failures).toEqual([]);
    await waitFor(
      "both replicas routable again",
      async () => (await readyReplicaCount(stack, pyDeployment)) === 2,
    );
  });

  it("replaces a replica whose health check fails", async () => {
    const r = await deploy(
      acme,
      "sick",
      "dataframe",
      {
        runtime: "python",
        entry: "handler:Dataframe",
        numReplicas: 1,
        healthCheck: { periodS: 1, timeoutS: 1, failureThreshold: 2, startupTimeoutS: 60 },
      },
      { "handler.py": PYTHON },
    );
    await waitLive(acme, r.deployment.id, r.revision.id);
    const first = await waitFor("sick answers", async () => {
      const x = await send(acme, "sick", "/info");
      return x.status === 200 ? x : undefined;
    });
    expect((await send(acme, "sick", "/admin/health", { healthy: false })).status).toBe(200);
    const replaced = await waitFor(
      "a healthy replacement",
      async () => {
        const x = await send(acme, "sick", "/info");
        return x.status === 200 && x.body.replica !== first.body.replica ? x : undefined;
      },
      60_000,
    );
    expect(replaced.body.replica).not.toBe(first.body.replica);
  });

  it("deletes a deployment: the gateway answers NOT_FOUND", async () => {
    await acme.api.deployments.delete({ orgId: acme.orgId, deploymentId: pyDeployment });
    const gone = await waitFor("NOT_FOUND after delete", async () => {
      const res = await send(acme, "frames", "/info");
      return res.status === 404 ? res : undefined;
    });
    expect(gone.body).toMatchObject({ error: { code: "NOT_FOUND" } });
    await waitFor("replicas stopped", async () => (await readyReplicaCount(stack, pyDeployment)) === 0);
  });
});

describe("autoscaling on traffic", () => {
  it("grows under load, shrinks to zero when idle, and a request wakes it", async () => {
    const r = await deploy(
      acme,
      "elastic",
      "dataframe",
      {
        runtime: "python",
        entry: "handler:Dataframe",
        autoscaling: {
          minReplicas: 0,
          maxReplicas: 2,
          initialReplicas: 1,
          targetOngoingRequests: 1,
          upscaleDelayS: 0,
          downscaleDelayS: 2,
        },
      },
      { "handler.py": PYTHON },
    );
    await waitLive(acme, r.deployment.id, r.revision.id);
    const dep = r.deployment.id;

    // Slow streamed requests keep two requests ongoing: ceil(2 / 1) = 2 replicas.
    const slow = continuousLoad(
      () => send(acme, "elastic", "/rows/stream?delay_ms=300", { rows: rows.concat(rows) }),
      2,
    );
    await waitFor("two replicas under load", async () => (await readyReplicaCount(stack, dep)) === 2, 60_000);
    const { failures } = await slow.stop();
    expect(failures).toEqual([]);

    await waitFor(
      "scaled to zero when idle",
      async () => (await readyReplicaCount(stack, dep)) === 0,
      60_000,
    );

    // Every decision is visible through the API, with its reason and the metric behind it.
    const decisions = await acme.api.deployments.scalingEvents({ orgId: acme.orgId, deploymentId: dep });
    const steps = decisions.map((e) => [e.fromReplicas, e.toReplicas]);
    expect(steps).toContainEqual([1, 2]);
    expect(steps.some(([, to]) => to === 0)).toBe(true);
    expect(decisions.every((e) => typeof e.reason === "string" && e.reason.length > 0)).toBe(true);

    const started = performance.now();
    const woke = await send(acme, "elastic", "/deduplicate", { rows });
    console.info(`cold start from zero through the gateway: ${Math.round(performance.now() - started)} ms`);
    expect(woke).toEqual({ status: 200, body: { rows: [rows[0], rows[1]], removed: 1 } });
    // The autoscaler looks back 30 s before it sees no traffic: this test takes ~50 s by design.
  }, 150_000);
});
