import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { type DeploymentConfigInput, deploymentConfig, environmentHash, TesseraError } from "@tessera/core";
import { EnvironmentBuilder } from "@tessera/env-builder";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
// The env-builder's own offline wheel maker: a pip environment without network access.
import { makeWheel } from "../../env-builder/test/support/wheels.js";
import type { ReplicaEvent, ReplicaSpec } from "../src/driver.js";
import { createDriver } from "../src/factory.js";
import { LocalDriver, parseReplicaLogLine, type ReplicaLogLine } from "../src/local/index.js";
import { waitFor } from "./support/wait-for.js";

const REPO = resolve(import.meta.dirname, "../../..");
const exampleFiles = (dir: string, names: string[]) =>
  Object.fromEntries(names.map((n) => [n, readFileSync(join(REPO, "examples", dir, n), "utf8")]));
const PYTHON_EXAMPLE = exampleFiles("python-dataframe", ["handler.py"]);
const TS_EXAMPLE = exampleFiles("ts-dataframe", ["handler.ts"]);

const PROBE_HANDLER = `import os
import subprocess
import sys
from tessera import route

class Probe:
    def __init__(self, config):
        self.config = config

    @route.get("/env")
    def env(self):
        return {"env": dict(os.environ), "cwd": os.getcwd()}

    @route.post("/alloc")
    def alloc(self, body):
        block = bytearray(int(body["mb"]) * 1024 * 1024)
        return {"allocated": len(block)}

    @route.post("/child")
    def child(self):
        # A child that ignores the SIGTERM of a stop: the driver must still not leave it behind.
        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ignoring', flush=True); time.sleep(300)"
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        child.stdout.readline()
        return {"pid": child.pid}
`;
const PKG_HANDLER = `import sys
import tesspkg
from tessera import route

class Pkg:
    def __init__(self, config):
        pass

    @route.get("/pkg")
    def pkg(self):
        return {"version": tesspkg.VERSION, "prefix": sys.prefix}
`;
const BROKEN_HANDLER = `class Broken:
    def __init__(self):
        raise RuntimeError("constructor exploded on purpose")
`;

const ORG = "7f1d2c3b-aaaa-4bbb-8ccc-dddddddddddd";
const clusterSpec = (clusterId: string) => ({
  clusterId,
  orgId: ORG,
  orgSlug: "acme",
  name: clusterId,
  quota: { cpus: 4, memoryMb: 4096, gpus: 0, maxReplicas: 10 },
});
const CLUSTER_A = "c0000000-0000-4000-8000-00000000000a";
const CLUSTER_B = "c0000000-0000-4000-8000-00000000000b";

function replicaSpec(
  clusterId: string,
  replicaId: string,
  config: DeploymentConfigInput,
  files: Record<string, string>,
  extraEnv?: Record<string, string>,
): ReplicaSpec {
  const parsed = deploymentConfig.parse(config);
  return {
    clusterId,
    orgId: ORG,
    replicaId,
    deploymentId: `d-${replicaId}`,
    deploymentName: "dataframe",
    applicationName: "demo",
    revisionId: `rev-${replicaId}`,
    revisionVersion: 1,
    runtime: parsed.runtime,
    config: parsed,
    code: { files, encoding: "utf8" },
    environment: { hash: environmentHash(parsed.runtime, parsed.environment), location: "" },
    ...(extraEnv ? { extraEnv } : {}),
  };
}
const python = (clusterId: string, replicaId: string) =>
  replicaSpec(
    clusterId,
    replicaId,
    {
      runtime: "python",
      entry: "handler:Dataframe",
      healthCheck: { periodS: 1, timeoutS: 2, failureThreshold: 1, startupTimeoutS: 60 },
    },
    PYTHON_EXAMPLE,
  );

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return !readFileSync(`/proc/${pid}/stat`, "utf8").includes(") Z ");
  } catch {
    return false;
  }
};

