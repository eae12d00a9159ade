import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  inspectRayServeApp,
  networkIsolationAvailable,
  planRayServeApplication,
  RayServeInspectError,
} from "../src/index.js";

const PYTHON = execFileSync(process.env.TESSERA_TEST_RAY_PYTHON ?? "/usr/bin/python3", [
  "-c",
  "import sys, fastapi, pandas; print(sys.executable)",
])
  .toString()
  .trim();
const EXAMPLES = join(import.meta.dirname, "..", "..", "..", "examples");
const CASES = join(import.meta.dirname, "fixtures", "ray-inspect");

async function refusal(p: Promise<unknown>): Promise<RayServeInspectError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RayServeInspectError);
  return err as RayServeInspectError;
}

describe("inspectRayServeApp", () => {
  it("lists the FastAPI example's deployment, routes and options", async () => {
    const app = await inspectRayServeApp({
      python: PYTHON,
      codeDir: join(EXAMPLES, "ray-serve-fastapi"),
      entry: "service:app",
    });
    expect(app.ingress).toBe("CustomService");
    expect(app.unsupportedCalls).toEqual([]);
    const [svc] = app.deployments;
    expect(svc).toMatchObject({ name: "CustomService", http: "asgi", hasReconfigure: true, problems: [] });
    expect(svc!.routes).toEqual(
      expect.arrayContaining([
        { path: "/deduplicate", methods: ["POST"] },
        { path: "/sort", methods: ["POST"] },
        { path: "/columns/{name}", methods: ["GET"] },
      ]),
    );
    const plan = planRayServeApplication(app, { entry: "service:app" });
    expect(plan.errors).toEqual({});
    expect(plan.deployments[0]).toMatchObject({
      name: "custom-service",
      config: {
        numReplicas: 2,
        resources: { cpus: 0.5, gpus: 0, memoryMb: 256 },
        maxOngoingRequests: 16,
        healthCheck: { periodS: 5 },
        userConfig: { greeting: "hello" },
      },
    });
  });

  it("walks the composition graph: handles, batching, older option names", async () => {
    const app = await inspectRayServeApp({
      python: PYTHON,
      codeDir: join(EXAMPLES, "ray-serve-composition"),
      entry: "graph:app",
    });
    expect(app.ingress).toBe("Ingress");
    expect(app.deployments.map((d) => d.name)).toEqual([
      "Preprocessor",
      "LengthModel",
      "CountModel",
      "Ingress",
    ]);
    const ingress = app.deployments.at(-1)!;
    expect(ingress).toMatchObject({ http: "call", handles: ["CountModel", "LengthModel", "Preprocessor"] });
    expect(app.deployments[1]!.batched).toEqual([
      { method: "score", maxBatchSize: 4, batchWaitTimeoutS: 0.2 },
    ]);
    const plan = planRayServeApplication(app, { entry: "graph:app" });
    expect(plan.errors).toEqual({});
    const byName = Object.fromEntries(plan.deployments.map((d) => [d.name, d.config]));
    expect(Object.keys(byName)).toEqual(["preprocessor", "length-model", "count-model", "ingress"]);
    expect(byName["length-model"]).toMatchObject({
      autoscaling: {
        minReplicas: 0,
        maxReplicas: 4,
        targetOngoingRequests: 2,
        upscaleDelayS: 1,
        downscaleDelayS: 30,
      },
      resources: { cpus: 0.5, gpus: 0, memoryMb: 300 },
      maxOngoingRequests: 8,
    });
    expect(byName["count-model"]).toMatchObject({
      autoscaling: { minReplicas: 1, maxReplicas: 2, targetOngoingRequests: 4 },
      maxOngoingRequests: 16,
    });
  });

  it("accepts .deploy()-era modules: the entry names the deployment, version/prev_version kept", async () => {
    const app = await inspectRayServeApp({ python: PYTHON, codeDir: CASES, entry: "legacy:CustomService" });
    const plan = planRayServeApplication(
      { ...app, unsupportedCalls: app.unsupportedCalls.filter((c) => c.file === "legacy.py") },
      { entry: "legacy:CustomService" },
    );
    expect(plan.errors).toEqual({});
    expect(plan.deployments[0]).toMatchObject({ name: "custom-service", label: "v2", prevLabel: "v1" });
    expect(plan.warnings.join("\n")).toContain("route_prefix");
  });

  it("imports a module whose libraries this python lacks, with stand-ins it reports", async () => {
    const app = await inspectRayServeApp({ python: PYTHON, codeDir: CASES, entry: "heavy:app" });
    expect(app.stubbedModules).toEqual(["not_installed_torch", "not_installed_transformers"]);
    expect(app.deployments[0]!.routes).toContainEqual({ path: "/classify", methods: ["POST"] });
    const plan = planRayServeApplication({ ...app, unsupportedCalls: [] }, { entry: "heavy:app" });
    expect(plan.errors).toEqual({});
    expect(plan.deployments[0]!.config).toMatchObject({
      resources: { gpus: 0.5 },
      environment: { kind: "pip", requirements: ["torch==2.1.0", "transformers"] },
    });
    expect(plan.warnings[0]).toContain("inspected without not_installed_torch, not_installed_transformers");
  });

  it("reports unsupported Ray APIs by name, with where they are used", async () => {
    const err = await refusal(inspectRayServeApp({ python: PYTHON, codeDir: CASES, entry: "calls:app" }));
    expect(err.message).toContain("serve.multiplexed is not supported");
    const details = err.details as { reason: string; unsupportedCalls: { file: string }[] };
    expect(details.reason).toBe("UNSUPPORTED");
    expect(details.unsupportedCalls.filter((c) => c.file === "calls.py")).toEqual([
      { call: "serve.multiplexed", file: "calls.py", line: 8 },
      { call: "serve.get_multiplexed_model_id", file: "calls.py", line: 13 },
    ]);
  });

  it("reads ray.serve.config option objects, and flags Ray modules it lacks", async () => {
    const app = await inspectRayServeApp({ python: PYTHON, codeDir: CASES, entry: "configobj:app" });
    expect(app.deployments[0]!.options.autoscaling_config).toEqual({
      min_replicas: 0,
      max_replicas: 3,
      target_ongoing_requests: 5,
    });
    expect(app.unsupportedCalls.filter((c) => c.file === "streaming.py")).toEqual([
      { call: "handle.options(stream=...)", file: "streaming.py", line: 10 },
    ]);
    expect(app.unsupportedCalls.filter((c) => c.file === "dag.py")).toEqual([
      { call: "ray.dag", file: "dag.py", line: 1 },
      { call: "ray.serve.drivers", file: "dag.py", line: 2 },
    ]);
  });

  it("reports a user_config without reconfigure() as a problem of that deployment", async () => {
    const app = await inspectRayServeApp({ python: PYTHON, codeDir: CASES, entry: "nouserconfig:app" });
    const plan = planRayServeApplication(app, { entry: "nouserconfig:app" });
    expect(plan.errors["deployments.NoReconfigure.problem"]).toContain("no reconfigure() method");
  });

  it("reports import failures with the traceback, and entries that are not applications", async () => {
    const broken = await refusal(inspectRayServeApp({ python: PYTHON, codeDir: CASES, entry: "broken:app" }));
    expect(broken.details).toMatchObject({ reason: "IMPORT_FAILED" });
    expect(broken.message).toContain("KeyError: 'b'");
    expect((broken.details as { traceback: string }).traceback).toContain("broken.py");
    const notApp = await refusal(
      inspectRayServeApp({ python: PYTHON, codeDir: CASES, entry: "legacy:serve" }),
    );
    expect(notApp.details).toMatchObject({ reason: "NOT_AN_APPLICATION" });
  });

  it("gives tenant code none of the caller's environment", async () => {
    process.env.TESSERA_PROBE_SECRET = "s3cret";
    try {
      const err = await refusal(
        inspectRayServeApp({ python: PYTHON, codeDir: CASES, entry: "envprobe:app" }),
      );
      // LC_CTYPE is python's own locale coercion (PEP 538), not inherited.
      expect(err.message).toMatch(
        /env: HOME,(LC_CTYPE,)?PATH,PYTHONDONTWRITEBYTECODE,PYTHONPATH,PYTHONUNBUFFERED,TESSERA_INSPECT_MEMORY_MB$/,
      );
    } finally {
      delete process.env.TESSERA_PROBE_SECRET;
    }
  });

  it("bounds the memory tenant code gets while it is inspected", async () => {
    const err = await refusal(inspectRayServeApp({ python: PYTHON, codeDir: CASES, entry: "hungry:app" }));
    expect(err.details).toMatchObject({ reason: "IMPORT_FAILED" });
    expect(err.message).toContain("MemoryError");
  });

  it("stops an import that does not finish", async () => {
    const err = await refusal(
      inspectRayServeApp({ python: PYTHON, codeDir: CASES, entry: "slow:app", timeoutMs: 1500 }),
    );
    expect(err.details).toMatchObject({ reason: "INSPECT_FAILED" });
    expect(err.message).toContain("did not finish");
  });
});

