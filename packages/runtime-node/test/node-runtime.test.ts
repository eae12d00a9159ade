import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runtimeEnv } from "@tessera/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runtimeConformance } from "../../runtime-python/test/support/conformance.js";
import {
  dataframeExampleSuite,
  EXAMPLE_CONTRACT,
} from "../../runtime-python/test/support/dataframe-example.js";
import { send, startReplica, type TestReplica } from "../../runtime-python/test/support/replica-harness.js";
import { buildNodeBundle, type NodeBundle, NodeBundleError, nodeReplicaCommand } from "../src/index.js";

const FIXTURES = join(import.meta.dirname, "fixtures");
const work = mkdtempSync(join(tmpdir(), "tessera-node-runtime-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function contractEnv(
  bundle: NodeBundle,
  userConfig: Record<string, unknown>,
  env: Record<string, string> = {},
) {
  return {
    ...runtimeEnv({
      port: 0,
      codeDir: bundle.dir,
      entry: bundle.entry,
      userConfig,
      deployment: "dep-1",
      revision: "rev-1",
      replica: "rep-1",
      application: "app-1",
      maxBodyBytes: 1024 * 1024,
      exposeTracebacks: false,
      drainTimeoutS: 30,
    }),
    ...env,
  };
}

const bundles = new Map<string, Promise<NodeBundle>>();
function bundleFor(file: string, cls: string): Promise<NodeBundle> {
  const key = `${file}:${cls}`;
  if (!bundles.has(key))
    bundles.set(
      key,
      buildNodeBundle({ codeDir: FIXTURES, entry: key, outDir: join(work, key.replace(/[^a-z]/gi, "-")) }),
    );
  return bundles.get(key)!;
}

runtimeConformance({
  name: "node",
  launch: async (cls, { userConfig, env }) => {
    const bundle = await bundleFor(cls === "SlowStart" ? "slow-start.ts" : "probe.ts", cls);
    return nodeReplicaCommand({ bundle, env: contractEnv(bundle, userConfig, env) });
  },
});

dataframeExampleSuite("node", async (userConfig) => {
  const codeDir = join(import.meta.dirname, "..", "..", "..", "examples", "ts-dataframe");
  const bundle = await buildNodeBundle({
    codeDir,
    entry: "handler.ts:Dataframe",
    outDir: join(work, "example"),
  });
  return nodeReplicaCommand({
    bundle,
    env: runtimeEnv({ ...EXAMPLE_CONTRACT, codeDir: bundle.dir, entry: bundle.entry, userConfig }),
  });
});

describe("node runtime: handler bundles", () => {
  const codeDir = join(work, "code");
  const modulesDir = join(work, "env", "node_modules");
  let replica: TestReplica;

  beforeAll(async () => {
    // An environment with one ESM-only and one CommonJS package, outside the code dir: the
    // bundle must resolve both from the linked node_modules.
    mkdirSync(join(modulesDir, "esm-only"), { recursive: true });
    writeFileSync(
      join(modulesDir, "esm-only", "package.json"),
      JSON.stringify({ name: "esm-only", type: "module", exports: "./index.js" }),
    );
    writeFileSync(
      join(modulesDir, "esm-only", "index.js"),
      "export const shout = (s) => s.toUpperCase() + '!';\n",
    );
    mkdirSync(join(modulesDir, "cjs-pkg"), { recursive: true });
    writeFileSync(
      join(modulesDir, "cjs-pkg", "package.json"),
      JSON.stringify({ name: "cjs-pkg", main: "index.js" }),
    );
    writeFileSync(join(modulesDir, "cjs-pkg", "index.js"), "exports.twice = (n) => n * 2;\n");
    mkdirSync(join(codeDir, "lib"), { recursive: true });
    writeFileSync(
      join(codeDir, "lib", "words.ts"),
      'export const greeting = (n: string): string => "hello " + n;\n',
    );
    writeFileSync(
      join(codeDir, "main.ts"),
      `import { shout } from "esm-only";
import cjs from "cjs-pkg";
import { HttpError, Response, route } from "tessera";
import { greeting } from "./lib/words";

export default class Tabled {
  static routes = { "GET /greet/{name}": "greet", "POST /events": { method: "events", stream: "sse" } };
  constructor(private readonly config: { times?: number }) {}
  greet(req: { params: Record<string, string> }) {
    if (req.params.name === "nobody") throw new HttpError(422, "nobody to greet", "VALIDATION_FAILED");
    return new Response(200, { text: shout(greeting(req.params.name)), twice: cjs.twice(this.config.times ?? 1) });
  }
  async *events() {
    yield { event: "tick", id: 1, data: "one" };
    yield "multi\\nline";
  }
  @route.get("/raw")
  raw() {
    return new Response(200, "plain text", { "content-type": "text/plain" });
  }
}
`,
    );
    const bundle = await buildNodeBundle({
      codeDir,
      entry: "main.ts:Tabled",
      outDir: join(work, "out-tabled"),
      nodeModulesDir: modulesDir,
    });
    replica = await startReplica(
      await nodeReplicaCommand({ bundle, env: contractEnv(bundle, { times: 21 }) }),
    );
  });
  afterAll(() => replica?.stop());

  it("bundles relative imports, resolves npm packages (ESM and CJS) from the environment, finds the default class", async () => {
    const r = await send(replica.url, "/greet/ada");
    expect(r.status).toBe(200);
    expect(r.json()).toEqual({ text: "HELLO ADA!", twice: 42 });
  });

  it("supports a static route map with SSE event objects, and HttpError statuses", async () => {
    const events = await send(replica.url, "/events", { method: "POST" });
    expect(events.text).toBe("id: 1\nevent: tick\ndata: one\n\ndata: multi\ndata: line\n\n");
    const nobody = await send(replica.url, "/greet/nobody");
    expect(nobody.status).toBe(422);
    expect(nobody.json().error.code).toBe("VALIDATION_FAILED");
    const raw = await send(replica.url, "/raw");
    expect(raw.headers["content-type"]).toBe("text/plain");
    expect(raw.text).toBe("plain text");
  });

  it("reports bundling errors with a stable error type", async () => {
    writeFileSync(join(codeDir, "broken.ts"), "export class X { method( { }\n");
    await expect(
      buildNodeBundle({ codeDir, entry: "broken.ts:X", outDir: join(work, "out-broken") }),
    ).rejects.toBeInstanceOf(NodeBundleError);
    await expect(
      buildNodeBundle({ codeDir, entry: "missing.ts:X", outDir: join(work, "out-missing") }),
    ).rejects.toThrow(/does not exist/);
    await expect(
      buildNodeBundle({ codeDir, entry: "../escape.ts:X", outDir: join(work, "out-escape") }),
    ).rejects.toThrow(/outside/);
  });

  it("launches plain node on a cached server bundle with only the contract env", async () => {
    const bundle = await bundleFor("probe.ts", "Probe");
    process.env.TESSERA_TEST_PLATFORM_SECRET = "must-not-leak";
    const launch = await nodeReplicaCommand({ bundle, env: contractEnv(bundle, {}) });
    expect(launch.command).toBe(process.execPath);
    expect(launch.args[0]).toBe("--enable-source-maps");
    expect(launch.args[1]).toMatch(/runtime-server-[0-9a-f]{16}\.mjs$/);
    expect(readFileSync(launch.args[1]!, "utf8")).not.toContain("zod");
    expect(
      Object.keys(launch.env)
        .filter((k) => !k.startsWith("TESSERA_"))
        .sort(),
    ).toEqual(["HOME", "PATH"]);
    expect(launch.env.TESSERA_CODE_DIR).toBe(bundle.dir);
    expect(launch.env.TESSERA_ENTRY).toBe("handler.mjs:Probe");
    expect((await nodeReplicaCommand({ bundle, env: contractEnv(bundle, {}) })).args[1]).toBe(launch.args[1]);
  });
});
