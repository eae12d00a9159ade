import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { EnvironmentSpec } from "@tessera/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  builderOptionsFromEnv,
  EnvironmentBuilder,
  type EnvironmentBuilderOptions,
  EnvironmentError,
  type EnvironmentRequest,
  splitArguments,
} from "../src/index.js";
import { checkNpmDependency } from "../src/npm.js";
import { buildEnvironmentVariables } from "../src/run-command.js";

const PROBE =
  "import json, sys; print(json.dumps([sys.executable, sys.prefix, '%d.%d' % sys.version_info[:2]]))";
const [PYTHON, PYTHON_PREFIX, PYTHON_MINOR] = JSON.parse(
  execFileSync(process.env.TESSERA_TEST_PYTHON ?? "python3", ["-c", PROBE]).toString(),
) as [string, string, string];

let root: string;
let builder: EnvironmentBuilder;
const baseOptions = (): EnvironmentBuilderOptions => ({ root, python: PYTHON, micromamba: false });

let hangingIndex: Server;
const hangingSockets = new Set<Socket>();

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "tessera-env-unit-"));
  builder = new EnvironmentBuilder(baseOptions());
  hangingIndex = createServer((socket) => {
    hangingSockets.add(socket);
    socket.on("close", () => hangingSockets.delete(socket));
  });
  await new Promise<void>((ready) => hangingIndex.listen(0, "127.0.0.1", ready));
});
afterAll(async () => {
  for (const socket of hangingSockets) socket.destroy();
  await new Promise((done) => hangingIndex.close(done));
  rmSync(root, { recursive: true, force: true });
});

async function failureOf(promise: Promise<unknown>): Promise<EnvironmentError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(error instanceof EnvironmentError))
    throw new Error(`expected an EnvironmentError, got ${String(error)}`);
  return error;
}

async function waitFor(condition: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** pip arguments naming an index that accepts connections and never answers: pip waits. */
function hangingIndexArgs(): string[] {
  const address = hangingIndex.address() as AddressInfo;
  return ["--index-url", `http://127.0.0.1:${address.port}/simple`, "--timeout", "120"];
}

/** Pids of live processes whose command line contains `text` (an environment's hash). */
function processesMentioning(text: string): number[] {
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(text);
      } catch {
        return false;
      }
    })
    .map(Number);
}

const pip = (...requirements: string[]): EnvironmentRequest => ({
  runtime: "python",
  spec: { kind: "pip", requirements },
});

describe("environment identity", () => {
  it("is the hash of the normalised spec: order, whitespace and duplicates do not matter", () => {
    expect(builder.hashOf(pip("b==1", "a==2"))).toBe(builder.hashOf(pip(" a==2", "b==1", "a==2")));
    const conda = (deps: EnvironmentSpec & { kind: "conda" }) =>
      builder.hashOf({ runtime: "python", spec: deps });
    expect(
      conda({ kind: "conda", channels: ["conda-forge"], dependencies: ["python=3.11", { pip: ["y", "x"] }] }),
    ).toBe(
      conda({ kind: "conda", channels: ["conda-forge"], dependencies: [{ pip: ["x", "y"] }, "python=3.11"] }),
    );
    const npm = (dependencies: Record<string, string>) =>
      builder.hashOf({ runtime: "node", spec: { kind: "npm", dependencies } });
    expect(npm({ a: "1", b: "2" })).toBe(npm({ b: "2", a: "1" }));
  });

  it("changes with any version, the runtime or the kind", () => {
    const hashes = new Set([
      builder.hashOf(pip("a==1")),
      builder.hashOf(pip("a==2")),
      builder.hashOf({ runtime: "node", spec: { kind: "pip", requirements: ["a==1"] } }),
      builder.hashOf({
        runtime: "python",
        spec: { kind: "conda", channels: [], dependencies: [{ pip: ["a==1"] }] },
      }),
    ]);
    expect(hashes.size).toBe(4);
    expect(builder.hashOf(pip("a==1"))).toMatch(/^[0-9a-f]{32}$/);
  });
});

