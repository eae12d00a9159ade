import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { runtimeEnv } from "@tessera/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PYTHON_RUNTIME_DIR, pythonReplicaCommand } from "../src/index.js";
import { runtimeConformance } from "./support/conformance.js";
import { dataframeExampleSuite, EXAMPLE_CONTRACT } from "./support/dataframe-example.js";
import { send, startReplica, type TestReplica } from "./support/replica-harness.js";

// The real interpreter, not a version-manager shim (pyenv's adds its own variables to the env).
const PYTHON = execFileSync(process.env.TESSERA_TEST_PYTHON ?? "python3", [
  "-c",
  "import sys; print(sys.executable)",
])
  .toString()
  .trim();
const FIXTURES = join(import.meta.dirname, "fixtures");

function contractEnv(entry: string, userConfig: Record<string, unknown>, env: Record<string, string> = {}) {
  return {
    ...runtimeEnv({
      port: 0,
      codeDir: FIXTURES,
      entry,
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

runtimeConformance({
  name: "python",
  launch: async (cls, { userConfig, env }) =>
    pythonReplicaCommand({ python: PYTHON, env: contractEnv(`probe:${cls}`, userConfig, env) }),
});

dataframeExampleSuite("python", async (userConfig) => {
  const codeDir = join(import.meta.dirname, "..", "..", "..", "examples", "python-dataframe");
  return pythonReplicaCommand({
    python: PYTHON,
    env: runtimeEnv({ ...EXAMPLE_CONTRACT, codeDir, entry: "handler:Dataframe", userConfig }),
  });
});

describe("python runtime: parameter binding", () => {
  let replica: TestReplica;
  beforeAll(async () => {
    replica = await startReplica(
      pythonReplicaCommand({ python: PYTHON, env: contractEnv("binding:Binding", {}) }),
    );
  });
  afterAll(() => replica.stop());

  it("converts path and query params by annotation", async () => {
    const r = await send(replica.url, "/items/12?q=abc&ratio=0.5&flag=true");
    expect(r.json()).toEqual({ item_id: 12, q: "abc", ratio: 0.5, flag: true });
    expect((await send(replica.url, "/items/12")).json()).toEqual({
      item_id: 12,
      q: "x",
      ratio: null,
      flag: false,
    });
  });

  it("rejects unconvertible and missing parameters with VALIDATION_FAILED", async () => {
    const bad = await send(replica.url, "/items/twelve");
    expect(bad.status).toBe(400);
    expect(bad.json().error).toEqual({
      code: "VALIDATION_FAILED",
      message: "parameter 'item_id': 'twelve' is not a valid int",
    });
    const missing = await send(replica.url, "/search");
    expect(missing.status).toBe(400);
    expect(missing.json().error.message).toContain("'term'");
  });

  it("binds repeated query params to a list, and the request object", async () => {
    const r = await send(replica.url, "/search?term=a&tag=1&tag=2", { headers: { "x-request-id": "rid-9" } });
    expect(r.json()).toEqual({ term: "a", tags: [1, 2], method: "GET", requestId: "rid-9" });
  });

  it("prefers literal routes over parameterised ones", async () => {
    expect((await send(replica.url, "/items/new")).json()).toEqual({ literal: true });
  });

  it("gives a generator's early error a real status", async () => {
    const r = await send(replica.url, "/numbers?upto=-1");
    expect(r.status).toBe(400);
    expect(r.json().error.code).toBe("VALIDATION_FAILED");
    const ok = await send(replica.url, "/numbers?upto=3");
    expect(ok.text).toBe("0\n1\n2\n");
  });

  it("passes text bodies as str and reports HTTPError statuses", async () => {
    const r = await send(replica.url, "/text", { raw: "hello", headers: { "content-type": "text/plain" } });
    expect(r.json()).toEqual({ length: 5, type: "str" });
    const teapot = await send(replica.url, "/text", { raw: "", headers: { "content-type": "text/plain" } });
    expect(teapot.status).toBe(409);
    expect(teapot.json().error.code).toBe("CONFLICT");
  });
});

describe("python runtime package", () => {
  it("points at an importable tessera package that runs on the stdlib alone", () => {
    const out = execFileSync(PYTHON, [
      "-I",
      "-c",
      `import sys; sys.path.insert(0, ${JSON.stringify(PYTHON_RUNTIME_DIR)}); import tessera, tessera.runtime; print(tessera.route, tessera.Response)`,
    ]);
    expect(out.toString()).toContain("Response");
  });

  it("builds a launch with only the contract, PATH/HOME and python switches", () => {
    const launch = pythonReplicaCommand({
      python: "/envs/abc/bin/python",
      env: contractEnv("probe:Probe", {}),
    });
    expect(launch.command).toBe("/envs/abc/bin/python");
    expect(launch.args).toEqual(["-u", "-m", "tessera.runtime"]);
    expect(launch.env.PYTHONPATH).toBe(`${PYTHON_RUNTIME_DIR}:${FIXTURES}`);
    expect(launch.env.PATH?.startsWith("/envs/abc/bin:")).toBe(true);
    expect(
      Object.keys(launch.env)
        .filter((k) => !k.startsWith("TESSERA_"))
        .sort(),
    ).toEqual(["HOME", "PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "PYTHONUNBUFFERED"]);
  });
});
