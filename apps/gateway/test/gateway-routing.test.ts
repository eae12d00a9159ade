import type { AddressInfo } from "node:net";
import { createServer } from "node:net";
import { redisKeys } from "@tessera/core";
import { usageEvents } from "@tessera/db";
import { createTestDatabase, type TestDatabase, testRedisPrefix } from "@tessera/db/testing";
import { createRedisNotifier } from "@tessera/jobs";
import { sql } from "drizzle-orm";
import { Redis } from "ioredis";
import { request as undiciRequest } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGateway, type Gateway } from "../src/gateway.js";
import { EchoReplicas, send, type TestReplica, waitFor } from "./support/echo-replicas.js";
import { type TestDeployment, type TestOrg, World } from "./support/world.js";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const quiet = () => {};

let tdb: TestDatabase;
let world: World;
let gateway: Gateway;
let redis: Redis;
const prefix = testRedisPrefix("gwroute");
const echo = new EchoReplicas();
let r1: TestReplica;
let r2: TestReplica;
let r3: TestReplica;
let acme: TestOrg;
let globex: TestOrg;
let api: TestDeployment;
let slow: TestDeployment;
let flaky: TestDeployment;
let globexApi: TestDeployment;

/** A port nothing listens on: connections to it are refused. */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

function call(path: string, key: string | undefined, opts: Parameters<typeof send>[2] = {}) {
  return send(gateway.url, path, {
    ...opts,
    headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...opts.headers },
  });
}

beforeAll(async () => {
  [tdb, r1, r2, r3] = await Promise.all([
    createTestDatabase("gwrouting"),
    echo.start("r1"),
    echo.start("r2"),
    echo.start("r3"),
  ]);
  world = new World(tdb.db);
  redis = new Redis(REDIS_URL, { disableClientInfo: true });
  acme = await world.org("acme");
  globex = await world.org("globex");
  const shop = await world.application(acme, "shop", "api");
  api = await world.deployment(acme, shop, "api", {
    config: { maxOngoingRequests: 2, maxQueuedRequests: 2, maxBodyBytes: 2048 },
  });
  await world.replica(api, r1.url);
  await world.replica(api, r2.url);
  const slowApp = await world.application(acme, "slowpoke");
  slow = await world.deployment(acme, slowApp, "slow", { config: { requestTimeoutS: 1 } });
  await world.replica(slow, r3.url);
  const flakyApp = await world.application(acme, "flaky");
  flaky = await world.deployment(acme, flakyApp, "flaky");
  await world.replica(flaky, `http://127.0.0.1:${await deadPort()}`);
  await world.replica(flaky, r3.url);
  // Same application name in another organisation.
  const globexShop = await world.application(globex, "shop");
  globexApi = await world.deployment(globex, globexShop, "api");
  await world.replica(globexApi, r3.url);

  gateway = await createGateway({
    db: tdb.db,
    redisUrl: REDIS_URL,
    redisPrefix: prefix,
    usageFlushMs: 100,
    loadReportMs: 100,
    log: quiet,
  });
});

afterAll(async () => {
  await gateway?.close();
  await echo.stopAll();
  redis?.disconnect();
  await tdb?.drop();
});

