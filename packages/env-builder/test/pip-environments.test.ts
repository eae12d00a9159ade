import { type ChildProcessWithoutNullStreams, execFileSync, spawn } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pythonReplicaCommand } from "@tessera/runtime-python";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type EnsuredEnvironment,
  EnvironmentBuilder,
  type EnvironmentBuilderOptions,
  EnvironmentError,
} from "../src/index.js";
import { canInstallIntoOtherPython, probePython } from "../src/python.js";
import { probeContract, startReplica, versionsServedBy } from "./support/replica.js";
import { makeWheel } from "./support/wheels.js";

// The real interpreter, not a version-manager shim.
const PYTHON = execFileSync(process.env.TESSERA_TEST_PYTHON ?? "python3", [
  "-c",
  "import sys; print(sys.executable)",
])
  .toString()
  .trim();

let work: string;
let options: EnvironmentBuilderOptions;
let builder: EnvironmentBuilder;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "tessera-env-pip-"));
  const wheels = join(work, "wheels");
  mkdirSync(wheels);
  makeWheel(PYTHON, wheels, "tessprobe", "1.0");
  makeWheel(PYTHON, wheels, "tessprobe", "2.0");
  // No PyPI here: the operator's pip arguments point at the local wheels only.
  options = {
    root: join(work, "envs"),
    python: PYTHON,
    pipArgs: ["--no-index", "--find-links", wheels],
    micromamba: false,
  };
  builder = new EnvironmentBuilder(options);
});

afterAll(() => rmSync(work, { recursive: true, force: true }));

/** What the environment's own python imports: `VERSION` of the module, the installed dist's version, where from. */
function probeIn(env: { interpreter: string }): { module: string; dist: string; file: string } {
  const out = execFileSync(env.interpreter, [
    "-c",
    "import json, importlib.metadata as m, tessprobe; print(json.dumps({'module': tessprobe.VERSION, 'dist': m.version('tessprobe'), 'file': tessprobe.__file__}))",
  ]);
  return JSON.parse(out.toString());
}