async function dedupe(address: string) {
  const res = await fetch(`${address}/deduplicate`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      rows: [
        { a: 1, b: 2 },
        { a: 1, b: 3 },
      ],
      columns: ["a"],
    }),
  });
  return { status: res.status, body: await res.json() };
}

describe("LocalDriver with real python and node replicas", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "tessera-local-driver-"));
  // Ports below the kernel's ephemeral range (32768+) and above the ranges full-stack test
  // processes claim (20000-29999).
  const driverConfig = {
    dataDir,
    portRangeFrom: 30_000,
    portRangeTo: 30_099,
    portsPerCluster: 20,
    drainTimeoutS: 5,
    restartBackoffMs: 100,
    restartBackoffMaxMs: 400,
    maxQuickCrashes: 3,
    gpuDevices: ["GPU-test-0", "GPU-test-1"],
  };
  const events: ReplicaEvent[] = [];
  const logs: ReplicaLogLine[] = [];
  const errors: unknown[] = [];
  const drivers: LocalDriver[] = [];
  const wheels = mkdtempSync(join(tmpdir(), "tessera-local-driver-wheels-"));
  // Offline: pip installs only from the wheel made in beforeAll.
  const environmentBuilder = new EnvironmentBuilder({
    root: join(dataDir, "envs"),
    pipArgs: ["--no-index", "--find-links", wheels],
  });
  const newDriver = (clusterId?: string) => {
    const d = createDriver(
      { ...(clusterId ? { id: clusterId } : {}), driver: "local", driverConfig },
      { local: { onLog: (l) => logs.push(l), onError: (e) => errors.push(e), environmentBuilder } },
    ) as LocalDriver;
    d.watch((e) => events.push(e));
    drivers.push(d);
    return d;
  };
  let driver: LocalDriver;
  const lastEvent = (replicaId: string) => events.findLast((e) => e.replicaId === replicaId);
  const waitPhase = (replicaId: string, phase: string, timeoutMs = 20_000) =>
    waitFor(
      `${replicaId} ${phase}`,
      () => {
        const last = lastEvent(replicaId);
        return last?.phase === phase ? last : undefined;
      },
      timeoutMs,
    );

  beforeAll(() => {
    makeWheel("python3", wheels, "tesspkg", "1.2.3");
    driver = newDriver();
  });
  afterAll(async () => {
    for (const c of [CLUSTER_A, CLUSTER_B]) await driver.destroyCluster(c).catch(() => {});
    for (const d of drivers) await d.close();
    await environmentBuilder.close();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(wheels, { recursive: true, force: true });
  });

  it("gives each cluster its own directory and a port range no other cluster shares, idempotently", async () => {
    expect(driver.kind).toBe("local");
    const a = await driver.provisionCluster(clusterSpec(CLUSTER_A));
    const b = await driver.provisionCluster(clusterSpec(CLUSTER_B));
    const again = await driver.provisionCluster(clusterSpec(CLUSTER_A));
    const range = (p: typeof a) => p.state.portRange as { from: number; to: number };
    expect(range(a)).toEqual({ from: 30_000, to: 30_019 });
    expect(range(b)).toEqual({ from: 30_020, to: 30_039 });
    expect(range(again)).toEqual(range(a));
    expect(a.state.directory).toBe(join(dataDir, "clusters", CLUSTER_A));
    expect(existsSync(join(dataDir, "clusters", CLUSTER_B, "cluster.json"))).toBe(true);
  });

  it("rejects malformed ids and unknown clusters with stable codes", async () => {
    const bad = python(CLUSTER_A, "../escape");
    await expect(driver.startReplica(bad)).rejects.toMatchObject({ code: "VALIDATION_FAILED" });
    const orphan = python("c0000000-0000-4000-8000-0000000000ff", "r1");
    await expect(driver.startReplica(orphan)).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect(() => new LocalDriver({ driverConfig: { dataDir, portRangeFrom: "x" } })).toThrow(TesseraError);
    await driver.stopReplica(CLUSTER_A, "never-started"); // unknown ids are a no-op
  });

  it("runs the python example: starting, then ready once /-/ready answers; logs reach onLog", async () => {
    const first = await driver.startReplica(python(CLUSTER_A, "py-1"));
    expect(first.phase).toBe("starting");
    expect(first.address).toMatch(/^http:\/\/127\.0\.0\.1:300(0\d|1\d)$/);
    const ready = await waitPhase("py-1", "ready");
    expect(await dedupe(ready.address as string)).toEqual({
      status: 200,
      body: { rows: [{ a: 1, b: 2 }], removed: 1 },
    });
    const listed = await driver.listReplicas(CLUSTER_A);
    expect(listed).toEqual([expect.objectContaining({ replicaId: "py-1", phase: "ready", restarts: 0 })]);
    expect(await driver.startReplica(python(CLUSTER_A, "py-1"))).toMatchObject({ phase: "ready" });
    const listening = await waitFor("the listening line", () =>
      logs.find(
        (l) => l.replicaId === "py-1" && parseReplicaLogLine(l.line, l.stream).message === "listening",
      ),
    );
    expect(listening).toMatchObject({ clusterId: CLUSTER_A, deploymentId: "d-py-1", stream: "stdout" });
    expect(parseReplicaLogLine(listening.line).fields).toMatchObject({ replica: "py-1" });
  });

  it("runs the typescript example from its esbuild bundle", async () => {
    await driver.startReplica(
      replicaSpec(
        CLUSTER_A,
        "ts-1",
        { runtime: "node", entry: "handler.ts:Dataframe", resources: { cpus: 1, memoryMb: 64 } },
        TS_EXAMPLE,
      ),
    );
    const ready = await waitPhase("ts-1", "ready", 30_000);
    expect(await dedupe(ready.address as string)).toEqual({
      status: 200,
      body: { rows: [{ a: 1, b: 2 }], removed: 1 },
    });
    const proc = await driver.replicaProcess(CLUSTER_A, "ts-1");
    const cmdline = readFileSync(`/proc/${proc?.pid}/cmdline`, "utf8").split("\0");
    expect(cmdline.some((a) => a.endsWith(".mjs"))).toBe(true);
    expect(cmdline.some((a) => a.includes("tsx"))).toBe(false);
    // The schema's smallest memoryMb: V8 needs a floor under its OS limit, the heap stays at 75 %.
    expect(cmdline).toContain("--max-old-space-size=48");
    if (driver.tools.prlimit)
      expect(readFileSync(`/proc/${proc?.pid}/limits`, "utf8")).toMatch(
        new RegExp(`Max data size\\s+${128 * 1024 * 1024}\\s`),
      );
    await driver.stopReplica(CLUSTER_A, "ts-1");
  });

  it("restarts a replica killed with SIGKILL and counts the restart", async () => {
    const before = await driver.replicaProcess(CLUSTER_A, "py-1");
    process.kill(before?.pid as number, "SIGKILL");
    const restarting = await waitFor("a restart event", () =>
      events.find((e) => e.replicaId === "py-1" && e.restarts === 1 && e.phase === "starting"),
    );
    expect(restarting.reason).toMatch(/SIGKILL/);
    await waitFor(
      "py-1 ready again",
      () => lastEvent("py-1")?.phase === "ready" && lastEvent("py-1")?.restarts === 1,
    );
    const after = await driver.replicaProcess(CLUSTER_A, "py-1");
    expect(after?.pid).not.toBe(before?.pid);
    expect(await dedupe(lastEvent("py-1")?.address as string)).toMatchObject({ status: 200 });
  });

  it("reports a ready replica whose health check fails as starting, and ready again once it passes", async () => {
    const address = lastEvent("py-1")?.address as string;
    const setHealthy = (healthy: boolean) =>
      fetch(`${address}/admin/health`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ healthy }),
      });
    expect((await setHealthy(false)).status).toBe(200);
    const unready = await waitPhase("py-1", "starting");
    expect(unready.reason).toMatch(/^not ready/);
    expect((await setHealthy(true)).status).toBe(200);
    expect(await waitPhase("py-1", "ready")).toMatchObject({ restarts: 1, address });
  });

  it("drains on stop: an in-flight slow request finishes, then the replica is stopped and gone", async () => {
    const address = lastEvent("py-1")?.address as string;
    const pid = (await driver.replicaProcess(CLUSTER_A, "py-1"))?.pid as number;
    const rows = Array.from({ length: 6 }, (_, i) => ({ i }));
    const res = await fetch(`${address}/rows/stream?delay_ms=250`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ rows }),
    });
    expect(res.status).toBe(200);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let text = new TextDecoder().decode((await reader.read()).value); // the request is in flight
    const stopped = driver.stopReplica(CLUSTER_A, "py-1");
    await waitPhase("py-1", "draining");
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    await stopped;
    expect(text).toContain('"count":6');
    expect(lastEvent("py-1")?.phase).toBe("stopped");
    expect(alive(pid)).toBe(false);
    expect((await driver.listReplicas(CLUSTER_A)).map((r) => r.replicaId)).not.toContain("py-1");
    expect(existsSync(join(dataDir, "clusters", CLUSTER_A, "replicas", "py-1"))).toBe(false);
  });

  it("marks a replica failed after repeated quick crashes, with the reason and its last output", async () => {
    await driver.startReplica(
      replicaSpec(
        CLUSTER_A,
        "broken",
        { runtime: "python", entry: "handler:Broken" },
        { "handler.py": BROKEN_HANDLER },
      ),
    );
    const failed = await waitPhase("broken", "failed");
    expect(failed.restarts).toBe(2);
    expect(failed.reason).toMatch(/crashed 3 times in a row/);
    expect(failed.reason).toContain("constructor exploded on purpose");
    expect((await driver.listReplicas(CLUSTER_A)).find((r) => r.replicaId === "broken")?.phase).toBe(
      "failed",
    );
    await driver.stopReplica(CLUSTER_A, "broken");
    expect(await driver.listReplicas(CLUSTER_A)).toEqual([]);
  });

  it("kills and restarts a replica that is not ready within startupTimeoutS", async () => {
    const slow = "import time\n\nclass Slow:\n    def __init__(self, config):\n        time.sleep(30)\n";
    await driver.startReplica(
      replicaSpec(
        CLUSTER_A,
        "slow",
        {
          runtime: "python",
          entry: "handler:Slow",
          healthCheck: { periodS: 1, timeoutS: 1, failureThreshold: 1, startupTimeoutS: 1 },
        },
        { "handler.py": slow },
      ),
    );
    const restarted = await waitFor("slow restarted", () =>
      events.find((e) => e.replicaId === "slow" && e.restarts === 1),
    );
    expect(restarted.reason).toMatch(/^not ready within 1 s; killed by SIGKILL/);
    await driver.stopReplica(CLUSTER_A, "slow");
  });

  it("gives tenant code a scrubbed environment and enforces the memory limit and CPU count", async () => {
    process.env.DATABASE_URL = "postgres://platform-secret@127.0.0.1/tessera";
    process.env.TESSERA_STRIPE_SECRET = "sk_live_platform";
    try {
      await driver.startReplica(
        replicaSpec(
          CLUSTER_B,
          "probe",
          { runtime: "python", entry: "handler:Probe", resources: { cpus: 1, memoryMb: 128, gpus: 1 } },
          { "handler.py": PROBE_HANDLER },
          { TESSERA_HANDLE_URL: "http://127.0.0.1:8080/v1/acme/demo" },
        ),
      );
    } finally {
      delete process.env.DATABASE_URL;
      delete process.env.TESSERA_STRIPE_SECRET;
    }
    const address = (await waitPhase("probe", "ready")).address as string;
    const { env, cwd } = (await (await fetch(`${address}/env`)).json()) as {
      env: Record<string, string>;
      cwd: string;
    };
    expect(env.DATABASE_URL).toBeUndefined();
    expect(env.TESSERA_STRIPE_SECRET).toBeUndefined();
    expect(env.TESSERA_HANDLE_URL).toBe("http://127.0.0.1:8080/v1/acme/demo");
    const allowed =
      /^(PATH|HOME|LANG|PYTHONPATH|PYTHONUNBUFFERED|PYTHONDONTWRITEBYTECODE|CUDA_VISIBLE_DEVICES|TESSERA_[A-Z_]+)$/;
    expect(Object.keys(env).filter((k) => !allowed.test(k))).toEqual([]);
    expect(env.HOME).toBe(join(dataDir, "clusters", CLUSTER_B, "replicas", "probe", "home"));
    expect(cwd).toBe(env.HOME);
    expect(env.CUDA_VISIBLE_DEVICES).toBe("GPU-test-0");
    // One of the two GPUs is taken: a replica asking for two cannot be placed.
    const greedy = python(CLUSTER_B, "greedy");
    greedy.config = { ...greedy.config, resources: { ...greedy.config.resources, gpus: 2 } };
    await expect(driver.startReplica(greedy)).rejects.toMatchObject({ code: "OVERLOADED" });
    // More than the host has at all: a failed replica that says why.
    const impossible = python(CLUSTER_B, "impossible");
    impossible.config = { ...impossible.config, resources: { ...impossible.config.resources, gpus: 3 } };
    expect(await driver.startReplica(impossible)).toMatchObject({
      phase: "failed",
      reason: expect.stringMatching(/asks for 3 GPU\(s\) per replica; the cluster's host has 2/),
    });
    await driver.stopReplica(CLUSTER_B, "impossible");

    const pid = (await driver.replicaProcess(CLUSTER_B, "probe"))?.pid as number;
    if (driver.tools.prlimit) {
      const limits = readFileSync(`/proc/${pid}/limits`, "utf8");
      expect(limits).toMatch(new RegExp(`Max data size\\s+${128 * 1024 * 1024}\\s`));
      const alloc = (mb: number) =>
        fetch(`${address}/alloc`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ mb }),
        }).then(async (r) => ({
          status: r.status,
          body: await r.text(),
        }));
      expect(await alloc(16)).toMatchObject({ status: 200 });
      const tooMuch = await alloc(512);
      expect(tooMuch.status).toBe(500);
      expect(tooMuch.body).toContain("HANDLER_ERROR");
      await waitFor("the MemoryError in the replica log", () =>
        logs.some((l) => l.replicaId === "probe" && l.line.includes("MemoryError")),
      );
    }
    if (driver.tools.taskset && driver.tools.cpus.length > 1) {
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      expect(status).toMatch(/Cpus_allowed_list:\s+\d+\n/);
    }
  });

  it("builds a pip environment with the environment builder and runs the replica in it", async () => {
    const request = {
      clusterId: CLUSTER_A,
      hash: environmentHash("python", { kind: "pip", requirements: ["tesspkg==1.2.3"] }),
      runtime: "python" as const,
      spec: { kind: "pip" as const, requirements: ["tesspkg==1.2.3"] },
    };
    const buildLog: string[] = [];
    const env = await driver.ensureEnvironment(request, (line) => buildLog.push(line));
    expect(env.hash).toBe(request.hash);
    expect(existsSync(join(env.location, "bin", "python"))).toBe(true);
    expect(buildLog.join("\n")).toMatch(/tesspkg/);
    const spec = replicaSpec(
      CLUSTER_A,
      "py-env",
      { runtime: "python", entry: "handler:Pkg", environment: request.spec },
      { "handler.py": PKG_HANDLER },
    );
    await driver.startReplica({ ...spec, environment: env });
    const address = (await waitPhase("py-env", "ready", 30_000)).address as string;
    const info = (await (await fetch(`${address}/pkg`)).json()) as { version: string; prefix: string };
    expect(info).toEqual({ version: "1.2.3", prefix: env.location });
    await driver.stopReplica(CLUSTER_A, "py-env");
  });

  it("a new driver on the same data dir adopts running replicas without restarting them", async () => {
    await driver.startReplica(python(CLUSTER_A, "py-2"));
    const address = (await waitPhase("py-2", "ready")).address as string;
    const original = await driver.replicaProcess(CLUSTER_A, "py-2");
    await driver.close();

    // A driver made for one cluster row adopts only that cluster's replicas.
    const scoped = newDriver(CLUSTER_B);
    expect(await scoped.listReplicas(CLUSTER_A)).toEqual([]);
    expect((await scoped.listReplicas(CLUSTER_B)).map((r) => r.replicaId)).toEqual(["probe"]);
    await scoped.close();

    const successor = newDriver();
    const adopted = await successor.listReplicas(CLUSTER_A);
    expect(adopted).toEqual([expect.objectContaining({ replicaId: "py-2", address })]);
    expect(await successor.replicaProcess(CLUSTER_A, "py-2")).toEqual(original);
    await waitFor("adopted replica ready", async () =>
      (await successor.listReplicas(CLUSTER_A)).some((r) => r.phase === "ready"),
    );
    expect(await dedupe(address)).toMatchObject({ status: 200 });
    // Replicas of every cluster in the data dir are adopted, not only those of the driver's row.
    expect((await successor.listReplicas(CLUSTER_B)).map((r) => r.replicaId)).toEqual(["probe"]);

    // Not its child, yet the successor notices the crash and restarts it.
    process.kill(original?.pid as number, "SIGKILL");
    await waitFor(
      "adopted replica restarted",
      async () =>
        (await successor.listReplicas(CLUSTER_A)).find((r) => r.restarts === 1 && r.phase === "ready"),
      20_000,
    );
    expect((await successor.replicaProcess(CLUSTER_A, "py-2"))?.pid).not.toBe(original?.pid);
    driver = successor;
  });

  it("destroyCluster stops every replica and what it started, removes the directory and frees the port range", async () => {
    await driver.startReplica(python(CLUSTER_B, "py-b"));
    await waitPhase("py-b", "ready");
    const probe = (await driver.listReplicas(CLUSTER_B)).find((r) => r.replicaId === "probe");
    const child = (await (await fetch(`${probe?.address}/child`, { method: "POST" })).json()) as {
      pid: number;
    };
    const pids = await Promise.all(
      ["probe", "py-b"].map(async (id) => (await driver.replicaProcess(CLUSTER_B, id))?.pid as number),
    );
    pids.push(child.pid);
    expect(pids.every(alive)).toBe(true);
    await driver.destroyCluster(CLUSTER_B);
    expect(pids.some(alive)).toBe(false);
    expect(existsSync(join(dataDir, "clusters", CLUSTER_B))).toBe(false);
    expect(readdirSync(join(dataDir, "port-slots"))).toEqual(["0"]);
    expect(await driver.listReplicas(CLUSTER_B)).toEqual([]);
    await driver.destroyCluster(CLUSTER_B); // unknown: no-op
    expect(errors.filter((e) => !/not found: replica/.test(String(e)))).toEqual([]);
  });

  it("stopAllReplicas stops the replicas of every cluster under the data dir, as a platform shutdown does", async () => {
    await driver.startReplica(python(CLUSTER_A, "py-last"));
    await waitPhase("py-last", "ready");
    const running = await driver.listReplicas(CLUSTER_A);
    expect(running.length).toBeGreaterThanOrEqual(2);
    const pids = await Promise.all(
      running.map(async (r) => (await driver.replicaProcess(CLUSTER_A, r.replicaId))?.pid as number),
    );
    expect(pids.every(alive)).toBe(true);
    expect(await driver.stopAllReplicas({ drainTimeoutS: 0 })).toBe(running.length);
    expect(pids.some(alive)).toBe(false);
    expect(await driver.listReplicas(CLUSTER_A)).toEqual([]);
  });
});