describe("authentication and tenant isolation", () => {
  it("answers 401 without a key, with a malformed key and with an unknown key", async () => {
    for (const key of [undefined, "not-a-key", "tsk_abcdefgh_ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"]) {
      const reply = await call("/v1/acme/shop/echo", key, { body: {} });
      expect(reply.status).toBe(401);
      expect(reply.json().error.code).toBe("UNAUTHENTICATED");
    }
  });

  it("forwards a valid key's request to the ingress deployment, without the caller's credential", async () => {
    const reply = await call("/v1/acme/shop/echo?x=1", acme.key, { body: { hello: "world" } });
    expect(reply.status).toBe(200);
    const body = reply.json();
    expect(body).toMatchObject({
      body: { hello: "world" },
      path: "/echo",
      query: { x: "1" },
      authorization: null,
    });
    expect(["r1", "r2"]).toContain(body.replica);
    expect(reply.headers["x-request-id"]).toBe(body.requestId);
  });

  it("never lets a key of one organisation reach another's deployments", async () => {
    const reply = await call("/v1/globex/shop/echo", acme.key, { body: {} });
    expect(reply.status).toBe(403);
    expect(reply.json().error.code).toBe("FORBIDDEN");
    const own = await call("/v1/globex/shop/whoami", globex.key);
    expect(own.status).toBe(200);
  });

  it("answers 404 for unknown applications and routes", async () => {
    const noApp = await call("/v1/acme/nothing/echo", acme.key, { body: {} });
    expect(noApp.status).toBe(404);
    expect(noApp.json().error.code).toBe("NOT_FOUND");
    const bare = await call("/v1/acme", acme.key);
    expect(bare.status).toBe(404);
    const noRoute = await call("/v1/acme/shop/missing", acme.key);
    expect(noRoute.status).toBe(404); // the replica's own NOT_FOUND, passed through
    // The runtime's own endpoints are not part of the public surface.
    const internal = await call("/v1/acme/shop/-/stats", acme.key);
    expect(internal.status).toBe(404);
    expect(internal.json().error.code).toBe("NOT_FOUND");
  });

  it("rejects a revoked key as soon as the revocation notice arrives", async () => {
    const { key, keyPrefix } = await world.apiKey(acme.id);
    expect((await call("/v1/acme/shop/whoami", key)).status).toBe(200);
    await tdb.db.execute(sql`update api_keys set revoked_at = now() where prefix = ${keyPrefix}`);
    await createRedisNotifier(redis, prefix)({ kind: "apiKeyRevoked", prefix: keyPrefix });
    // Well inside the 30 s cache TTL: only the notice can explain the 401.
    await waitFor(
      async () => (await call("/v1/acme/shop/whoami", key)).status === 401,
      "the key to be rejected",
      5_000,
    );
  });

  it("records when keys were last used, in batches", async () => {
    expect((await call("/v1/acme/shop/whoami", acme.key)).status).toBe(200);
    await gateway.keys.flushLastUsed();
    const row = await tdb.db.execute(sql`select last_used_at from api_keys where prefix = ${acme.keyPrefix}`);
    expect(row.rows[0]?.last_used_at).toBeTruthy();
  });
});

