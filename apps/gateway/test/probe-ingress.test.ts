/**
 * The uptime prober's ingress (`/-/probe/{org}/{app}/{deployment}`) on a real gateway with a real
 * node-runtime replica: token scopes, routing to the readiness route, no wake-ups, no metering.
 */
import type { AddressInfo } from "node:net";
import { createServer } from "node:net";
import { mintHandleToken, mintProbeToken, redisKeys } from "@tessera/core";
import { usageEvents } from "@tessera/db";
import { createTestDatabase, type TestDatabase, testRedisPrefix } from "@tessera/db/testing";
import { sql } from "drizzle-orm";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGateway, type Gateway } from "../src/gateway.js";
import { EchoReplicas, send, type TestReplica, waitFor } from "./support/echo-replicas.js";
import { type TestDeployment, type TestOrg, World } from "./support/world.js";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const SECRET = "gateway-probe-secret";
const PROBE_TOKEN = mintProbeToken(SECRET);
const quiet = () => {};

let tdb: TestDatabase;
let world: World;
let gateway: Gateway;
const prefix = testRedisPrefix("gwprobe");
const echo = new EchoReplicas();
let replica: TestReplica;
let acme: TestOrg;
let shopId: string;
let api: TestDeployment;
let sleepy: TestDeployment;
let marker: TestDeployment;
let refused: TestDeployment;
let solo: TestDeployment;

function get(path: string, token?: string, headers: Record<string, string> = {}) {
  return send(gateway.url, path, {
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
  });
}

async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

beforeAll(async () => {
  [tdb, replica] = await Promise.all([createTestDatabase("gwprobe"), echo.start("p1")]);
  world = new World(tdb.db);
  acme = await world.org("acme");
  shopId = await world.application(acme, "shop", "api");
  api = await world.deployment(acme, shopId, "api");
  await world.replica(api, replica.url);
  // Scaled to zero: live revision, no replica. A request would wake it; a probe must not.
  const lazyApp = await world.application(acme, "lazy", "sleepy");
  sleepy = await world.deployment(acme, lazyApp, "sleepy", { targetReplicas: 0 });
  const markerApp = await world.application(acme, "marker", "marker");
  marker = await world.deployment(acme, markerApp, "marker", { targetReplicas: 0 });
  const soloApp = await world.application(acme, "solo", "solo");
  solo = await world.deployment(acme, soloApp, "solo", {
    config: { maxOngoingRequests: 1, maxQueuedRequests: 5 },
  });
  await world.replica(solo, replica.url);
  const brokenApp = await world.application(acme, "broken");
  refused = await world.deployment(acme, brokenApp, "refused");
  await world.replica(refused, `http://127.0.0.1:${await deadPort()}`);
  gateway = await createGateway({
    db: tdb.db,
    redisUrl: REDIS_URL,
    redisPrefix: prefix,
    handleSecret: SECRET,
    usageFlushMs: 100,
    coldStartTimeoutS: 30,
    log: quiet,
  });
});

afterAll(async () => {
  await gateway?.close();
  await echo.stopAll();
  await tdb?.drop();
});

