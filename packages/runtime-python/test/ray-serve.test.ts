import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runtimeEnv, UPSTREAM_REVISION_HEADER } from "@tessera/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inspectRayServeApp, planRayServeApplication, pythonReplicaCommand } from "../src/index.js";
import { HandleGateway } from "./support/handle-gateway.js";
import { send, startReplica, type TestReplica } from "./support/replica-harness.js";

/**
 * Ray Serve programs served by the python runtime as real processes. FastAPI, Starlette and pandas
 * come from Debian's python (`python3-fastapi`, `python3-pandas`), standing in for a deployment
 * environment built from PyPI.
 */
const PYTHON = execFileSync(process.env.TESSERA_TEST_RAY_PYTHON ?? "/usr/bin/python3", [
  "-c",
  "import sys, fastapi, pandas; print(sys.executable)",
])
  .toString()
  .trim();
const ROOT = join(import.meta.dirname, "..", "..", "..");
const FIXTURES = join(import.meta.dirname, "fixtures");

function launch(
  codeDir: string,
  entry: string,
  userConfig: Record<string, unknown> = {},
  handles?: { url: string; token: string },
) {
  return pythonReplicaCommand({
    python: PYTHON,
    env: runtimeEnv({
      port: 0,
      codeDir,
      entry,
      userConfig,
      deployment: "dep",
      revision: "rev-1",
      replica: "rep-1",
      application: "app",
      maxBodyBytes: 1024 * 1024,
      exposeTracebacks: false,
      drainTimeoutS: 5,
      handleUrl: handles?.url,
      handleToken: handles?.token,
    }),
  });
}

const replicas: TestReplica[] = [];
async function start(...args: Parameters<typeof launch>): Promise<TestReplica> {
  const r = await startReplica(launch(...args));
  replicas.push(r);
  if (r.exitCode !== undefined) throw new Error(`replica exited:\n${r.rawLines.join("\n")}`);
  return r;
}
afterAll(async () => {
  await Promise.all(replicas.map((r) => r.stop()));
});

describe("ray serve: FastAPI ingress example (examples/ray-serve-fastapi)", () => {
  let r: TestReplica;
  beforeAll(async () => {
    r = await start(join(ROOT, "examples", "ray-serve-fastapi"), "service:app");
  });

  it("answers POST /deduplicate and POST /sort over rows with columns", async () => {
    const rows = [
      { a: 1, b: 2 },
      { a: 1, b: 3 },
      { a: 0, b: 3 },
    ];
    const dedup = await send(r.url, "/deduplicate", { body: { rows, columns: ["a"] } });
    expect(dedup.status).toBe(200);
    expect(dedup.json()).toEqual({
      rows: [
        { a: 1, b: 2 },
        { a: 0, b: 3 },
      ],
      removed: 1,
    });
    const sorted = await send(r.url, "/sort", { body: { rows, columns: ["a", "b"], ascending: false } });
    expect(sorted.json()).toEqual({
      rows: [
        { a: 1, b: 3 },
        { a: 1, b: 2 },
        { a: 0, b: 3 },
      ],
    });
  });

  it("runs FastAPI's query params, Depends, pydantic validation and HTTPException", async () => {
    const rows = [{ a: 1 }, { a: 2 }, { a: 3 }];
    expect((await send(r.url, "/deduplicate?limit=2", { body: { rows } })).json().rows).toHaveLength(2);
    const badLimit = await send(r.url, "/deduplicate?limit=0", { body: { rows } });
    expect(badLimit.status).toBe(422);
    expect(badLimit.json().detail[0].loc).toEqual(["query", "limit"]);
    const badBody = await send(r.url, "/sort", { body: { rows: "nope" } });
    expect(badBody.status).toBe(422);
    expect(badBody.json().detail[0].loc).toEqual(["body", "rows"]);
    const unknown = await send(r.url, "/sort", { body: { rows, columns: ["zz"] } });
    expect(unknown.status).toBe(422);
    expect(unknown.json()).toEqual({ detail: "unknown columns: zz" });
    expect((await send(r.url, "/missing")).status).toBe(404);
  });

  it("binds path params and self: user_config reached reconfigure(), state lives on the instance", async () => {
    const before = (await send(r.url, "/columns/price?q=max")).json();
    expect(before).toMatchObject({ name: "price", q: "max", greeting: "hello", replica: "CustomService" });
    await send(r.url, "/sort", { body: { rows: [{ a: 1 }] } });
    expect((await send(r.url, "/columns/price")).json().calls).toBe(before.calls + 1);
  });

  it("answers HEAD without a body and keeps the runtime's request id", async () => {
    const head = await send(r.url, "/columns/x", { method: "HEAD", headers: { "x-request-id": "rid-ray" } });
    expect(head.headers["x-request-id"]).toBe("rid-ray");
    expect(head.text).toBe("");
  });

  it("takes a user config from the platform in place of the declared one", async () => {
    const other = await start(join(ROOT, "examples", "ray-serve-fastapi"), "service:app", {
      greeting: "bonjour",
    });
    expect((await send(other.url, "/columns/x")).json().greeting).toBe("bonjour");
  });
});