describe("no spec: the runtime's base interpreter", () => {
  it("python: the base interpreter itself, nothing built", async () => {
    const lines: string[] = [];
    for (const spec of [
      undefined,
      null,
      { kind: "none" as const },
      { kind: "pip" as const, requirements: [] },
    ]) {
      const env = await builder.ensure({ runtime: "python", spec }, (l) => lines.push(l));
      expect(env).toMatchObject({
        runtime: "python",
        location: PYTHON_PREFIX,
        interpreter: PYTHON,
        reused: true,
      });
    }
    expect(lines).toEqual([]);
    expect(readdirSync(root)).toEqual([]);
  });

  it("node without a spec: this node, nothing built", async () => {
    const env = await builder.ensure({ runtime: "node" });
    expect(env).toMatchObject({ runtime: "node", interpreter: process.execPath, reused: true });
  });

  it("node with an npm spec without dependencies: an environment with an empty node_modules, npm not run", async () => {
    const lines: string[] = [];
    const empty = await builder.ensure({ runtime: "node", spec: { kind: "npm", dependencies: {} } }, (l) =>
      lines.push(l),
    );
    expect(empty).toMatchObject({ location: join(root, empty.hash), interpreter: process.execPath });
    expect(readdirSync(join(empty.location, "node_modules"))).toEqual([".empty"]);
    expect(lines.some((l) => l.startsWith("$ "))).toBe(false);
    expect((await builder.ensure({ runtime: "node", spec: { kind: "npm", dependencies: {} } })).reused).toBe(
      true,
    );
  });
});

describe("what a cluster cannot build: ENV_UNSUPPORTED, before touching disk", () => {
  it("conda packages other than python and pip when there is no conda/micromamba, naming them", async () => {
    const request: EnvironmentRequest = {
      runtime: "python",
      spec: {
        kind: "conda",
        channels: ["conda-forge"],
        dependencies: ["python", "numpy=1.26", "pip", { pip: ["x"] }],
      },
    };
    const error = await failureOf(builder.ensure(request));
    expect(error.code).toBe("ENV_UNSUPPORTED");
    expect(error.message).toMatch(/no conda or micromamba.*numpy=1\.26/);
    expect(error.message).not.toMatch(/pip,|python,/);
    expect(error.httpStatus).toBe(422);
    expect(existsSync(join(root, builder.hashOf(request)))).toBe(false);
  });

  it("a python version the cluster does not have", async () => {
    const conda = await failureOf(
      builder.ensure({
        runtime: "python",
        spec: { kind: "conda", channels: [], dependencies: ["python=2.7"] },
      }),
    );
    expect(conda.code).toBe("ENV_UNSUPPORTED");
    expect(conda.message).toContain("'python=2.7' is not available");
    const pinned = await failureOf(
      builder.ensure({ runtime: "python", spec: { kind: "pip", requirements: ["x"], python: "3.99" } }),
    );
    expect(pinned.code).toBe("ENV_UNSUPPORTED");
    expect(pinned.message).toContain("no python3.99 on PATH");
  });

  it("the matching python version (or a range it satisfies) is accepted", async () => {
    for (const dependency of [
      "python",
      `python=${PYTHON_MINOR}`,
      `python ${PYTHON_MINOR}.*`,
      "python>=3.8",
    ]) {
      const env = await builder.ensure({
        runtime: "python",
        spec: { kind: "conda", channels: [], dependencies: [dependency] },
      });
      expect(env.interpreter).toBe(PYTHON);
    }
  });

  it("a spec of the other runtime's kind", async () => {
    expect(
      (
        await failureOf(
          builder.ensure({ runtime: "python", spec: { kind: "npm", dependencies: { a: "1" } } }),
        )
      ).code,
    ).toBe("ENV_UNSUPPORTED");
    expect(
      (await failureOf(builder.ensure({ runtime: "node", spec: { kind: "pip", requirements: ["a"] } }))).code,
    ).toBe("ENV_UNSUPPORTED");
  });

  it("no python interpreter at all", async () => {
    const none = new EnvironmentBuilder({ ...baseOptions(), python: join(root, "no-such-python") });
    const error = await failureOf(none.ensure(pip("a==1")));
    expect(error.code).toBe("ENV_UNSUPPORTED");
    expect(error.message).toContain("does not run");
  });
});