describe("router", () => {
  it("spreads requests over the replicas", async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 30 && seen.size < 2; i++)
      seen.add((await call("/v1/acme/shop/whoami", acme.key)).json().replica);
    expect(seen).toEqual(new Set(["r1", "r2"]));
  });

  it("honours maxOngoingRequests, queues up to maxQueuedRequests, then answers OVERLOADED", async () => {
    // 2 replicas x maxOngoingRequests 2 = 4 in flight, then 2 queued.
    const held = Array.from({ length: 6 }, () =>
      call("/v1/acme/shop/hold", acme.key, { body: { gate: "busy" } }),
    );
    const lane = await waitFor(() => {
      const l = gateway.router.lanes.get(api.id);
      return l && l.inFlight === 4 && l.waiters.length === 2 ? l : undefined;
    }, "4 in flight and 2 queued");
    expect(lane.replicas.map((r) => r.inFlight)).toEqual([2, 2]);
    const rejected = await call("/v1/acme/shop/hold", acme.key, { body: { gate: "busy" } });
    expect(rejected.status).toBe(503);
    expect(rejected.json().error.code).toBe("OVERLOADED");
    echo.open("busy");
    const replies = await Promise.all(held);
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
    const by = replies.map((r) => r.json().replica);
    expect(by.filter((r) => r === "r1").length).toBeGreaterThanOrEqual(2);
    expect(by.filter((r) => r === "r2").length).toBeGreaterThanOrEqual(2);
    expect(lane.inFlight).toBe(0);
  });

  it("answers TIMEOUT when the replica does not answer within requestTimeoutS", async () => {
    const reply = await call("/v1/acme/slowpoke/hold", acme.key, { body: { gate: "never-slow" } });
    expect(reply.status).toBe(504);
    expect(reply.json().error.code).toBe("TIMEOUT");
    echo.open("never-slow");
    await waitFor(() => gateway.router.lanes.get(slow.id)?.inFlight === 0, "the slot to be released");
  });

  it("sends a request to another replica when the first refuses the connection", async () => {
    for (let i = 0; i < 10; i++) {
      const reply = await call("/v1/acme/flaky/echo", acme.key, { body: { i } });
      expect(reply.status).toBe(200);
      expect(reply.json()).toMatchObject({ replica: "r3", body: { i } });
    }
    const lane = gateway.router.lanes.get(flaky.id)!;
    expect(lane.replicas.some((r) => r.avoidUntil > 0)).toBe(true);
  });

  it("passes server-sent events through as they are produced", async () => {
    const stream = await openStreamWithKey("/v1/acme/shop/events", { gate: "sse" });
    const first = await stream.until("data:");
    expect(first).toContain('"n":1');
    expect(first).not.toContain('"n":2');
    expect(stream.res.headers["content-type"]).toContain("text/event-stream");
    echo.open("sse");
    expect(await stream.end()).toContain('"n":2');
  });

  it("passes large bodies both ways intact", async () => {
    // Several MB each way: the response outruns the client socket, so the proxy pauses and resumes.
    const big = Array.from({ length: 4 * 1024 * 1024 }, (_, i) => String.fromCharCode(97 + (i % 26))).join(
      "",
    );
    const reply = await call("/v1/acme/slowpoke/echo", acme.key, {
      raw: big,
      headers: { "content-type": "text/plain" },
    });
    expect(reply.status).toBe(200);
    expect(reply.json().body).toBe(big);
  });

  it("rejects bodies above the deployment's maxBodyBytes with PAYLOAD_TOO_LARGE", async () => {
    const big = "x".repeat(4096);
    const declared = await call("/v1/acme/shop/echo", acme.key, {
      raw: big,
      headers: { "content-type": "text/plain" },
    });
    expect(declared.status).toBe(413);
    expect(declared.json().error.code).toBe("PAYLOAD_TOO_LARGE");
    const chunked = await call("/v1/acme/shop/echo", acme.key, {
      raw: big,
      chunked: 512,
      headers: { "content-type": "text/plain", "transfer-encoding": "chunked" },
    });
    expect(chunked.status).toBe(413);
    const fits = await call("/v1/acme/shop/echo", acme.key, {
      raw: "y".repeat(1000),
      // What curl sends with larger bodies; the gateway answers it itself.
      headers: { "content-type": "text/plain", expect: "100-continue" },
    });
    expect(fits.status).toBe(200);
    expect(fits.json().body).toBe("y".repeat(1000));
  });
});

