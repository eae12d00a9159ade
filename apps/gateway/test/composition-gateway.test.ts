/**
 * Composition through the real gateway: python replicas whose handles call each other through the
 * gateway's handle ingress (`/-/handles/...`), reached by a client through `/v1/...`.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { replicaHandleEnv, runtimeEnv } from "@tessera/core";
import { usageEvents } from "@tessera/db";
import { createTestDatabase, type TestDatabase, testRedisPrefix } from "@tessera/db/testing";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pythonReplicaCommand } from "../../../packages/runtime-python/src/index.js";
import {
  openStream,
  send,
  startReplica,
  type TestReplica,
  waitFor,
} from "../../../packages/runtime-python/test/support/replica-harness.js";
import { createGateway, type Gateway } from "../src/gateway.js";
import { type TestDeployment, type TestOrg, World } from "./support/world.js";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const SECRET = "gateway-composition-secret";
const FIXTURES = join(
  import.meta.dirname,
  "..",
  "..",
  "..",
  "packages",
  "runtime-python",
  "test",
  "fixtures",
);
const PYTHON = execFileSync(process.env.TESSERA_TEST_PYTHON ?? "python3", [
  "-c",
  "import sys; print(sys.executable)",
])
  .toString()
  .trim();

let tdb: TestDatabase;
let world: World;
let gateway: Gateway;
let acme: TestOrg;
let globex: TestOrg;
let words: TestDeployment;
let front: TestReplica;
const replicas: TestReplica[] = [];
const markerDir = mkdtempSync(join(tmpdir(), "tessera-gw-composition-"));

async function pythonReplica(
  cls: string,
  dep: TestDeployment,
  handleApp: { orgSlug: string; appName: string; orgId: string; applicationId: string },
): Promise<TestReplica> {
  const replica = await startReplica(
    pythonReplicaCommand({
      python: PYTHON,
      env: {
        ...runtimeEnv({
          port: 0,
          codeDir: FIXTURES,
          entry: `composition:${cls}`,
          userConfig: { markerDir },
          deployment: dep.name,
          revision: dep.revisionId,
          replica: `${dep.name}-1`,
          application: handleApp.appName,
          maxBodyBytes: 1024 * 1024,
          exposeTracebacks: false,
          drainTimeoutS: 5,
        }),
        ...replicaHandleEnv({ gatewayUrl: gateway.url, secret: SECRET, ...handleApp }),
      },
    }),
  );
  replicas.push(replica);
  if (replica.exitCode !== undefined)
    throw new Error(`${cls} did not start:\n${replica.rawLines.join("\n")}`);
  await world.replica(dep, replica.url);
  return replica;
}

const call = (path: string, key: string, opts: Parameters<typeof send>[2] = {}) =>
  send(gateway.url, path, { ...opts, headers: { authorization: `Bearer ${key}`, ...opts.headers } });

beforeAll(async () => {
  tdb = await createTestDatabase("gwcompose");
  world = new World(tdb.db);
  gateway = await createGateway({
    db: tdb.db,
    redisUrl: REDIS_URL,
    redisPrefix: testRedisPrefix("gwcompose"),
    handleSecret: SECRET,
    usageFlushMs: 100,
    loadReportMs: 100,
    log: () => {},
  });
  acme = await world.org("acme");
  globex = await world.org("globex");
  const shop = await world.application(acme, "shop", "front");
  const frontDep = await world.deployment(acme, shop, "front", { config: { runtime: "python" } });
  words = await world.deployment(acme, shop, "words", { config: { runtime: "python" } });
  const evil = await world.application(globex, "evil", "front");
  const evilFront = await world.deployment(globex, evil, "front", { config: { runtime: "python" } });
  const acmeShop = { orgSlug: "acme", appName: "shop", orgId: acme.id, applicationId: shop };
  [front] = await Promise.all([
    pythonReplica("Front", frontDep, acmeShop),
    pythonReplica("Words", words, acmeShop),
    // globex's replica points its handles at acme's application, with a token for its own.
    pythonReplica("Front", evilFront, { ...acmeShop, orgId: globex.id, applicationId: evil }),
  ]);
  expect(await gateway.refresh()).toBe(true);
}, 60_000);

afterAll(async () => {
  await Promise.all(replicas.map((r) => r.stop()));
  await gateway?.close();
  await tdb?.drop();
  rmSync(markerDir, { recursive: true, force: true });
});

describe("composition through the gateway", () => {
  it("chains two deployments with one request id on every hop, metered as a handle call", async () => {
    const r = await call("/v1/acme/shop/chain", acme.key, {
      body: { text: "through the gateway" },
      headers: { "x-request-id": "gw-trace-1" },
    });
    expect(r.status, r.text).toBe(200);
    expect(r.headers["x-request-id"]).toBe("gw-trace-1");
    expect(r.json()).toEqual({ text: "THROUGH THE GATEWAY", requestId: "gw-trace-1" });
    await waitFor(async () => {
      const rows = await tdb.db.select().from(usageEvents).where(eq(usageEvents.deploymentId, words.id));
      return rows.some((u) => (u.meta as Record<string, unknown>)?.via === "handle" && u.status === 200);
    }, "the handle call's usage event");
  });

  it("fans out concurrently and surfaces a callee's error as 502 UPSTREAM_ERROR", async () => {
    const fan = await call("/v1/acme/shop/fanout", acme.key, { body: { a: "x", b: "y" } });
    expect(fan.json()).toMatchObject({ a: "X", b: "Y" });
    const caught = await call("/v1/acme/shop/caught", acme.key, { body: {} });
    expect(caught.json()).toMatchObject({ status: 422, code: "VALIDATION_FAILED", deployment: "words" });
    const uncaught = await call("/v1/acme/shop/uncaught", acme.key, { body: {} });
    expect(uncaught.status).toBe(502);
    expect(uncaught.json().error.code).toBe("UPSTREAM_ERROR");
  });

  it("streams through the handle and the gateway: the first token arrives before the callee finishes", async () => {
    const stream = await openStream(
      `${gateway.url}`,
      "/v1/acme/shop/relay-gated",
      { gate: "gw-gate" },
      {
        authorization: `Bearer ${acme.key}`,
      },
    );
    expect(await stream.until("data: first")).not.toContain("second");
    writeFileSync(join(markerDir, "gw-gate"), "");
    expect(await stream.end()).toContain("data: second");
  });

  it("a client hanging up on the gateway cancels the callee two hops away", async () => {
    const payload = Buffer.from(JSON.stringify({ tag: "gw-hang" }));
    const req = httpRequest(`${gateway.url}/v1/acme/shop/hang`, {
      method: "POST",
      agent: false,
      headers: {
        authorization: `Bearer ${acme.key}`,
        "content-type": "application/json",
        "content-length": String(payload.length),
      },
    });
    req.on("error", () => {});
    req.end(payload);
    await waitFor(() => existsSync(join(markerDir, "started-gw-hang")), "the callee to start");
    req.destroy();
    await waitFor(() => existsSync(join(markerDir, "cancelled-gw-hang")), "the callee to be cancelled");
    await front.waitLog(
      (l) => l.msg === "client disconnected: request cancelled",
      "the caller's cancellation",
    );
  });

  it("refuses a handle token of another organisation (403 FORBIDDEN, nothing reaches acme)", async () => {
    const r = await call("/v1/globex/evil/chain", globex.key, { body: { text: "let me in" } });
    expect(r.status).toBe(502);
    expect(r.json().error.message).toContain("403 FORBIDDEN");
  });
});