const SPY_HANDLER = `import os
import subprocess
from tessera import route

def attempt(fn):
    try:
        fn()
        return "allowed"
    except PermissionError:
        return "denied"
    except Exception as e:
        return type(e).__name__

class Spy:
    def __init__(self, config):
        self.c = config

    @route.get("/spy")
    def spy(self):
        c = self.c
        return {
            "uid": os.getuid(),
            "gid": os.getgid(),
            "groups": os.getgroups(),
            "provisionerEnviron": attempt(lambda: open("/proc/%d/environ" % c["provisionerPid"], "rb").read()),
            "signalProvisioner": attempt(lambda: os.kill(c["provisionerPid"], 0)),
            "otherCluster": attempt(lambda: os.listdir(c["otherCluster"])),
            "replicaJson": attempt(lambda: open(c["replicaJson"]).read()),
            "writeCode": attempt(lambda: open(os.path.join(os.environ["TESSERA_CODE_DIR"], "x.py"), "w").write("x")),
            "writeHome": attempt(lambda: open(os.path.join(os.environ["HOME"], "x.txt"), "w").write("x")),
        }

    @route.post("/escape")
    def escape(self):
        return {"pid": subprocess.Popen(["sleep", "300"], start_new_session=True).pid}
`;

// Switching users needs root, and an interpreter outside root's home (pyenv lives in /root).
const canSwitchUsers = process.getuid?.() === 0 && existsSync("/usr/bin/python3");

