import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { createApiHandler } from "@tessera/api";
import { deployments, revisions, usageEvents } from "@tessera/db";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestEnv, type TestEnv, type TestUser } from "../../api/test/helpers.js";
import { main } from "../src/main.js";

const examples = fileURLToPath(new URL("../../../examples/", import.meta.url));

let env: TestEnv;
let user: TestUser;
let server: Server;
let key: string;

/** The API's fetch handler behind a real HTTP port, as the console serves it. */
function serve(handler: (req: Request) => Promise<Response>): Promise<Server> {
  const s = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length ? Buffer.concat(chunks) : undefined;
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers.set(k, v);
    const r = await handler(
      new Request(`http://127.0.0.1${req.url}`, {
        method: req.method,
        headers,
        body: req.method === "GET" ? undefined : body,
      }),
    );
    res.writeHead(r.status, Object.fromEntries(r.headers));
    res.end(Buffer.from(await r.arrayBuffer()));
  });
  return new Promise((resolve) => s.listen(0, "127.0.0.1", () => resolve(s)));
}

async function run(...argv: string[]): Promise<{ code: number; out: string[] }> {
  const out: string[] = [];
  const code = await main(argv, (l) => out.push(l));
  return { code, out };
}

beforeAll(async () => {
  env = await createTestEnv("cli");
  user = await env.user("cli@example.com");
  key = (await user.api.apiKeys.create({ orgId: user.orgId, name: "cli" })).key;
  server = await serve(createApiHandler({ db: env.db, jobs: env.jobs, endpoint: "/api/trpc" }));
  process.env.TESSERA_API_URL = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  process.env.TESSERA_API_KEY = key;
  process.env.TESSERA_GATEWAY_URL = "http://gw.example:8080";
});
afterAll(async () => {
  server?.close();
  await env?.tdb.drop();
});

describe("tessera deploy", () => {
  it("bundles a handler directory with its tessera.json, creating cluster and application", async () => {
    const r = await run("deploy", `${examples}python-dataframe`, "--detach");
    expect(r.code).toBe(0);
    expect(r.out).toContain("created cluster default");
    expect(r.out).toContain("created application demo on cluster default");
    const [app] = await user.api.applications.list({ orgId: user.orgId });
    const [dep] = await user.api.deployments.list({ orgId: user.orgId, applicationId: app!.id });
    expect(dep).toMatchObject({ name: "dataframe", version: 1 });
    const [rev] = await env.db.select().from(revisions).where(eq(revisions.deploymentId, dep!.id));
    expect(Object.keys(rev!.code.files).sort()).toEqual(["README.md", "handler.py", "tessera.json"]);
    expect(rev!.config).toMatchObject({ runtime: "python", entry: "handler:Dataframe" });
    expect(env.jobs.enqueued.at(-1)?.job).toEqual({ kind: "deployRevision", revisionId: rev!.id });
  });

  it("names the current version as prevVersion, so a redeploy is the next revision", async () => {
    const r = await run("deploy", `${examples}python-dataframe`, "--detach");
    expect(r.out[0]).toMatch(/^submitted demo\/dataframe revision 2 /);
  });

  it("reports a failed rollout with its reason and exits non-zero", async () => {
    const pending = run("deploy", `${examples}python-dataframe`, "--timeout", "60");
    // What the controller records when a revision never becomes healthy.
    const deadline = Date.now() + 30_000;
    let failed = false;
    while (!failed && Date.now() < deadline) {
      const rows = await env.db
        .update(revisions)
        .set({ state: "failed", failureReason: "replica never became ready: ImportError" })
        .where(eq(revisions.version, 3))
        .returning();
      failed = rows.length > 0;
      if (!failed) await new Promise((r) => setTimeout(r, 50));
    }
    const r = await pending;
    expect(r.code).toBe(1);
    expect(r.out).toContain("revision 3 failed: replica never became ready: ImportError");
  });

  it("prints the API's field errors for a bad config", async () => {
    const err = await run("deploy", `${examples}python-dataframe`, "--detach", "--entry", "no-class").catch(
      (e: unknown) => e,
    );
    const { describeApiError } = await import("../src/client.js");
    expect(describeApiError(err)).toMatch(
      /^VALIDATION_FAILED: .*\n {2}config\.entry: entry must be 'module:Class'/s,
    );
  });

  it("refuses a directory that does not exist", async () => {
    await expect(run("deploy", `${examples}nope`, "--detach")).rejects.toThrow(/is not a directory/);
  });
});