describe("ray serve: composition example, every deployment in one replica process", () => {
  let r: TestReplica;
  beforeAll(async () => {
    r = await start(join(ROOT, "examples", "ray-serve-composition"), "graph:app");
  });

  it("chains the preprocessor and fans out to both models through handles", async () => {
    const res = await send(r.url, "/", { body: { text: "Hello  big World" } });
    expect(res.status).toBe(200);
    expect(res.json()).toEqual({ words: ["hello", "big", "world"], scores: { count: 3, length: 6.5 } });
  });

  it("batches concurrent calls of a @serve.batch method", async () => {
    const answers = await Promise.all(
      Array.from({ length: 6 }, (_, i) => send(r.url, "/", { body: { text: "x ".repeat(i + 1) } })),
    );
    expect(answers.map((a) => a.json().scores.length)).toEqual([0.5, 1, 1.5, 2, 2.5, 3]);
    const batches: number[] = (await send(r.url, "/stats")).json().batches;
    expect(batches.reduce((s, n) => s + n, 0)).toBeGreaterThanOrEqual(6);
    expect(Math.max(...batches)).toBeLessThanOrEqual(4);
  });
});

describe("ray serve: handles, batching, health and errors (fixtures)", () => {
  let r: TestReplica;
  beforeAll(async () => {
    r = await start(FIXTURES, "ray_apps:front");
  });

  it("calls handles from async and sync endpoints", async () => {
    const a = (await send(r.url, "/predict/5")).json();
    expect(a).toMatchObject({ y: 15, deployment: "Model", pid: r.proc.pid });
    expect((await send(r.url, "/predict-sync/7")).json()).toMatchObject({ y: 17 });
  });

  it("flushes a batch when it is full, each caller getting its own result", async () => {
    const replies = await Promise.all(
      [1, 2, 3, 4].map((x) => send(r.url, `/double?x=${x}`, { method: "POST" })),
    );
    expect(replies.map((x) => x.json().result)).toEqual([2, 4, 6, 8]);
    // The wait is 30 s: only a full batch of 4 could have answered them.
    expect((await send(r.url, "/sizes")).json()).toEqual([4]);
  });

  it("fails every caller of a batch whose result has the wrong length", async () => {
    const replies = await Promise.all([1, 2].map((x) => send(r.url, `/broken/${x}`)));
    for (const reply of replies) {
      expect(reply.status).toBe(500);
      expect(reply.json().error.code).toBe("HANDLER_ERROR");
      expect(reply.json().error.message).toContain("one result per input");
    }
  });

  it("streams a StreamingResponse chunked and keeps repeated headers", async () => {
    const res = await send(r.url, "/stream?n=3");
    expect(res.headers["transfer-encoding"]).toBe("chunked");
    expect(res.text).toBe("line 0\nline 1\nline 2\n");
    const cookies = await send(r.url, "/cookies");
    expect(cookies.headers["set-cookie"]?.map((c) => c.split(";")[0])).toEqual(["a=1", "b=2"]);
  });

  it("answers a deployment's exception as HANDLER_ERROR and keeps serving", async () => {
    const res = await send(r.url, "/fail");
    expect(res.status).toBe(500);
    expect(res.json().error).toMatchObject({ code: "HANDLER_ERROR" });
    expect(res.json().error.message).toContain("model exploded");
    expect((await send(r.url, "/predict/1")).status).toBe(200);
  });

  it("serves Ray's handle-call endpoint for the ingress deployment", async () => {
    const notFound = await send(r.url, "/-/call/nothing", { body: { args: [] } });
    expect(notFound.status).toBe(404);
    const bad = await send(r.url, "/-/call/predict", {
      raw: "{",
      headers: { "content-type": "application/json" },
    });
    expect(bad.status).toBe(400);
    // Handle calls go through the gateway too: one meant for another revision is refused before
    // its (here malformed) body is read.
    const misrouted = await send(r.url, "/-/call/predict", {
      raw: "{",
      headers: { "content-type": "application/json", [UPSTREAM_REVISION_HEADER]: "rev-2" },
    });
    expect(misrouted.status).toBe(503);
    expect(misrouted.json().error.code).toBe("MISROUTED");
    const meant = await send(r.url, "/-/call/predict", {
      raw: "{",
      headers: { "content-type": "application/json", [UPSTREAM_REVISION_HEADER]: "rev-1" },
    });
    expect(meant.status).toBe(400);
  });
});

