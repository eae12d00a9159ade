import { spawn } from "node:child_process";
import {
  appendFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { GpuAllocator } from "../src/local/gpus.js";
import { cpuSetFor, withHostLimits, writeCodeBundle } from "../src/local/launch.js";
import { LogFileFollower, parseReplicaLogLine } from "../src/local/logs.js";
import { claimPortSlot, pickPort, portHolder, releasePortSlot } from "../src/local/ports.js";
import { processIdentity, signalReplicaGroup } from "../src/local/processes.js";
import { DEFAULT_LOCAL_SETTINGS, localDriverSettings } from "../src/local/settings.js";
import { waitFor } from "./support/wait-for.js";

const tmp = mkdtempSync(join(tmpdir(), "tessera-local-parts-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("parseReplicaLogLine", () => {
  const received = new Date("2026-01-01T00:00:00Z");

  it("reads the runtimes' JSON lines into level, message, time and the remaining fields", () => {
    const line = JSON.stringify({
      ts: "2026-12-04T17:45:26.545Z",
      level: "warn",
      msg: "drain timeout",
      replica: "r1",
      inFlight: 2,
    });
    expect(parseReplicaLogLine(line, "stdout", received)).toEqual({
      level: "warn",
      message: "drain timeout",
      at: new Date("2026-12-04T17:45:26.545Z"),
      fields: { replica: "r1", inFlight: 2 },
    });
  });

  it("keeps anything else verbatim: info on stdout, error on stderr", () => {
    expect(parseReplicaLogLine("hello from print()", "stdout", received)).toEqual({
      level: "info",
      message: "hello from print()",
      at: received,
      fields: {},
    });
    expect(parseReplicaLogLine("{not json", "stderr", received)).toMatchObject({
      level: "error",
      message: "{not json",
    });
    expect(parseReplicaLogLine("[1,2]", "stdout", received).message).toBe("[1,2]");
  });

  it("normalises levels and survives odd fields", () => {
    const odd = parseReplicaLogLine(
      JSON.stringify({ ts: "not a date", level: "WARNING", msg: { nested: true } }),
      "stdout",
      received,
    );
    expect(odd).toEqual({ level: "warn", message: '{"nested":true}', at: received, fields: {} });
    expect(parseReplicaLogLine(JSON.stringify({ level: "loud", msg: "x" }), "stderr").level).toBe("error");
  });
});

describe("localDriverSettings", () => {
  it("applies defaults and resolves the data dir", () => {
    const s = localDriverSettings({}, { TESSERA_DATA_DIR: "/srv/tessera" });
    expect(s).toEqual({ ...DEFAULT_LOCAL_SETTINGS, dataDir: "/srv/tessera" });
    expect(localDriverSettings({ python: "/opt/py/bin/python3", drainTimeoutS: 2.5 }, {})).toMatchObject({
      python: "/opt/py/bin/python3",
      drainTimeoutS: 2.5,
    });
  });

  it.each([
    [{ portRangeFrom: "20000" }, /portRangeFrom must be a number/],
    [{ portRangeFrom: 80 }, /portRangeFrom must be a number between 1024/],
    [{ portsPerCluster: 1.5 }, /portsPerCluster must be an integer/],
    [{ portRangeFrom: 30_000, portRangeTo: 29_000 }, /portRangeTo must be >= portRangeFrom/],
    [{ portRangeFrom: 30_000, portRangeTo: 30_009, portsPerCluster: 11 }, /larger than the whole port range/],
    [{ dataDir: "" }, /dataDir must be a non-empty string/],
    [{ restartBackoffMs: 1000, restartBackoffMaxMs: 10 }, /restartBackoffMaxMs/],
    [{ gpuDevices: "0,1" }, /gpuDevices must be a list/],
    [{ gpuDevices: ["0", "1; rm -rf /"] }, /gpuDevices must be a list/],
    [{ runAsUid: 0 }, /runAsUid must be a number between 1000/],
  ])("rejects %j with VALIDATION_FAILED", (config, message) => {
    expect(() => localDriverSettings(config, {})).toThrow(message);
    expect(() => localDriverSettings(config, {})).toThrow(
      expect.objectContaining({ code: "VALIDATION_FAILED" }),
    );
  });
});

describe("LogFileFollower", () => {
  it("returns complete lines only, continues from its offset, and starts over after truncation", () => {
    const path = join(tmp, "out.log");
    writeFileSync(path, "");
    const f = new LogFileFollower(path, "stdout", 0);
    appendFileSync(path, "first\nsec");
    expect(f.poll()).toEqual(["first"]);
    appendFileSync(path, "ond\r\n\nthird\n");
    expect(f.poll()).toEqual(["second", "third"]);
    expect(f.poll()).toEqual([]);
    truncateSync(path, 0);
    appendFileSync(path, "after truncation\n");
    expect(f.poll()).toEqual(["after truncation"]);
    appendFileSync(path, "half a li");
    expect(f.poll()).toEqual([]);
    const resumed = new LogFileFollower(path, "stdout", f.resumeOffset);
    appendFileSync(path, "ne\nthe next line\n");
    expect(resumed.poll()).toEqual(["half a line", "the next line"]);
  });

  it("cuts runaway lines and truncates a large file once read", () => {
    const path = join(tmp, "big.log");
    writeFileSync(path, `${"x".repeat(40_000)}\n${"y".repeat(9 * 1024 * 1024)}`);
    const f = new LogFileFollower(path, "stderr", 0);
    const lines = f.poll();
    expect(lines[0]).toHaveLength(16 * 1024);
    expect(lines.every((l) => l.length <= 16 * 1024)).toBe(true);
    expect(f.offset).toBe(0);
    appendFileSync(path, "\nnext\n");
    expect(f.poll().at(-1)).toBe("next");
  });
});

describe("host limits", () => {
  it("pins to a window of the allowed CPUs, or not at all when the replica may use them all", () => {
    expect(cpuSetFor(1, [0, 1, 2, 3], "r")).toHaveLength(1);
    expect(cpuSetFor(2.5, [0, 1, 2, 3], "replica-7")).toHaveLength(3);
    expect(cpuSetFor(4, [0, 1, 2, 3], "r")).toBeNull();
    expect(cpuSetFor(1, [], "r")).toBeNull();
    const spread = new Set(["a", "b", "c", "d", "e", "f"].map((id) => cpuSetFor(1, [0, 1, 2, 3], id)?.[0]));
    expect(spread.size).toBeGreaterThan(1);
  });

  it("wraps the runtime in prlimit then taskset, each exec'ing the next", () => {
    const launch = { command: "/usr/bin/python3", args: ["-u", "-m", "tessera.runtime"], env: {} };
    const tools = { prlimit: "/usr/bin/prlimit", taskset: "/usr/bin/taskset", cpus: [0, 1] };
    expect(withHostLimits(launch, { memoryMb: 256, cpuSet: [1] }, tools)).toEqual({
      command: "/usr/bin/prlimit",
      args: [
        `--data=${256 * 1024 * 1024}`,
        "--core=0",
        "--",
        "/usr/bin/taskset",
        "-c",
        "1",
        "/usr/bin/python3",
        "-u",
        "-m",
        "tessera.runtime",
      ],
      env: {},
    });
    expect(
      withHostLimits(launch, { memoryMb: 256, cpuSet: [1] }, { prlimit: null, taskset: null, cpus: [] }),
    ).toEqual(launch);
  });
});

describe("code bundles", () => {
  it("writes text and base64 files and refuses paths that escape the code directory", async () => {
    const dir = join(tmp, "code");
    await writeCodeBundle(dir, { files: { "a/b.py": "x = 1\n" }, encoding: "utf8" });
    await writeCodeBundle(dir, {
      files: { "bin.dat": Buffer.from([0, 1, 2]).toString("base64") },
      encoding: "base64",
    });
    expect([...readFileSync(join(dir, "bin.dat"))]).toEqual([0, 1, 2]);
    expect(existsSync(join(dir, "a/b.py"))).toBe(false); // a new bundle replaces the old one
    await expect(
      writeCodeBundle(dir, { files: { "../outside.py": "x" }, encoding: "utf8" }),
    ).rejects.toMatchObject({ code: "VALIDATION_FAILED" });
    await expect(writeCodeBundle(dir, { files: { "/etc/x": "x" }, encoding: "utf8" })).rejects.toMatchObject({
      code: "VALIDATION_FAILED",
    });
  });
});

describe("port slots", () => {
  it("gives clusters disjoint slices, the same one again to the same cluster, and frees it on release", () => {
    const settings = {
      dataDir: join(tmp, "slots"),
      portRangeFrom: 40_000,
      portRangeTo: 40_009,
      portsPerCluster: 5,
    };
    expect(claimPortSlot(settings, "a")).toEqual({ slot: 0, range: { from: 40_000, to: 40_004 } });
    expect(claimPortSlot(settings, "b")).toEqual({ slot: 1, range: { from: 40_005, to: 40_009 } });
    expect(claimPortSlot(settings, "a").slot).toBe(0);
    expect(() => claimPortSlot(settings, "c")).toThrow(expect.objectContaining({ code: "OVERLOADED" }));
    releasePortSlot(settings.dataDir, 0, "b"); // not b's: kept
    expect(() => claimPortSlot(settings, "c")).toThrow(/no free port range/);
    releasePortSlot(settings.dataDir, 0, "a");
    expect(claimPortSlot(settings, "c").slot).toBe(0);
  });
});

describe("pickPort", () => {
  it("keeps a restarting replica's port, else goes round-robin from the cursor, skipping taken ports", async () => {
    // Below the kernel's ephemeral range (32768+), where outgoing connections of this machine
    // could hold a port for a moment, and above the ranges test stacks claim (20000-29999).
    const range = { from: 31_100, to: 31_104 };
    expect(await pickPort(range, new Set(), 31_102)).toBe(31_102);
    expect(await pickPort(range, new Set(), undefined, 31_103)).toBe(31_103);
    expect(await pickPort(range, new Set([31_104]), undefined, 31_104)).toBe(31_100); // wraps
    expect(await pickPort(range, new Set(), undefined, 31_105)).toBe(31_100); // cursor past the end
    expect(await pickPort(range, new Set([31_100, 31_101]), undefined)).toBe(31_102);
    const all = new Set([31_100, 31_101, 31_102, 31_103, 31_104]);
    await expect(pickPort(range, all)).rejects.toMatchObject({ code: "OVERLOADED" });
  });

  it("turns away a client that connects while a port is checked, so the check never waits on it", async () => {
    // A router with a stale table may send to the port just then and keep its request open for
    // its whole timeout: the holder must close anyway, not when that client gives up.
    const holder = portHolder();
    await new Promise<void>((resolve) =>
      holder.listen({ port: 0, host: "127.0.0.1", exclusive: true }, resolve),
    );
    const port = (holder.address() as { port: number }).port;
    const accepted = new Promise((resolve) => holder.once("connection", resolve));
    const stranger: Socket = connect(port, "127.0.0.1");
    stranger.on("error", () => {});
    const strangerClosed = new Promise((resolve) => stranger.once("close", resolve));
    stranger.write("GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    await accepted;
    await new Promise<void>((resolve) => holder.close(() => resolve()));
    await strangerClosed;
    expect(stranger.destroyed).toBe(true);
  });
});

describe("process identity", () => {
  it("never signals a process whose start time differs (a recycled pid)", async () => {
    const child = spawn("sleep", ["30"], { detached: true, stdio: "ignore" });
    const exited = new Promise((resolve) => child.once("exit", resolve));
    const id = await waitFor("the sleep process", () => processIdentity(child.pid as number));
    expect(signalReplicaGroup({ pid: id.pid, startTime: "1" }, "SIGKILL")).toBe(false);
    expect(processIdentity(id.pid)).toEqual(id);
    expect(signalReplicaGroup(id, "SIGKILL")).toBe(true);
    await exited;
    expect(processIdentity(id.pid)).toBeUndefined();
  });
});

describe("GpuAllocator", () => {
  it("gives whole GPUs exclusively and packs fractions onto shared ones", () => {
    const gpus = new GpuAllocator(["g0", "g1", "g2"]);
    expect(gpus.allocate("cpu-only", 0)).toEqual([]);
    expect(gpus.allocate("a", 0.3)).toEqual(["g0"]);
    expect(gpus.allocate("b", 0.7)).toEqual(["g0"]); // fills g0 rather than opening another
    expect(gpus.allocate("a", 0.3)).toEqual(["g0"]); // asking again changes nothing
    expect(gpus.allocate("c", 1.5)).toEqual(["g1", "g2"]);
    expect(gpus.allocate("d", 0.1)).toBeNull();
    gpus.release("b");
    expect(gpus.allocate("d", 0.5)).toEqual(["g0"]);
    expect(gpus.allocate("e", 1)).toBeNull(); // g0 is shared, g1 and g2 taken
    gpus.release("c");
    expect(gpus.allocate("e", 1)).toEqual(["g1"]);
  });

  it("tells a request the host could never satisfy from one that must wait", () => {
    const gpus = new GpuAllocator(["g0", "g1"]);
    expect([0, 0.5, 1, 2].map((g) => gpus.couldEverFit(g))).toEqual([true, true, true, true]);
    expect(gpus.couldEverFit(2.5)).toBe(false);
    expect(new GpuAllocator([]).couldEverFit(0.1)).toBe(false);
  });

  it("restores what adopted replicas hold", () => {
    const gpus = new GpuAllocator(["g0", "g1"]);
    gpus.restore("old", ["g1"], 1);
    gpus.restore("gone-device", ["g9"], 1);
    expect(gpus.allocate("new", 1)).toEqual(["g0"]);
    expect(gpus.allocate("more", 1)).toBeNull();
  });
});