describe("metering and operations", () => {
  it("records one usage event per request, in batches", async () => {
    const ids = ["usage-a", "usage-b", "usage-c"];
    for (const id of ids)
      await call("/v1/acme/shop/echo", acme.key, { body: { id }, headers: { "x-request-id": id } });
    await call("/v1/acme/shop/echo", acme.key, {
      raw: "z".repeat(4096),
      headers: { "x-request-id": "usage-413" },
    });
    const rows = await waitFor(async () => {
      const r = await tdb.db
        .select()
        .from(usageEvents)
        .where(sql`${usageEvents.meta}->>'requestId' in ('usage-a', 'usage-b', 'usage-c', 'usage-413')`);
      return r.length === 4 ? r : undefined;
    }, "4 usage events");
    for (const row of rows) {
      expect(row).toMatchObject({
        orgId: acme.id,
        deploymentId: api.id,
        revisionId: api.revisionId,
        kind: "request",
      });
      expect(row.latencyMs).toBeGreaterThan(0);
    }
    const ok = rows.find((r) => r.meta?.requestId === "usage-a")!;
    expect(ok.status).toBe(200);
    expect(ok.bytesIn).toBe(JSON.stringify({ id: "usage-a" }).length);
    expect(ok.bytesOut).toBeGreaterThan(0);
    expect(rows.find((r) => r.meta?.requestId === "usage-413")!.status).toBe(413);
  });

  it("flushes buffered usage events on close", async () => {
    const second = await createGateway({
      db: tdb.db,
      redisUrl: REDIS_URL,
      redisPrefix: prefix,
      usageFlushMs: 3_600_000,
      log: quiet,
    });
    for (const id of ["close-1", "close-2"])
      await send(second.url, "/v1/acme/shop/whoami", {
        headers: { authorization: `Bearer ${acme.key}`, "x-request-id": id },
      });
    const count = async () =>
      (
        await tdb.db
          .select()
          .from(usageEvents)
          .where(sql`${usageEvents.meta}->>'requestId' in ('close-1', 'close-2')`)
      ).length;
    expect(await count()).toBe(0);
    expect(second.usage.buffered).toBe(2);
    await second.close();
    expect(await count()).toBe(2);
  });

  it("serves /healthz and /metrics (behind the metrics token when set)", async () => {
    expect((await call("/v1/acme/shop/whoami", acme.key)).status).toBe(200);
    expect((await call("/v1/acme/shop/whoami", undefined)).status).toBe(401);
    const health = await send(gateway.url, "/healthz");
    expect(health.status).toBe(200);
    expect(health.json()).toMatchObject({ ok: true, routingError: null });
    const metrics = await send(gateway.url, "/metrics");
    expect(metrics.status).toBe(200);
    expect(metrics.text).toContain(`tessera_gateway_requests_total{deployment="${api.id}",status="200"}`);
    expect(metrics.text).toContain("tessera_gateway_request_duration_seconds_bucket");
    expect(metrics.text).toContain('tessera_gateway_requests_total{deployment="none",status="401"}');
    expect(metrics.text).toContain(`tessera_gateway_replica_in_flight_requests{deployment="${api.id}"`);

    const guarded = await createGateway({
      db: tdb.db,
      redisUrl: REDIS_URL,
      redisPrefix: prefix,
      metricsToken: "s3cret",
      log: quiet,
    });
    try {
      expect((await send(guarded.url, "/metrics")).status).toBe(401);
      expect(
        (await send(guarded.url, "/metrics", { headers: { authorization: "Bearer s3cret" } })).status,
      ).toBe(200);
    } finally {
      await guarded.close();
    }
  });

  it("reports ongoing requests per deployment in the autoscaler's format", async () => {
    const held = call("/v1/acme/shop/hold", acme.key, { body: { gate: "report" } });
    const key = redisKeys(prefix).ongoing(api.id);
    await waitFor(async () => {
      const members = await redis.zrange(key, 0, -1);
      return members.some((m) => m.startsWith(`${gateway.id}:`) && m.endsWith(":1"));
    }, "a sample with 1 ongoing request");
    echo.open("report");
    expect((await held).status).toBe(200);
    // Once drained, a 0 is reported so the autoscaler's window sees the drop.
    await waitFor(async () => (await redis.zrange(key, -1, -1))[0]?.endsWith(":0"), "a 0 sample");
  });

  it("reports a request shorter than the report interval (the interval's peak, not a snapshot)", async () => {
    const key = redisKeys(prefix).ongoing(globexApi.id);
    for (let i = 0; i < 3; i++) expect((await call("/v1/globex/shop/whoami", globex.key)).status).toBe(200);
    const samples = await waitFor(async () => {
      const members = await redis.zrange(key, 0, -1);
      return members.some((m) => m.endsWith(":1")) ? members : undefined;
    }, "a sample counting the short request");
    expect(samples.every((m) => m.startsWith(`${gateway.id}:`))).toBe(true);
  });
});

async function openStreamWithKey(path: string, body: unknown) {
  // openStream sends no credentials; go through undici to add the header while keeping streaming.
  const {
    statusCode,
    body: stream,
    headers,
  } = await undiciRequest(`${gateway.url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${acme.key}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  expect(statusCode).toBe(200);
  let buffered = "";
  let ended = false;
  stream.setEncoding("utf8");
  stream.on("data", (c: string) => {
    buffered += c;
  });
  stream.on("end", () => {
    ended = true;
  });
  return {
    res: { headers },
    until: (needle: string) =>
      waitFor(() => (buffered.includes(needle) ? buffered : undefined), `stream to contain ${needle}`),
    end: () => waitFor(() => (ended ? buffered : undefined), "stream to end"),
  };
}
