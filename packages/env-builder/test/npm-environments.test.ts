import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildNodeBundle, nodeReplicaCommand } from "@tessera/runtime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type EnsuredEnvironment,
  EnvironmentBuilder,
  type EnvironmentBuilderOptions,
  EnvironmentError,
} from "../src/index.js";
import { LocalNpmRegistry } from "./support/npm-registry.js";
import { probeContract, startReplica, versionsServedBy } from "./support/replica.js";

let work: string;
let registry: LocalNpmRegistry;
let builder: EnvironmentBuilder;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "tessera-env-npm-"));
  registry = new LocalNpmRegistry(work);
  await registry.start();
  registry.addPackage("tessprobe", "1.0.0");
  registry.addPackage("tessprobe", "2.0.0");
  builder = new EnvironmentBuilder(builderOptions());
});

function builderOptions(): EnvironmentBuilderOptions {
  return {
    root: join(work, "envs"),
    // The operator's registry, and a cache of this test's own so nothing outside it is reused.
    npmArgs: ["--registry", `${registry.url}/`, "--cache", join(work, "npm-cache")],
  };
}

afterAll(async () => {
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

/** What node resolves `tessprobe` to from the environment's directory, by require and by import. */
function probeIn(env: EnsuredEnvironment): { required: string; imported: string; file: string } {
  const out = execFileSync(
    env.interpreter,
    [
      "--input-type=module",
      "-e",
      `import { createRequire } from "node:module";
       const require = createRequire(process.cwd() + "/");
       const imported = (await import("tessprobe")).default.version;
       console.log(JSON.stringify({ required: require("tessprobe").version, imported, file: require.resolve("tessprobe") }));`,
    ],
    { cwd: env.location },
  );
  return JSON.parse(out.toString());
}

describe("npm environments", () => {
  let v1: EnsuredEnvironment;
  let v2: EnsuredEnvironment;

  it("installs two versions of one package into separate node_modules, each seeing only its own", async () => {
    const lines: string[] = [];
    [v1, v2] = await Promise.all([
      builder.ensure({ runtime: "node", spec: { kind: "npm", dependencies: { tessprobe: "1.0.0" } } }, (l) =>
        lines.push(l),
      ),
      builder.ensure({ runtime: "node", spec: { kind: "npm", dependencies: { tessprobe: "^2.0.0" } } }),
    ]);
    expect([v1.reused, v2.reused]).toEqual([false, false]);
    expect(v1.interpreter).toBe(process.execPath);
    expect(existsSync(join(v1.location, "node_modules", "tessprobe"))).toBe(true);
    expect(probeIn(v1)).toMatchObject({ required: "1.0.0", imported: "1.0.0" });
    expect(probeIn(v2)).toMatchObject({ required: "2.0.0", imported: "2.0.0" });
    expect(probeIn(v1).file.startsWith(v1.location)).toBe(true);
    expect(lines.some((l) => l.includes("npm install"))).toBe(true);
    expect(readFileSync(join(v1.location, "build.log"), "utf8")).toMatch(/added 1 package/);
  });

  it("a node replica started in each environment serves the version of its own environment", async () => {
    const [one, two] = await versionsServedBy(
      [v1, v2].map(async (env, n) => {
        const bundle = await buildNodeBundle({
          codeDir: join(import.meta.dirname, "fixtures", "node-probe"),
          entry: "handler.ts:Probe",
          outDir: join(work, `bundle-${n}`),
          nodeModulesDir: join(env.location, "node_modules"),
        });
        const contract = probeContract(n, bundle.dir, bundle.entry);
        return startReplica(await nodeReplicaCommand({ bundle, env: contract, node: env.interpreter }));
      }),
    );
    expect(one).toMatchObject({ version: "1.0.0" });
    expect(two).toMatchObject({ version: "2.0.0" });
    expect(one?.file.startsWith(v1.location)).toBe(true);
    expect(two?.file.startsWith(v2.location)).toBe(true);
  });

  it("reuses the environment for the same dependencies without installing again", async () => {
    const lines: string[] = [];
    const again = await builder.ensure(
      { runtime: "node", spec: { kind: "npm", dependencies: { tessprobe: " 1.0.0 " } } },
      (l) => lines.push(l),
    );
    const { buildMs: _, ...located } = v1;
    expect(again).toEqual({ ...located, reused: true });
    expect(lines).toEqual([]);
  });

  it("with one build slot, a second spec waits for the first build to finish", async () => {
    const oneAtATime = new EnvironmentBuilder({ ...builderOptions(), maxConcurrentBuilds: 1 });
    const events: string[] = [];
    const specs = { a: "~1.0.0", b: "<2" };
    await Promise.all(
      Object.entries(specs).map(([label, range]) =>
        oneAtATime.ensure(
          { runtime: "node", spec: { kind: "npm", dependencies: { tessprobe: range } } },
          (l) => events.push(`${label}: ${l}`),
        ),
      ),
    );
    const queued = events.filter((e) => e.includes("waiting for a build slot"));
    expect(queued).toHaveLength(1);
    const second = queued[0]?.slice(0, 1);
    const first = second === "a" ? "b" : "a";
    const firstDone = events.findIndex((e) => e.startsWith(`${first}: `) && /ready in/.test(e));
    const secondStarts = events.findIndex((e) => e.startsWith(`${second}: building `));
    expect(firstDone).toBeGreaterThanOrEqual(0);
    expect(secondStarts).toBeGreaterThan(firstDone);
  });

  it("rebuilds an environment whose node_modules disappeared", async () => {
    const request = {
      runtime: "node" as const,
      spec: { kind: "npm" as const, dependencies: { tessprobe: "1.0.0" } },
    };
    rmSync(join(v1.location, "node_modules"), { recursive: true });
    const rebuilt = await builder.ensure(request);
    expect(rebuilt.reused).toBe(false);
    expect(probeIn(rebuilt)).toMatchObject({ required: "1.0.0" });
  });

  it("a dependency the registry does not have fails the build with npm's reason in the log", async () => {
    const error = await builder
      .ensure({ runtime: "node", spec: { kind: "npm", dependencies: { tessprobe: "9.0.0" } } })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(EnvironmentError);
    expect((error as EnvironmentError).code).toBe("ENV_BUILD_FAILED");
    expect((error as EnvironmentError).details.reason).toMatch(/^npm install: npm exited with code 1$/);
    expect((error as EnvironmentError).details.logTail.join("\n")).toMatch(/ETARGET|No matching version/);
  });
});