describe("pip environments", () => {
  let v1: EnsuredEnvironment;
  let v2: EnsuredEnvironment;
  const v1Log: string[] = [];

  it("builds two environments pinning conflicting versions of one package, each seeing only its own", async () => {
    [v1, v2] = await Promise.all([
      builder.ensure({ runtime: "python", spec: { kind: "pip", requirements: ["tessprobe==1.0"] } }, (l) =>
        v1Log.push(l),
      ),
      builder.ensure({ runtime: "python", spec: { kind: "pip", requirements: ["tessprobe==2.0"] } }),
    ]);
    expect(v1.reused).toBe(false);
    expect(v2.reused).toBe(false);
    expect(v1.hash).not.toBe(v2.hash);
    expect(v1.interpreter).toBe(join(v1.location, "bin", "python"));

    const seen1 = probeIn(v1);
    const seen2 = probeIn(v2);
    expect(seen1).toMatchObject({ module: "1.0", dist: "1.0" });
    expect(seen2).toMatchObject({ module: "2.0", dist: "2.0" });
    expect(seen1.file.startsWith(v1.location)).toBe(true);
    expect(seen2.file.startsWith(v2.location)).toBe(true);
    // Nothing was installed into the interpreter the venvs were made from.
    expect(() => execFileSync(PYTHON, ["-c", "import tessprobe"], { stdio: "pipe" })).toThrow(
      /No module named/,
    );
  });

  it("a python replica started in each environment serves the version of its own environment", async () => {
    const codeDir = join(import.meta.dirname, "fixtures", "python-probe");
    const [one, two] = await versionsServedBy(
      [v1, v2].map((env, n) =>
        startReplica(
          pythonReplicaCommand({ python: env.interpreter, env: probeContract(n, codeDir, "probe:Probe") }),
        ),
      ),
    );
    expect(one).toMatchObject({ version: "1.0" });
    expect(two).toMatchObject({ version: "2.0" });
    expect(one?.file.startsWith(v1.location)).toBe(true);
    expect(two?.file.startsWith(v2.location)).toBe(true);
  });

  it("streamed the build log line by line while it ran, and kept it in the environment's directory", () => {
    expect(v1Log[0]).toMatch(/^building python environment [0-9a-f]{32}/);
    expect(v1Log.some((l) => l.includes("-m venv"))).toBe(true);
    expect(v1Log.some((l) => /Successfully installed tessprobe-1\.0/.test(l))).toBe(true);
    expect(v1Log.at(-1)).toMatch(/ready in/);
    const file = readFileSync(join(options.root, v1.hash, "build.log"), "utf8");
    expect(file.trimEnd().split("\n")).toEqual(v1Log);
  });

  it("reuses a built environment for an equal spec written differently, without building", async () => {
    const readyBefore = statSync(join(options.root, v1.hash, "ready.json")).mtimeMs;
    const lines: string[] = [];
    // Another builder object (as after a restart) sharing the root.
    const again = await new EnvironmentBuilder(options).ensure(
      { runtime: "python", spec: { kind: "pip", requirements: [" tessprobe==1.0", "tessprobe==1.0"] } },
      (l) => lines.push(l),
    );
    const { buildMs, ...located } = v1;
    expect(buildMs).toBeGreaterThan(0);
    expect(again).toEqual({ ...located, reused: true });
    expect(lines).toEqual([]);
    expect(statSync(join(options.root, v1.hash, "ready.json")).mtimeMs).toBe(readyBefore);
    expect(await builder.status(v1.hash)).toMatchObject({ state: "ready", location: v1.location });
  });

  it("a failed build keeps its log and a short reason; the error carries the log tail", async () => {
    const request = {
      runtime: "python" as const,
      spec: { kind: "pip" as const, requirements: ["tessprobe==9.9"] },
    };
    const error = await builder.ensure(request).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(EnvironmentError);
    const failure = error as EnvironmentError;
    expect(failure.code).toBe("ENV_BUILD_FAILED");
    expect(failure.details.reason).toMatch(/^pip install: .* exited with code 1$/);
    expect(failure.details.logTail.join("\n")).toMatch(/No matching distribution found for tessprobe==9\.9/);
    const hash = builder.hashOf(request);
    expect(failure.details.logFile).toBe(join(options.root, hash, "build.log"));
    expect(readFileSync(failure.details.logFile ?? "", "utf8")).toMatch(/No matching distribution/);
    expect(await builder.status(hash)).toMatchObject({ state: "failed", reason: failure.details.reason });
    expect(existsSync(join(options.root, hash, "ready.json"))).toBe(false);
  });

  it("builds a conda spec needing only python and pip packages as a venv when there is no conda", async () => {
    const version = execFileSync(PYTHON, ["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
      .toString()
      .trim();
    const spec = {
      kind: "conda" as const,
      channels: ["conda-forge"],
      dependencies: [`python=${version}`, "pip", { pip: ["tessprobe==2.0"] }],
    };
    const dir = join(options.root, builder.hashOf({ runtime: "python", spec }));
    // A builder that died mid-build left its lock (not refreshed for a minute) and half a venv behind.
    mkdirSync(join(dir, ".lock"), { recursive: true });
    mkdirSync(join(dir, "prefix", "bin"), { recursive: true });
    writeFileSync(join(dir, "prefix", "bin", "leftover"), "");
    const minuteAgo = new Date(Date.now() - 60_000);
    utimesSync(join(dir, ".lock"), minuteAgo, minuteAgo);

    const lines: string[] = [];
    const env = await builder.ensure({ runtime: "python", spec }, (l) => lines.push(l));
    expect(env.reused).toBe(false);
    expect(lines).toContain(
      "no conda/micromamba on this cluster: python + pip dependencies are built as a venv",
    );
    expect(probeIn(env)).toMatchObject({ module: "2.0", dist: "2.0" });
    expect(existsSync(join(dir, "prefix", "bin", "leftover"))).toBe(false);
  });

  it("venvs have no pip of their own, unless the base interpreter's pip cannot install into them", async () => {
    const base = await probePython(PYTHON);
    expect(existsSync(join(v1.location, "bin", "pip"))).toBe(!(base && canInstallIntoOtherPython(base)));
    // A base interpreter without pip (a venv made --without-pip stands in for one).
    const pipless = join(work, "pipless");
    execFileSync(PYTHON, ["-m", "venv", "--without-pip", pipless]);
    const fallback = new EnvironmentBuilder({ ...options, python: join(pipless, "bin", "python") });
    const lines: string[] = [];
    const env = await fallback.ensure(
      { runtime: "python", spec: { kind: "pip", requirements: ["tessprobe<2"] } },
      (l) => lines.push(l),
    );
    expect(lines.some((l) => l.includes("pip from ensurepip"))).toBe(true);
    expect(existsSync(join(env.location, "bin", "pip"))).toBe(true);
    expect(probeIn(env)).toMatchObject({ module: "1.0" });
  });

  it("systemSitePackages: the venv also sees the base interpreter's packages", async () => {
    const sitePackagesOf = (python: string) =>
      execFileSync(python, ["-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
        .toString()
        .trim();
    const pathOf = (python: string) =>
      JSON.parse(
        execFileSync(python, ["-c", "import json, sys; print(json.dumps(sys.path))"]).toString(),
      ) as string[];
    const baseSite = sitePackagesOf(PYTHON);
    const shared = await new EnvironmentBuilder({
      ...options,
      root: join(work, "envs-system-site"),
      systemSitePackages: true,
    }).ensure({ runtime: "python", spec: { kind: "pip", requirements: ["tessprobe==1.0"] } });
    expect(pathOf(shared.interpreter)).toContain(baseSite);
    expect(pathOf(v1.interpreter)).not.toContain(baseSite);
    expect(probeIn(shared)).toMatchObject({ module: "1.0" });
  });

  it("concurrent ensures of one spec, in this process and in two others, build it once", async () => {
    const request = {
      runtime: "python" as const,
      spec: { kind: "pip" as const, requirements: ["tessprobe>=2.0"] },
    };
    const children = [startContender(request), startContender(request)];
    await Promise.all(children.map((c) => c.armed));
    for (const child of children) child.process.stdin.write("go\n");
    const inProcessLines: string[] = [];
    const results = await Promise.all([
      builder.ensure(request, (l) => inProcessLines.push(l)),
      builder.ensure(request),
      ...children.map((c) => c.result),
    ]);
    expect(results.map((r) => r.location)).toEqual(Array(4).fill(results[0]?.location));
    expect(results.filter((r) => !r.reused)).toHaveLength(1);
    // Whoever built it, this process's first caller saw its log (its own build or the followed file).
    expect(inProcessLines.some((l) => l.includes("Successfully installed tessprobe-2.0"))).toBe(true);
    expect(inProcessLines.at(-1)).toMatch(/ready in/);
    expect(probeIn(results[0] as EnsuredEnvironment)).toMatchObject({ module: "2.0" });
  });
});

interface Contender {
  process: ChildProcessWithoutNullStreams;
  armed: Promise<void>;
  result: Promise<EnsuredEnvironment>;
}

function startContender(request: unknown): Contender {
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      join(import.meta.dirname, "support", "ensure-child.ts"),
      JSON.stringify(options),
      JSON.stringify(request),
    ],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  let stdout = "";
  let stderr = "";
  child.stderr.on("data", (chunk) => {
    stderr += chunk;
  });
  let onArmed: () => void = () => undefined;
  const armed = new Promise<void>((resolve) => {
    onArmed = resolve;
  });
  const result = new Promise<EnsuredEnvironment>((resolve, reject) => {
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
      if (stdout.startsWith("armed\n")) onArmed();
    });
    child.on("exit", (code) => {
      const last = stdout.trim().split("\n").at(-1) ?? "";
      try {
        const parsed = JSON.parse(last);
        if (parsed.error) reject(new Error(`contender failed: ${parsed.error}`));
        else resolve(parsed);
      } catch {
        reject(new Error(`contender exited ${code}: ${stdout}${stderr}`));
      }
    });
  });
  // A contender that dies before arming must fail the test, not hang it.
  result.catch(() => onArmed());
  return { process: child, armed, result };
}