describe("ray serve: plain __call__ and function deployments", () => {
  it("passes a Starlette request to __call__ and sends str, Response and errors", async () => {
    const r = await start(FIXTURES, "ray_apps:plain");
    const text = await send(r.url, "/text?name=ray");
    expect(text.text).toBe("plain ray");
    expect(text.headers["content-type"]).toContain("text/plain");
    const custom = await send(r.url, "/custom");
    expect(custom.status).toBe(418);
    expect(custom.headers["x-extra"]).toBe("1");
    const err = await send(r.url, "/other");
    expect(err.status).toBe(500);
    expect(err.json().error.message).toBe("ValueError: no such thing");
  });

  it("serves a function deployment", async () => {
    const r = await start(FIXTURES, "ray_apps:function_app");
    expect((await send(r.url, "/?name=fn")).json()).toEqual({ hello: "fn" });
  });

  it("drains on SIGTERM, then runs the deployment's __del__", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ray-cleanup-"));
    const marker = join(dir, "cleaned");
    try {
      const r = await start(FIXTURES, "ray_apps:cleaner", { path: marker });
      expect((await send(r.url, "/")).text).toBe("ok");
      r.proc.kill("SIGTERM");
      expect(await r.exited).toBe(0);
      expect(readFileSync(marker, "utf8")).toBe("deleted\n");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses to start on an unsupported option, naming it", async () => {
    const r = await startReplica(launch(FIXTURES, "ray_unsupported:app"));
    replicas.push(r);
    expect(await r.exited).toBe(1);
    expect(r.rawLines.join("\n")).toContain("unsupported option placement_group_bundless");
  });
});

describe("ray serve: one Tessera deployment per Ray deployment, handles through the gateway", () => {
  const gateway = new HandleGateway("th_test-token");
  let front: TestReplica;
  let model: TestReplica;
  const { calls } = gateway;

  beforeAll(async () => {
    const handles = await gateway.listen();
    const names = { Front: "front", Model: "model", Batcher: "batcher" };
    const meta = (deployment: string) => ({ __ray_serve__: { deployment, handles: names } });
    [front, model] = await Promise.all([
      start(FIXTURES, "ray_apps:front", meta("Front"), handles),
      start(FIXTURES, "ray_apps:front", meta("Model"), handles),
    ]);
    gateway.replicas.set("model", model);
    gateway.replicas.set("batcher", await start(FIXTURES, "ray_apps:front", meta("Batcher"), handles));
  });
  afterAll(() => gateway.close());

  it("runs the called deployment in its own replica process", async () => {
    const res = await send(front.url, "/predict/5", { headers: { "x-request-id": "rid-chain" } });
    expect(res.json()).toEqual({ y: 15, pid: model.proc.pid, deployment: "Model" });
    expect(calls).toContain("model/-/call/predict");
    const logged = await model.waitLog((l) => l.msg === "request" && l.requestId === "rid-chain", "the call");
    expect(logged.path).toBe("/-/call/predict");
  });

  it("batches in the called deployment and reports its errors to the caller", async () => {
    const replies = await Promise.all(
      [1, 2, 3, 4].map((x) => send(front.url, `/double?x=${x}`, { method: "POST" })),
    );
    expect(replies.map((x) => x.json().result)).toEqual([2, 4, 6, 8]);
    const failed = await send(front.url, "/fail");
    expect(failed.status).toBe(500);
    expect(failed.json().error.message).toContain("model exploded");
  });

  it("marks a replica unready when its check_health() raises", async () => {
    expect((await send(model.url, "/-/ready")).status).toBe(200);
    await send(front.url, "/health/false", { method: "POST" });
    const ready = await send(model.url, "/-/ready");
    expect(ready.status).toBe(503);
    expect(ready.json().reason).toContain("model marked unhealthy");
    await send(front.url, "/health/true", { method: "POST" });
    expect((await send(model.url, "/-/ready")).status).toBe(200);
  });

  it("gives a deployment without HTTP ingress a clear 404 on its routes", async () => {
    const res = await send(model.url, "/predict/1");
    expect(res.status).toBe(404);
    expect(res.json().error.message).toContain("call it through a handle");
  });
});

describe("ray serve: the composition example as planned for the platform, one replica per deployment", () => {
  const gateway = new HandleGateway("th_planned");
  let ingress: TestReplica;

  beforeAll(async () => {
    const codeDir = join(ROOT, "examples", "ray-serve-composition");
    const app = await inspectRayServeApp({ python: PYTHON, codeDir, entry: "graph:app" });
    const plan = planRayServeApplication(app, { entry: "graph:app" });
    expect(plan.errors).toEqual({});
    const handles = await gateway.listen();
    // What the provisioner does with each revision: the config's entry and user config, the
    // application's handle URL and token.
    for (const d of plan.deployments) {
      const r = await start(codeDir, d.config.entry, d.config.userConfig, handles);
      gateway.replicas.set(d.name, r);
    }
    ingress = gateway.replicas.get(plan.ingress)!;
  });
  afterAll(() => gateway.close());

  it("answers through the ingress, each model called in its own process through the gateway", async () => {
    const res = await send(ingress.url, "/", { body: { text: "Hello big World" } });
    expect(res.json()).toEqual({ words: ["hello", "big", "world"], scores: { count: 3, length: 6.5 } });
    expect(gateway.calls.sort()).toEqual([
      "count-model/-/call/score",
      "length-model/-/call/score",
      "preprocessor/-/call/normalise",
    ]);
    // The non-ingress deployments answer no HTTP of their own.
    expect((await send(gateway.replicas.get("length-model")!.url, "/")).status).toBe(404);
  });
});
