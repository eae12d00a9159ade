/**
 * The composition examples, every deployment a real replica of its own runtime, wired through a
 * token-checking handle ingress the way the gateway wires them.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { replicaHandleEnv, runtimeEnv } from "@tessera/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pythonReplicaCommand } from "../../runtime-python/src/index.js";
import { HandleIngress, type IngressApplication } from "../../runtime-python/test/support/handle-ingress.js";
import {
  openStream,
  send,
  startReplica,
  type TestReplica,
} from "../../runtime-python/test/support/replica-harness.js";
import { buildNodeBundle, nodeReplicaCommand } from "../src/index.js";

const EXAMPLES = join(import.meta.dirname, "..", "..", "..", "examples");
const PYTHON = execFileSync(process.env.TESSERA_TEST_PYTHON ?? "python3", [
  "-c",
  "import sys; print(sys.executable)",
])
  .toString()
  .trim();
const SECRET = "examples-handle-secret";
const work = mkdtempSync(join(tmpdir(), "tessera-composition-examples-"));
const replicas: TestReplica[] = [];
const ingress = new HandleIngress(SECRET, []);

function app(appName: string, applicationId: string): IngressApplication {
  return {
    orgId: "55555555-5555-4555-8555-555555555555",
    orgSlug: "demo",
    applicationId,
    appName,
    deployments: {},
  };
}

async function launch(
  application: IngressApplication,
  deployment: string,
  runtime: "python" | "node",
  entry: string,
  userConfig: Record<string, unknown> = {},
): Promise<TestReplica> {
  const codeDir = join(EXAMPLES, `composition-${application.appName}`, deployment);
  const contract = (dir: string, e: string) => ({
    ...runtimeEnv({
      port: 0,
      codeDir: dir,
      entry: e,
      userConfig,
      deployment,
      revision: "rev-1",
      replica: `${deployment}-1`,
      application: application.appName,
      maxBodyBytes: 1024 * 1024,
      exposeTracebacks: false,
      drainTimeoutS: 5,
    }),
    ...replicaHandleEnv({ gatewayUrl: ingress.url, secret: SECRET, ...application }),
  });
  let command: Awaited<ReturnType<typeof nodeReplicaCommand>>;
  if (runtime === "python") command = pythonReplicaCommand({ python: PYTHON, env: contract(codeDir, entry) });
  else {
    const bundle = await buildNodeBundle({
      codeDir,
      entry,
      outDir: join(work, application.appName, deployment),
    });
    command = await nodeReplicaCommand({ bundle, env: contract(bundle.dir, bundle.entry) });
  }
  const replica = await startReplica(command);
  replicas.push(replica);
  if (replica.exitCode !== undefined)
    throw new Error(`${deployment} did not start:\n${replica.rawLines.join("\n")}`);
  application.deployments[deployment] = replica.url;
  return replica;
}

const chain = app("chain", "66666666-6666-4666-8666-666666666666");
const ensemble = app("ensemble", "77777777-7777-4777-8777-777777777777");
let preprocess: TestReplica;
let combiner: TestReplica;
let emphasis: TestReplica;

beforeAll(async () => {
  await ingress.start();
  ingress.addApplication(chain);
  ingress.addApplication(ensemble);
  [preprocess, , combiner, , emphasis] = await Promise.all([
    launch(chain, "preprocess", "python", "handler:Preprocess"),
    launch(chain, "model", "python", "handler:Model", { tokenDelayMs: 5 }),
    launch(ensemble, "combiner", "node", "handler.ts:Combiner"),
    launch(ensemble, "lexicon", "python", "handler:Lexicon"),
    launch(ensemble, "emphasis", "node", "handler.ts:Emphasis"),
  ]);
}, 60_000);
afterAll(async () => {
  await Promise.all(replicas.map((r) => r.stop()));
  await ingress.close();
  rmSync(work, { recursive: true, force: true });
});

describe("examples/composition-chain (preprocess -> model)", () => {
  it("normalises, then classifies through the model deployment", async () => {
    const r = await send(preprocess.url, "/classify", {
      body: { text: "My  INVOICE shows a double charge: https://example.com/x" },
      headers: { "x-request-id": "chain-1" },
    });
    expect(r.status, r.text).toBe(200);
    expect(r.json()).toMatchObject({ normalised: "my invoice shows a double charge:", topic: "billing" });
    expect(ingress.hits).toContainEqual(
      expect.objectContaining({ deployment: "model", path: "/predict", requestId: "chain-1", status: 200 }),
    );
  });

  it("classifies many texts with concurrent handle calls, batched by the model", async () => {
    const texts = Array.from({ length: 12 }, (_, i) =>
      i % 2 ? "the site is DOWN again" : "thanks, great work",
    );
    const r = await send(preprocess.url, "/classify-many", { body: { texts } });
    expect(r.status, r.text).toBe(200);
    const results = r.json() as { topic: string; batchSize: number }[];
    expect(results.map((x) => x.topic)).toEqual(texts.map((_, i) => (i % 2 ? "outage" : "praise")));
    for (const x of results) expect(x.batchSize).toBeLessThanOrEqual(16);
  });

  it("streams the model's tokens through the ingress deployment", async () => {
    const stream = await openStream(preprocess.url, "/generate", { prompt: "Where is my REFUND?" });
    const text = await stream.end();
    const tokens = text
      .split("\n\n")
      .filter((b) => b.startsWith("data: "))
      .map((b) => b.slice(6));
    expect(tokens.join(" ")).toBe("this sounds like a billing question: where is my refund?");
  });

  it("answers a validation error of the ingress itself without calling the model", async () => {
    const r = await send(preprocess.url, "/classify", { body: { text: "  " } });
    expect(r.status).toBe(400);
    expect(r.json().error.code).toBe("VALIDATION_FAILED");
  });
});

describe("examples/composition-ensemble (combiner fans out to lexicon + emphasis)", () => {
  it("combines both models' scores", async () => {
    const r = await send(combiner.url, "/sentiment", { body: { text: "I love it, thanks! :)" } });
    expect(r.status, r.text).toBe(200);
    const body = r.json();
    expect(body.label).toBe("positive");
    expect(Object.keys(body.scores).sort()).toEqual(["emphasis", "lexicon"]);
    expect(body.scores.lexicon).toBeGreaterThan(0);
    expect(body.scores.emphasis).toBeGreaterThan(0);
    const negative = await send(combiner.url, "/sentiment", {
      body: { text: "this is terrible and slow :(" },
    });
    expect(negative.json().label).toBe("negative");
  });

  it("picks one model per request (dynamic selection)", async () => {
    const short = await send(combiner.url, "/route", { body: { text: "nice :)" } });
    expect(short.json().model).toBe("emphasis");
    const long = await send(combiner.url, "/route", {
      body: { text: "the new release is not bad at all, honestly quite good and fast" },
    });
    expect(long.json()).toMatchObject({ model: "lexicon" });
    expect(long.json().score).toBeGreaterThan(0);
  });

  it("degrades to the models that answer when one is down", async () => {
    await emphasis.stop();
    const r = await send(combiner.url, "/sentiment", { body: { text: "great, I love it" } });
    expect(r.status, r.text).toBe(200);
    expect(Object.keys(r.json().scores)).toEqual(["lexicon"]);
    expect(r.json().failed.emphasis).toContain("emphasis");
    expect(r.json().label).toBe("positive");
  });
});