describe("inspectRayServeApp confinement", () => {
  const dirs: string[] = [];
  const started: number[] = [];
  afterEach(async () => {
    // A failed expectation must not leave the forked sleeps behind.
    for (const pid of started.splice(0)) if (!gone(pid)) process.kill(pid, "SIGKILL");
    for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
  });

  async function tempDir(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), "tessera-inspect-test-"));
    dirs.push(dir);
    return dir;
  }

  /** A code dir holding `probe.py` with `source`. */
  async function codeDir(source: string): Promise<string> {
    const dir = await tempDir();
    await writeFile(join(dir, "probe.py"), source);
    return dir;
  }

  /** Dead, or a zombie nobody reaps yet (this machine's pid 1 may not). */
  function gone(pid: number): boolean {
    try {
      process.kill(pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ESRCH") return true;
      throw err;
    }
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      return /^[ZX]$/.test(stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3));
    } catch {
      return true;
    }
  }

  /** Module source that starts `sleep 300` and records its pid in `pidFile`, then runs `rest`. */
  function forking(pidFile: string, rest: string): string {
    return [
      "import os, subprocess, time",
      "from ray import serve",
      'child = subprocess.Popen(["sleep", "300"])',
      `with open(${JSON.stringify(`${pidFile}.tmp`)}, "w") as f:`,
      "    f.write(str(child.pid))",
      `os.rename(${JSON.stringify(`${pidFile}.tmp`)}, ${JSON.stringify(pidFile)})`,
      rest,
    ].join("\n");
  }

  async function startedPid(pidFile: string): Promise<number> {
    const pid = Number(await readFile(pidFile, "utf8"));
    expect(pid).toBeGreaterThan(1);
    started.push(pid);
    return pid;
  }

  it("kills what the module started once the import finished", async () => {
    const pidFile = join(await tempDir(), "child.pid");
    const dir = await codeDir(
      forking(
        pidFile,
        [
          "@serve.deployment",
          "class Lingering:",
          "    def __call__(self, request):",
          '        return "ok"',
          "app = Lingering.bind()",
        ].join("\n"),
      ),
    );
    const app = await inspectRayServeApp({ python: PYTHON, codeDir: dir, entry: "probe:app" });
    expect(app.ingress).toBe("Lingering");
    const pid = await startedPid(pidFile);
    await expect.poll(() => gone(pid), { timeout: 10_000, interval: 20 }).toBe(true);
  });

  it("kills what the module started when the import times out", async () => {
    const pidFile = join(await tempDir(), "child.pid");
    const dir = await codeDir(forking(pidFile, "time.sleep(600)"));
    const err = await refusal(
      inspectRayServeApp({ python: PYTHON, codeDir: dir, entry: "probe:app", timeoutMs: 5000 }),
    );
    expect(err.message).toContain("did not finish");
    const pid = await startedPid(pidFile);
    await expect.poll(() => gone(pid), { timeout: 10_000, interval: 20 }).toBe(true);
  });

  it.skipIf(!networkIsolationAvailable())("gives tenant code no network", async () => {
    let connections = 0;
    const server = createServer((socket) => {
      connections++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const port = (server.address() as { port: number }).port;
      const dir = await codeDir(
        [
          "import socket",
          "try:",
          `    socket.create_connection(("127.0.0.1", ${port}), timeout=2).close()`,
          '    outcome = "connected"',
          "except OSError as e:",
          '    outcome = "failed: %s" % e',
          'raise RuntimeError("network " + outcome)',
        ].join("\n"),
      );
      const err = await refusal(inspectRayServeApp({ python: PYTHON, codeDir: dir, entry: "probe:app" }));
      expect(err.details).toMatchObject({ reason: "IMPORT_FAILED" });
      expect(err.message).toContain("network failed: ");
      expect(connections).toBe(0);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("refuses a user id that is none", async () => {
    for (const uid of [-1, 1.5, 0xffff_ffff]) {
      const err = await refusal(
        inspectRayServeApp({ python: PYTHON, codeDir: CASES, entry: "slow:app", uid }),
      );
      expect(err.details).toMatchObject({ reason: "INSPECTOR_UNAVAILABLE" });
      expect(err.message).toContain("is not a valid id");
    }
  });

  it.skipIf(process.getuid?.() !== 0)("imports as the configured unprivileged user", async () => {
    const nobody = 65534;
    const dir = await codeDir('import os\nraise RuntimeError("ids %d:%d" % (os.getuid(), os.getgid()))\n');
    const err = await refusal(
      inspectRayServeApp({ python: PYTHON, codeDir: dir, entry: "probe:app", uid: nobody }),
    );
    expect(err.details).toMatchObject({ reason: "IMPORT_FAILED" });
    expect(err.message).toContain(`ids ${nobody}:${nobody}`);
  });
});