describe.skipIf(!canSwitchUsers)("LocalDriver with per-cluster users (runAsUid)", () => {
  const events: ReplicaEvent[] = [];
  let dataDir: string;
  let driver: LocalDriver;
  // Created here, not while collecting: a skipped suite runs no afterAll to clean up.
  beforeAll(() => {
    dataDir = mkdtempSync(join(tmpdir(), "tessera-local-driver-uid-"));
    driver = new LocalDriver({
      driverConfig: {
        dataDir,
        portRangeFrom: 30_100,
        portRangeTo: 30_139,
        portsPerCluster: 20,
        python: "/usr/bin/python3",
        runAsUid: 61_000,
        drainTimeoutS: 2,
      },
      onError: () => {},
    });
    driver.watch((e) => events.push(e));
  });
  afterAll(async () => {
    for (const c of [CLUSTER_A, CLUSTER_B]) await driver.destroyCluster(c);
    await driver.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("runs each cluster as its own user, unable to reach the provisioner or another cluster", async () => {
    const a = await driver.provisionCluster(clusterSpec(CLUSTER_A));
    const b = await driver.provisionCluster(clusterSpec(CLUSTER_B));
    expect([a.state.uid, b.state.uid]).toEqual([61_000, 61_001]);
    const replicaDir = join(dataDir, "clusters", CLUSTER_A, "replicas", "spy");
    await driver.startReplica(
      replicaSpec(
        CLUSTER_A,
        "spy",
        {
          runtime: "python",
          entry: "handler:Spy",
          userConfig: {
            provisionerPid: process.pid,
            otherCluster: join(dataDir, "clusters", CLUSTER_B),
            replicaJson: join(replicaDir, "replica.json"),
          },
        },
        { "handler.py": SPY_HANDLER },
      ),
    );
    const ready = await waitFor("spy ready", () =>
      events.find((e) => e.replicaId === "spy" && (e.phase === "ready" || e.phase === "failed")),
    );
    expect(ready).toMatchObject({ phase: "ready" });
    const seen = await (await fetch(`${ready.address}/spy`)).json();
    expect(seen).toEqual({
      uid: 61_000,
      gid: 61_000,
      groups: expect.not.arrayContaining([0]),
      provisionerEnviron: "denied",
      signalProvisioner: "denied",
      otherCluster: "denied",
      replicaJson: "denied",
      writeCode: "denied",
      writeHome: "allowed",
    });

    // A process that left its replica's process group still dies with the cluster (same user).
    const escaped = (await (await fetch(`${ready.address}/escape`, { method: "POST" })).json()) as {
      pid: number;
    };
    expect(alive(escaped.pid)).toBe(true);
    await driver.destroyCluster(CLUSTER_A);
    await waitFor("the escaped process killed", () => !alive(escaped.pid));
  });
});