describe("tessera deploy of a Ray Serve application", () => {
  it("deploys every Ray deployment, naming the versions it last saw on the next deploy", async () => {
    process.env.TESSERA_RAY_INSPECT_PYTHON = process.env.TESSERA_TEST_RAY_PYTHON ?? "/usr/bin/python3";
    const first = await run("deploy", `${examples}ray-serve-composition`, "--detach");
    expect(first.code).toBe(0);
    expect(first.out).toContain("created application graph on cluster default");
    expect(first.out.filter((l) => l.startsWith("submitted "))).toEqual([
      expect.stringMatching(
        /^submitted graph\/preprocessor revision 1 \(job .+\) for Ray deployment Preprocessor$/,
      ),
      expect.stringMatching(/^submitted graph\/length-model revision 1 /),
      expect.stringMatching(/^submitted graph\/count-model revision 1 /),
      expect.stringMatching(/^submitted graph\/ingress revision 1 /),
    ]);
    const again = await run("deploy", `${examples}ray-serve-composition`, "--detach");
    expect(again.out.filter((l) => l.startsWith("submitted ")).every((l) => l.includes(" revision 2 "))).toBe(
      true,
    );
  });

  it("refuses a rayServe manifest without an entry", async () => {
    const { readManifest } = await import("../src/manifest.js");
    const { mkdtempSync, writeFileSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const dir = mkdtempSync(join(tmpdir(), "cli-ray-"));
    try {
      writeFileSync(join(dir, "tessera.json"), JSON.stringify({ rayServe: { app: "x" } }));
      await expect(readManifest(dir)).rejects.toThrow(/"rayServe" must be an object with an "entry"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("tessera status and scale", () => {
  it("lists deployments and changes replicas without a redeploy", async () => {
    expect((await run("scale", "demo/dataframe", "--replicas", "3")).out).toEqual([
      "demo/dataframe: target 3 replicas",
    ]);
    const s = await run("status");
    expect(s.out[0]).toMatch(/^APPLICATION\s+DEPLOYMENT\s+VERSION\s+STATE\s+REPLICAS/m);
    expect(s.out[0]).toMatch(/demo\s+dataframe\s+\d+\s+\w+\s+0\/3/);
    await expect(run("scale", "demo/missing", "--replicas", "1")).rejects.toThrow(
      "no deployment named missing in demo",
    );
    await expect(run("scale", "demo/dataframe", "--replicas", "two")).rejects.toThrow(
      "--replicas must be a whole number",
    );
  });

  it("acts only within the key's organisation", async () => {
    const other = await env.user("other@example.com");
    const otherKey = (await other.api.apiKeys.create({ orgId: other.orgId, name: "k" })).key;
    process.env.TESSERA_API_KEY = otherKey;
    try {
      expect((await run("status")).out).toEqual([
        "no deployments yet: `tessera deploy examples/python-dataframe`",
      ]);
      await expect(run("scale", "demo/dataframe", "--replicas", "0")).rejects.toThrow(
        "no application named demo",
      );
    } finally {
      process.env.TESSERA_API_KEY = key;
    }
  });

  it("refuses a revoked key", async () => {
    const k = await user.api.apiKeys.create({ orgId: user.orgId, name: "gone" });
    await user.api.apiKeys.revoke({ orgId: user.orgId, apiKeyId: k.apiKey.id });
    process.env.TESSERA_API_KEY = k.key;
    try {
      await expect(run("status")).rejects.toThrow();
    } finally {
      process.env.TESSERA_API_KEY = key;
    }
  });
});

describe("tessera deploy of an application directory", () => {
  it("deploys every listed deployment, the first as the new application's ingress", async () => {
    const r = await run("deploy", `${examples}composition-chain`, "--detach");
    expect(r.code).toBe(0);
    expect(r.out.filter((l) => l.startsWith("submitted"))).toEqual([
      expect.stringMatching(/^submitted chain\/preprocess revision 1 /),
      expect.stringMatching(/^submitted chain\/model revision 1 /),
    ]);
    const app = (await user.api.applications.list({ orgId: user.orgId })).find((a) => a.name === "chain");
    expect(app?.ingressDeployment).toBe("preprocess");
    const again = await run("deploy", `${examples}composition-chain`, "--detach");
    expect(again.out.filter((l) => l.startsWith("submitted"))).toEqual([
      expect.stringMatching(/^submitted chain\/preprocess revision 2 /),
      expect.stringMatching(/^submitted chain\/model revision 2 /),
    ]);
  });
});

describe("tessera canary and traffic", () => {
  it("deploys a canary beside the live revision, shows and shifts the split, aborts and promotes", async () => {
    expect((await run("deploy", `${examples}ts-dataframe`, "--detach")).code).toBe(0);
    const [dep] = (await user.api.deployments.list({ orgId: user.orgId })).filter(
      (d) => d.name === "dataframe-ts",
    );
    // The controller would make the first revision live; this test has none.
    await env.db
      .update(deployments)
      .set({ liveRevisionId: dep!.desiredRevisionId, state: "ready" })
      .where(eq(deployments.id, dep!.id));

    expect((await run("canary", `${examples}ts-dataframe`, "--percent", "10")).out).toEqual([
      "canary demo-ts/dataframe-ts revision 2 gets 10% of the requests (pin one with x-tessera-revision: 2)",
    ]);
    expect((await run("traffic", "demo-ts/dataframe-ts")).out).toEqual([
      "demo-ts/dataframe-ts: revision 1 90%, canary revision 2 10%",
    ]);
    // A request the gateway metered on the live revision shows up per revision.
    await env.db.insert(usageEvents).values({
      id: "cli-traffic-1",
      orgId: user.orgId,
      deploymentId: dep!.id,
      revisionId: dep!.desiredRevisionId,
      kind: "request",
      quantity: 1,
      status: 200,
      latencyMs: 12,
      at: new Date(Date.now() + 1000),
    });
    expect((await run("traffic", "demo-ts/dataframe-ts", "--percent", "35")).out).toEqual([
      "demo-ts/dataframe-ts: revision 1 65%, canary revision 2 35%",
      "  revision 1: 1 requests, 0 errors, p50 12 ms, p95 12 ms",
    ]);
    expect((await run("traffic", "demo-ts/dataframe-ts", "--abort")).out).toEqual([
      "demo-ts/dataframe-ts: canary aborted, all requests to the live revision",
    ]);
    expect((await run("traffic", "demo-ts/dataframe-ts")).out).toEqual([
      "demo-ts/dataframe-ts: revision 1 takes all requests",
      "  revision 1: 1 requests, 0 errors, p50 12 ms, p95 12 ms",
    ]);
    await run("canary", `${examples}ts-dataframe`, "--percent", "50");
    expect((await run("traffic", "demo-ts/dataframe-ts", "--promote")).out).toEqual([
      "demo-ts/dataframe-ts: promoting revision 3 (rolling out)",
    ]);
    expect(env.jobs.enqueued.at(-1)?.job).toMatchObject({ kind: "deployRevision" });
  });

  it("refuses bad flags before calling the API", async () => {
    await expect(run("canary", `${examples}ts-dataframe`)).rejects.toThrow("give --percent");
    await expect(run("traffic", "demo-ts/dataframe-ts", "--percent", "150")).rejects.toThrow(
      "--percent must be a number from 0 to 100",
    );
    await expect(run("traffic", "demo-ts/dataframe-ts", "--promote", "--abort")).rejects.toThrow(
      "give one of",
    );
  });
});
