import { execFileSync } from "node:child_process";
import { randomInt } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  inspectRayServeApp,
  networkIsolationAvailable,
  pidIsolationAvailable,
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
  const markers: string[] = [];
  afterEach(async () => {
    // A failed expectation must not leave the started sleeps behind.
    for (const marker of markers.splice(0))
      for (const pid of running(marker)) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // exited meanwhile
        }
      }
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

  /**
   * Host pids whose command line holds `marker`: found through /proc, since pids the module sees
   * are its PID namespace's. Zombies have an empty command line, so they count as gone.
   */
  function running(marker: string): number[] {
    const pids: number[] = [];
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(marker)) pids.push(Number(entry));
      } catch {
        // exited while listed
      }
    }
    return pids;
  }

  interface Probe {
    dir: string;
    /** In the `sleep` argument of the process the module starts: unique to this test. */
    marker: string;
    /** Written once that process started. */
    startedFile: string;
  }

  /**
   * Module source that starts `sleep 300.<marker>` and records that it did (in the code dir, which
   * an inspecting `uid` owns), then runs `rest`. With `newSession` the sleep gets a session of its
   * own; with `leaveGroup` the importing python itself does first: both out of the inspector's
   * process group.
   */
  async function forking(
    rest: string,
    { newSession, leaveGroup = false }: { newSession: boolean; leaveGroup?: boolean },
  ): Promise<Probe> {
    const marker = `300.${randomInt(2 ** 47)}`;
    markers.push(marker);
    const dir = await tempDir();
    const startedFile = join(dir, "started");
    await writeFile(
      join(dir, "probe.py"),
      [
        "import os, subprocess, time",
        ...(leaveGroup ? ["os.setsid()"] : []),
        `subprocess.Popen(["sleep", ${JSON.stringify(marker)}], start_new_session=${newSession ? "True" : "False"})`,
        `open(${JSON.stringify(startedFile)}, "w").close()`,
        "from ray import serve",
        rest,
      ].join("\n"),
    );
    return { dir, marker, startedFile };
  }

  const deployable = [
    "@serve.deployment",
    "class Lingering:",
    "    def __call__(self, request):",
    '        return "ok"',
    "app = Lingering.bind()",
  ].join("\n");

  async function expectAllGone(probe: Probe): Promise<void> {
    expect(existsSync(probe.startedFile)).toBe(true);
    await expect.poll(() => running(probe.marker), { timeout: 10_000, interval: 20 }).toEqual([]);
  }

  it("kills what the module started once the import finished", async () => {
    const probe = await forking(deployable, { newSession: false });
    const app = await inspectRayServeApp({ python: PYTHON, codeDir: probe.dir, entry: "probe:app" });
    expect(app.ingress).toBe("Lingering");
    await expectAllGone(probe);
  });

  it("kills what the module started when the import times out", async () => {
    const probe = await forking("time.sleep(600)", { newSession: false });
    const err = await refusal(
      inspectRayServeApp({ python: PYTHON, codeDir: probe.dir, entry: "probe:app", timeoutMs: 5000 }),
    );
    expect(err.message).toContain("did not finish within 5 s");
    await expectAllGone(probe);
  });

  it.skipIf(!pidIsolationAvailable())(
    "kills what the module started in a session of its own once the import finished",
    async () => {
      const probe = await forking(deployable, { newSession: true });
      const app = await inspectRayServeApp({ python: PYTHON, codeDir: probe.dir, entry: "probe:app" });
      expect(app.ingress).toBe("Lingering");
      await expectAllGone(probe);
    },
  );

  it.skipIf(!pidIsolationAvailable())(
    "kills what the module started in a session of its own when the import times out",
    async () => {
      const probe = await forking("time.sleep(600)", { newSession: true });
      const err = await refusal(
        inspectRayServeApp({ python: PYTHON, codeDir: probe.dir, entry: "probe:app", timeoutMs: 5000 }),
      );
      expect(err.message).toContain("did not finish within 5 s");
      await expectAllGone(probe);
    },
  );

  it.skipIf(!pidIsolationAvailable() || process.getuid?.() !== 0)(
    "kills what an unprivileged import started when the import itself left the group and timed out",
    async () => {
      // setuid clears unshare's --kill-child death signal: the group kill must reach the namespace.
      const probe = await forking("time.sleep(600)", { newSession: true, leaveGroup: true });
      const err = await refusal(
        inspectRayServeApp({
          python: PYTHON,
          codeDir: probe.dir,
          entry: "probe:app",
          timeoutMs: 5000,
          uid: 65534,
        }),
      );
      expect(err.message).toContain("did not finish within 5 s");
      await expectAllGone(probe);
    },
  );

  it("reports an inspector killed by a signal as such", async () => {
    // In a PID namespace python is not the namespace's init, so the signal kills it as anywhere.
    const dir = await codeDir("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n");
    const err = await refusal(inspectRayServeApp({ python: PYTHON, codeDir: dir, entry: "probe:app" }));
    expect(err.details).toMatchObject({ reason: "INSPECT_FAILED" });
    expect(err.message).toBe("the inspector was killed by SIGKILL");
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