describe("what a tenant may not ask for: VALIDATION_FAILED", () => {
  it.each([
    ["-r /etc/passwd"],
    ["--index-url=http://evil.example/simple"],
    ["./other-tenant/code"],
    ["/srv/tessera/clusters/other/pkg"],
    ["pkg @ file:///srv/other"],
    ["~/x"],
  ])("pip requirement %s", async (requirement) => {
    const error = await failureOf(builder.ensure(pip(requirement)));
    expect(error.code).toBe("VALIDATION_FAILED");
    expect(error.message).toContain(requirement);
  });

  it.each([["file:../other"], ["link:/srv/x"], ["/abs/path"], ["../up"], ["--foo"]])(
    "npm dependency %s",
    async (spec) => {
      const error = await failureOf(
        builder.ensure({ runtime: "node", spec: { kind: "npm", dependencies: { a: spec } } }),
      );
      expect(error.code).toBe("VALIDATION_FAILED");
    },
  );

  it("accepts npm versions, ranges, tags and aliases", () => {
    for (const spec of ["1.0.0", "~1.0.0", "^2", ">=1 <2", "1.x || 2.x", "latest", "npm:other@1"])
      expect(() => checkNpmDependency("a", spec)).not.toThrow();
    expect(() => checkNpmDependency("a", "~/x")).toThrow(/not allowed/);
  });

  it("a malformed spec or runtime", async () => {
    const before = readdirSync(root);
    const bogus = { runtime: "python", spec: { kind: "bogus" } } as unknown as EnvironmentRequest;
    expect((await failureOf(builder.ensure(bogus))).code).toBe("VALIDATION_FAILED");
    expect((await failureOf(builder.ensure({ runtime: "ruby" } as unknown as EnvironmentRequest))).code).toBe(
      "VALIDATION_FAILED",
    );
    expect(readdirSync(root)).toEqual(before);
  });

  it("accepts names, extras, version specifiers and https URLs", () => {
    for (const requirement of [
      "requests",
      "requests[socks, security] >=2.0,<3",
      "Flask~=3.0",
      "x @ https://h/x-1.whl",
    ])
      expect(() => builder.hashOf(pip(requirement))).not.toThrow();
  });
});