describe("probe ingress", () => {
  it("routes a probe to the deployment's readiness route", async () => {
    const reply = await get("/-/probe/acme/shop/api", PROBE_TOKEN);
    expect(reply.status).toBe(200);
    expect(reply.json()).toMatchObject({ ready: true });
  });

  it("accepts only the platform probe token, and the probe token nowhere else", async () => {
    const handleToken = mintHandleToken(SECRET, acme.id, shopId);
    const forged = mintProbeToken("another-secret");
    for (const token of [undefined, acme.key, handleToken, forged, `${PROBE_TOKEN}x`]) {
      const reply = await get("/-/probe/acme/shop/api", token);
      expect(reply.status).toBe(401);
      expect(reply.json().error.code).toBe("UNAUTHENTICATED");
    }
    // The probe token is neither an API key nor a handle token.
    const viaPublic = await send(gateway.url, "/v1/acme/shop/echo", {
      body: {},
      headers: { authorization: `Bearer ${PROBE_TOKEN}` },
    });
    expect(viaPublic.status).toBe(401);
    const viaHandle = await get("/-/handles/acme/shop/api/echo", PROBE_TOKEN);
    expect(viaHandle.status).toBe(401);
    // The same routes work with their own credentials, so the 401s above are the token's scope.
    expect(
      (
        await send(gateway.url, "/-/handles/acme/shop/api/echo", {
          body: {},
          headers: { authorization: `Bearer ${handleToken}` },
        })
      ).status,
    ).toBe(200);
    expect(
      (
        await send(gateway.url, "/v1/acme/shop/echo", {
          body: {},
          headers: { authorization: `Bearer ${acme.key}` },
        })
      ).status,
    ).toBe(200);
  });

  it("answers 404 for unknown organisations, applications, deployments and extra paths; 400 for POST", async () => {
    for (const path of [
      "/-/probe/nobody/shop/api",
      "/-/probe/acme/nothing/api",
      "/-/probe/acme/shop/nothing",
      "/-/probe/acme/shop/api/-/stats",
      "/-/probe/acme/shop",
    ]) {
      const reply = await get(path, PROBE_TOKEN);
      expect(reply.status, path).toBe(404);
      expect(reply.json().error.code).toBe("NOT_FOUND");
    }
    const post = await send(gateway.url, "/-/probe/acme/shop/api", {
      body: {},
      headers: { authorization: `Bearer ${PROBE_TOKEN}` },
    });
    expect(post.status).toBe(400);
  });

  it("reports a replica that refuses connections through the router's usual error", async () => {
    const reply = await get("/-/probe/acme/broken/refused", PROBE_TOKEN);
    expect(reply.status).toBe(502);
    expect(reply.json().error.code).toBe("UPSTREAM_ERROR");
  });

  it("queues behind requests like one, without counting as load for the autoscaler", async () => {
    const held = send(gateway.url, "/v1/acme/solo/hold", {
      body: { gate: "probe-queue" },
      headers: { authorization: `Bearer ${acme.key}` },
    });
    const lane = await waitFor(() => {
      const l = gateway.router.lanes.get(solo.id);
      return l && l.inFlight === 1 ? l : undefined;
    }, "the held request in flight");
    const probe = get("/-/probe/acme/solo/solo", PROBE_TOKEN);
    await waitFor(() => lane.waiters.length === 1, "the probe queued behind it");
    expect(lane.ongoing).toBe(1);
    echo.open("probe-queue");
    expect((await held).status).toBe(200);
    expect((await probe).status).toBe(200);
    expect(lane.ongoing).toBe(0);
    expect(lane.probes).toBe(0);
  });

  it("answers asleep for a deployment scaled to zero without waking it", async () => {
    const wakes: string[] = [];
    const subscriber = new Redis(REDIS_URL, { disableClientInfo: true });
    subscriber.on("message", (_channel: string, message: string) => wakes.push(message));
    await subscriber.subscribe(redisKeys(prefix).wake);
    const held = new AbortController();
    try {
      const reply = await get("/-/probe/acme/lazy/sleepy", PROBE_TOKEN);
      expect(reply.status).toBe(503);
      expect(reply.json().error).toMatchObject({ code: "UNAVAILABLE", details: { reason: "asleep" } });
      // A real request to another sleeping deployment does wake it. The gateway publishes wake-ups
      // in order on one connection, so once this one arrived, a wake-up from the probe would have too.
      const request = fetch(`${gateway.url}/v1/acme/marker/hello`, {
        method: "POST",
        body: "{}",
        headers: { authorization: `Bearer ${acme.key}`, "content-type": "application/json" },
        signal: held.signal,
      }).catch(() => undefined);
      await waitFor(() => wakes.includes(marker.id), "the marker deployment's wake-up");
      expect(wakes).not.toContain(sleepy.id);
      held.abort();
      await request;
    } finally {
      held.abort();
      subscriber.disconnect();
    }
  });

  it("never meters probes as usage and counts them apart in the metrics", async () => {
    const probe = await get("/-/probe/acme/shop/api", PROBE_TOKEN, { "x-request-id": "probe-unmetered" });
    expect(probe.status).toBe(200);
    const request = await send(gateway.url, "/v1/acme/shop/echo", {
      body: {},
      headers: { authorization: `Bearer ${acme.key}`, "x-request-id": "request-metered" },
    });
    expect(request.status).toBe(200);
    // Usage is flushed in arrival order: once the later request is stored, the probe would be too.
    await waitFor(async () => {
      const rows = await tdb.db
        .select({ id: usageEvents.id })
        .from(usageEvents)
        .where(sql`${usageEvents.meta}->>'requestId' = 'request-metered'`);
      return rows.length === 1;
    }, "the request's usage event");
    const probed = await tdb.db
      .select({ id: usageEvents.id })
      .from(usageEvents)
      .where(sql`${usageEvents.meta}->>'requestId' = 'probe-unmetered'`);
    expect(probed).toHaveLength(0);

    const metrics = await send(gateway.url, "/metrics");
    expect(metrics.text).toContain(`tessera_gateway_probes_total{deployment="${api.id}",status="200"}`);
    expect(metrics.text).toContain(`tessera_gateway_probes_total{deployment="${sleepy.id}",status="503"}`);
    expect(metrics.text).toContain('tessera_gateway_probes_total{deployment="none",status="401"}');
    expect(metrics.text).toContain("tessera_gateway_probe_duration_seconds_bucket");
  });
});