describe("builds", () => {
  it("uses conda/micromamba when configured: the command is in the log, a missing tool fails the build", async () => {
    const tool = join(root, "bin", "micromamba");
    const conda = new EnvironmentBuilder({ ...baseOptions(), micromamba: tool });
    const spec: EnvironmentSpec = {
      kind: "conda",
      channels: ["conda-forge"],
      dependencies: ["python=3.11", "numpy=1.26", { pip: ["x==1"] }],
    };
    const error = await failureOf(conda.ensure({ runtime: "python", spec }));
    expect(error.code).toBe("ENV_BUILD_FAILED");
    expect(error.details.reason).toContain(`could not start ${tool}`);
    const hash = conda.hashOf({ runtime: "python", spec });
    const prefix = join(root, hash, "prefix");
    expect(readFileSync(error.details.logFile ?? "", "utf8")).toContain(
      `$ ${tool} create --yes --prefix ${prefix} -c conda-forge --root-prefix ${join(root, ".micromamba")} numpy=1.26 python=3.11 pip`,
    );
  });

  it("a build running past its timeout is killed with everything it started, and fails with a reason", async () => {
    const slow = new EnvironmentBuilder({
      ...baseOptions(),
      pipArgs: hangingIndexArgs(),
      buildTimeoutMs: 4000,
    });
    const request = pip("never-installed==1");
    const error = await failureOf(slow.ensure(request));
    expect(error.code).toBe("ENV_BUILD_FAILED");
    // pip waits on the index for ever; on a very loaded machine the venv step may be the one cut short.
    expect(error.details.reason).toMatch(/^(create the venv|pip install): timed out$/);
    const hash = slow.hashOf(request);
    expect(await slow.status(hash)).toMatchObject({ state: "failed", reason: error.details.reason });
    expect(existsSync(join(root, hash, "ready.json"))).toBe(false);
    await waitFor(() => processesMentioning(hash).length === 0);
  });

  it("closing the builder kills a running build, which fails as cancelled", async () => {
    const closing = new EnvironmentBuilder({ ...baseOptions(), pipArgs: hangingIndexArgs() });
    const lines: string[] = [];
    const request = pip("cancelled-build==1");
    const building = failureOf(closing.ensure(request, (l) => lines.push(l)));
    await waitFor(() => lines.some((l) => / -m pip .*install /.test(l)));
    await closing.close();
    const error = await building;
    expect(error.code).toBe("ENV_BUILD_FAILED");
    expect(error.details.reason).toBe("pip install: cancelled");
    await waitFor(() => processesMentioning(closing.hashOf(request)).length === 0);
    const again = await failureOf(closing.ensure(pip("cancelled-build==2")));
    expect(again.details.reason).toBe("create the venv: cancelled");
  });

  it("status of an environment never asked for is absent", async () => {
    expect(await builder.status(builder.hashOf(pip("never-asked==1")))).toEqual({ state: "absent" });
    await expect(builder.status("../../etc")).rejects.toMatchObject({ code: "VALIDATION_FAILED" });
  });
});

describe("configuration", () => {
  it("reads the builder's options from TESSERA_* variables", () => {
    const options = builderOptionsFromEnv({
      TESSERA_DATA_DIR: "/var/lib/tessera",
      TESSERA_PYTHON: "/opt/py/bin/python3",
      TESSERA_PIP_ARGS: "--index-url https://pypi.internal/simple --find-links '/srv/wheels dir'",
      TESSERA_PIP_SYSTEM_SITE_PACKAGES: "true",
      TESSERA_MICROMAMBA: "none",
      TESSERA_NPM_ARGS: '--registry "https://npm.internal/"',
    });
    expect(options).toMatchObject({
      root: "/var/lib/tessera/envs",
      python: "/opt/py/bin/python3",
      pipArgs: ["--index-url", "https://pypi.internal/simple", "--find-links", "/srv/wheels dir"],
      systemSitePackages: true,
      micromamba: false,
      npmArgs: ["--registry", "https://npm.internal/"],
    });
    expect(builderOptionsFromEnv({})).toMatchObject({
      root: ".tessera/envs",
      pipArgs: [],
      micromamba: undefined,
    });
    expect(splitArguments("  a  '' \"b c\"d ")).toEqual(["a", "", "b cd"]);
  });

  it("builds see no platform secrets, only tool locations, proxies and installer settings", () => {
    const env = buildEnvironmentVariables({
      PATH: "/usr/bin",
      HOME: "/home/t",
      DATABASE_URL: "postgres://secret",
      REDIS_URL: "redis://secret",
      NEXTAUTH_SECRET: "s",
      STRIPE_SECRET_KEY: "sk",
      PYTHONPATH: "/srv/platform",
      PIP_INDEX_URL: "https://pypi.internal/simple",
      npm_config_registry: "https://npm.internal/",
      HTTPS_PROXY: "http://proxy:3128",
    });
    expect(Object.keys(env).sort()).toEqual(
      [
        "HOME",
        "HTTPS_PROXY",
        "PATH",
        "PIP_INDEX_URL",
        "PIP_NO_INPUT",
        "PYTHONDONTWRITEBYTECODE",
        "npm_config_registry",
      ].sort(),
    );
  });
});
