import { mintHandleToken, parseOngoingSample, redisKeys, UPSTREAM_REVISION_HEADER } from "@tessera/core";
import { connect, type DbHandle } from "@tessera/db";
import { createTestDatabase, type TestDatabase, testRedisPrefix } from "@tessera/db/testing";
import { createRedisNotifier } from "@tessera/jobs";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGateway, type Gateway } from "../src/gateway.js";
import { EchoReplicas, send, type TestReplica, waitFor } from "./support/echo-replicas.js";
import { TcpProxy } from "./support/tcp-proxy.js";
import { type TestDeployment, type TestOrg, World } from "./support/world.js";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const HANDLE_SECRET = "handle-secret-for-tests";
const quiet = () => {};

let tdb: TestDatabase;
let world: World;
let redis: Redis;
const prefix = testRedisPrefix("gwres");
const echo = new EchoReplicas();
let r1: TestReplica;
let r2: TestReplica;
let acme: TestOrg;
let globex: TestOrg;
let shopId: string;
let api: TestDeployment;
const gateways: Gateway[] = [];

async function gatewayWith(options: Partial<Parameters<typeof createGateway>[0]> = {}): Promise<Gateway> {
  const g = await createGateway({
    db: tdb.db,
    redisUrl: REDIS_URL,
    redisPrefix: prefix,
    handleSecret: HANDLE_SECRET,
    coldStartTimeoutS: 20,
    loadReportMs: 100,
    log: quiet,
    ...options,
  });
  gateways.push(g);
  return g;
}

function call(g: Gateway, path: string, key: string, body?: unknown) {
  return send(g.url, path, { body, headers: { authorization: `Bearer ${key}` } });
}

beforeAll(async () => {
  [tdb, r1, r2] = await Promise.all([createTestDatabase("gwresilience"), echo.start("r1"), echo.start("r2")]);
  world = new World(tdb.db);
  redis = new Redis(REDIS_URL, { disableClientInfo: true });
  acme = await world.org("acme");
  globex = await world.org("globex");
  shopId = await world.application(acme, "shop", "api");
  api = await world.deployment(acme, shopId, "api");
  await world.replica(api, r1.url);
});

afterAll(async () => {
  await Promise.all(gateways.map((g) => g.close()));
  await echo.stopAll();
  redis?.disconnect();
  await tdb?.drop();
});

/** A connection to the test database through a TCP proxy the test can cut or hang. */
async function databaseBehindProxy(): Promise<{ pgProxy: TcpProxy; handle: DbHandle }> {
  const pgProxy = await new TcpProxy("127.0.0.1", Number(new URL(tdb.url).port || 5432)).start();
  const url = new URL(tdb.url);
  url.port = String(pgProxy.port);
  return { pgProxy, handle: connect(url.toString(), 2) };
}

describe("the data plane outlives the control plane", () => {
  it("keeps serving with the last known table and keys while Postgres is unreachable", async () => {
    const { pgProxy, handle } = await databaseBehindProxy();
    try {
      const g = await gatewayWith({ db: handle.db });
      expect((await call(g, "/v1/acme/shop/whoami", acme.key)).json().replica).toBe("r1");
      await pgProxy.stop();
      expect(await g.refresh()).toBe(false);
      for (let i = 0; i < 3; i++) {
        const reply = await call(g, "/v1/acme/shop/whoami", acme.key);
        expect(reply.status).toBe(200);
      }
      const health = (await send(g.url, "/healthz")).json();
      expect(health.routingError).toBeTruthy();
      // Usage stays buffered, not lost, while the database is away.
      expect(g.usage.buffered).toBeGreaterThan(0);
      // An unknown key cannot be verified: UNAVAILABLE, not a wrong 401.
      const stranger = await world.apiKey(acme.id);
      const unknown = await call(g, "/v1/acme/shop/whoami", stranger.key);
      expect(unknown.status).toBe(503);
      expect(unknown.json().error.code).toBe("UNAVAILABLE");
      await pgProxy.start(pgProxy.port);
      await waitFor(() => g.refresh(), "the routing table to reload");
      await waitFor(
        async () => (await g.usage.flush()) && g.usage.buffered === 0,
        "buffered usage to be written",
      );
    } finally {
      await pgProxy.stop();
      await handle.close().catch(() => {});
    }
  });

  it("keeps serving, and shuts down, while Postgres hangs", async () => {
    const { pgProxy, handle } = await databaseBehindProxy();
    try {
      const g = await createGateway({
        db: handle.db,
        redisUrl: REDIS_URL,
        redisPrefix: prefix,
        dbTimeoutMs: 300,
        usageFlushMs: 100,
        log: quiet,
      });
      expect((await call(g, "/v1/acme/shop/whoami", acme.key)).status).toBe(200);
      pgProxy.hang();
      // A reload gives up at its deadline instead of blocking every later reload.
      expect(await g.refresh()).toBe(false);
      expect(await g.refresh()).toBe(false);
      expect((await call(g, "/v1/acme/shop/whoami", acme.key)).status).toBe(200);
      const stranger = await world.apiKey(acme.id);
      expect((await call(g, "/v1/acme/shop/whoami", stranger.key)).json().error.code).toBe("UNAVAILABLE");
      // Shutdown tries to flush usage a few times, then gives up: it must not wait forever.
      await g.close();
    } finally {
      await pgProxy.stop();
      await handle.close().catch(() => {});
    }
  });

  it("keeps serving, and picks up changes from Postgres, while Redis is unreachable", async () => {
    const redisProxy = await new TcpProxy("127.0.0.1", Number(new URL(REDIS_URL).port || 6379)).start();
    const g = await gatewayWith({ redisUrl: `redis://127.0.0.1:${redisProxy.port}`, routingRefreshMs: 200 });
    try {
      const app = await world.application(acme, "redisless");
      const dep = await world.deployment(acme, app, "solo");
      await g.refresh();
      await redisProxy.stop();
      // No notice can arrive now: the periodic reload alone must bring the new replica in.
      await world.replica(dep, r2.url);
      await waitFor(
        async () => (await call(g, "/v1/acme/redisless/whoami", acme.key)).json().replica === "r2",
        "the replica to be routed without Redis",
        10_000,
      );
      expect((await call(g, "/v1/acme/shop/whoami", acme.key)).status).toBe(200);
    } finally {
      await redisProxy.stop();
    }
  });
});

describe("scale to zero", () => {
  it("holds a request for a sleeping deployment, publishes a wake-up, answers once a replica is ready", async () => {
    const g = await gatewayWith();
    const app = await world.application(acme, "sleepy");
    const dep = await world.deployment(acme, app, "model", {
      scaling: { autoscaling: { minReplicas: 0, maxReplicas: 2, targetOngoingRequests: 2 } },
      targetReplicas: 0,
    });
    await g.refresh();
    const wakes: string[] = [];
    const subscriber = new Redis(REDIS_URL, { disableClientInfo: true });
    subscriber.on("message", (_channel: string, message: string) => wakes.push(message));
    await subscriber.subscribe(redisKeys(prefix).wake);
    try {
      let answered = false;
      const pending = call(g, "/v1/acme/sleepy/echo", acme.key, { woke: true }).finally(() => {
        answered = true;
      });
      await waitFor(() => wakes.includes(dep.id), "a wake-up for the deployment");
      // Repeated while the request is held, in case the provisioner missed the first one.
      await waitFor(() => wakes.filter((w) => w === dep.id).length >= 2, "a repeated wake-up");
      // The held request counts as ongoing for the autoscaler.
      await waitFor(async () => {
        const members = await redis.zrange(redisKeys(prefix).ongoing(dep.id), 0, -1);
        return members.map(parseOngoingSample).some((s) => s?.gatewayId === g.id && s.ongoing === 1);
      }, "an ongoing sample for the held request");
      expect(answered).toBe(false);
      // What the provisioner does after the wake: a replica becomes ready, the gateways hear of it.
      await world.replica(dep, r2.url);
      await createRedisNotifier(redis, prefix)({ kind: "routingChanged", deploymentId: dep.id });
      const reply = await pending;
      expect(reply.status).toBe(200);
      expect(reply.json()).toMatchObject({ replica: "r2", body: { woke: true } });
    } finally {
      subscriber.disconnect();
    }
  });

  it("finds the woken replica even when no routing notice arrives", async () => {
    // Periodic reloads every 10 minutes: only the held request's own polling can find the replica.
    const g = await gatewayWith({ routingRefreshMs: 600_000 });
    const app = await world.application(acme, "drowsy");
    const dep = await world.deployment(acme, app, "model", {
      scaling: { autoscaling: { minReplicas: 0, maxReplicas: 1 } },
      targetReplicas: 0,
    });
    await g.refresh();
    const pending = call(g, "/v1/acme/drowsy/whoami", acme.key);
    await waitFor(() => (g.router.lanes.get(dep.id)?.waiters.length ?? 0) === 1, "the request to be held");
    await world.replica(dep, r2.url);
    const reply = await pending;
    expect(reply.status).toBe(200);
    expect(reply.json().replica).toBe("r2");
  });

  it("answers TIMEOUT when no replica becomes ready within the cold start timeout", async () => {
    const g = await gatewayWith({ coldStartTimeoutS: 1 });
    const app = await world.application(acme, "comatose");
    await world.deployment(acme, app, "model", {
      scaling: { autoscaling: { minReplicas: 0, maxReplicas: 1 } },
      targetReplicas: 0,
    });
    await g.refresh();
    const reply = await call(g, "/v1/acme/comatose/whoami", acme.key);
    expect(reply.status).toBe(504);
    expect(reply.json().error.code).toBe("TIMEOUT");
  });

  it("answers a parked deployment (numReplicas: 0) at once, without waking it", async () => {
    const g = await gatewayWith();
    const app = await world.application(acme, "parked");
    const dep = await world.deployment(acme, app, "model", {
      scaling: { numReplicas: 0 },
      targetReplicas: 0,
    });
    await g.refresh();
    const reply = await call(g, "/v1/acme/parked/whoami", acme.key);
    expect(reply.status).toBe(503);
    expect(reply.json().error).toMatchObject({ code: "UNAVAILABLE", details: { reason: "parked" } });
    expect(g.router.lanes.get(dep.id)?.lastWakeAt ?? 0).toBe(0);
  });

  it("answers a deployment that was never rolled out at once, instead of holding the request", async () => {
    const g = await gatewayWith();
    const app = await world.application(acme, "unborn");
    await world.deployment(acme, app, "model", { state: "deploying", live: false });
    await g.refresh();
    const reply = await call(g, "/v1/acme/unborn/whoami", acme.key);
    expect(reply.status).toBe(503);
    expect(reply.json().error).toMatchObject({ code: "UNAVAILABLE", details: { reason: "not_deployed" } });
  });
});

describe("handle ingress", () => {
  it("routes a handle call to the named deployment of the token's application only", async () => {
    const g = await gatewayWith();
    const helper = await world.deployment(acme, shopId, "helper");
    await world.replica(helper, r2.url);
    const otherApp = await world.application(acme, "other");
    const globexApp = await world.application(globex, "shop");
    await g.refresh();
    const token = mintHandleToken(HANDLE_SECRET, acme.id, shopId);

    const ok = await call(g, "/-/handles/acme/shop/helper/echo", token, { via: "handle" });
    expect(ok.status).toBe(200);
    expect(ok.json()).toMatchObject({ replica: "r2", authorization: null, body: { via: "handle" } });

    const otherAppToken = mintHandleToken(HANDLE_SECRET, acme.id, otherApp);
    expect((await call(g, "/-/handles/acme/shop/helper/echo", otherAppToken, {})).json().error.code).toBe(
      "FORBIDDEN",
    );
    const globexToken = mintHandleToken(HANDLE_SECRET, globex.id, globexApp);
    const cross = await call(g, "/-/handles/acme/shop/helper/echo", globexToken, {});
    expect(cross.status).toBe(403);
    const forged = mintHandleToken("another-secret", acme.id, shopId);
    expect((await call(g, "/-/handles/acme/shop/helper/echo", forged, {})).status).toBe(401);
    // An API key is not a handle token.
    expect((await call(g, "/-/handles/acme/shop/helper/echo", acme.key, {})).status).toBe(401);
    expect((await call(g, "/-/handles/acme/shop/nobody/echo", token, {})).status).toBe(404);
  });
});

describe("replica failures", () => {
  it("routes around a replica killed with keep-alive connections open", async () => {
    const g = await gatewayWith();
    const pair = new EchoReplicas();
    try {
      const [doomed, survivor] = await Promise.all([pair.start("doomed"), pair.start("survivor")]);
      const app = await world.application(acme, "crashy");
      const dep = await world.deployment(acme, app, "svc");
      await world.replica(dep, doomed.url);
      await world.replica(dep, survivor.url);
      await g.refresh();
      const seen = new Set<string>();
      // Concurrent requests open several pooled connections to both replicas.
      for (let round = 0; round < 10 && seen.size < 2; round++) {
        const replies = await Promise.all(
          [1, 2, 3, 4].map(() => call(g, "/v1/acme/crashy/whoami", acme.key)),
        );
        for (const r of replies) seen.add(r.json().replica);
      }
      expect(seen).toEqual(new Set(["doomed", "survivor"]));
      await doomed.stop(); // SIGKILL: no drain, connections die with the process
      const after = await Promise.all(
        Array.from({ length: 12 }, (_, i) =>
          i % 2
            ? call(g, "/v1/acme/crashy/whoami", acme.key)
            : call(g, "/v1/acme/crashy/echo", acme.key, { i }),
        ),
      );
      expect(after.map((r) => r.status)).toEqual(Array(12).fill(200));
      expect(new Set(after.map((r) => r.json().replica))).toEqual(new Set(["survivor"]));
    } finally {
      await pair.stopAll();
    }
  });
});

describe("stale routing tables", () => {
  it("resends a request that reached another tenant's replica at a reused address, which runs nothing", async () => {
    // Periodic reloads far off: only the misroute itself may make this gateway reload its table.
    const g = await gatewayWith({ routingRefreshMs: 600_000 });
    const reused = new EchoReplicas();
    try {
      const app = await world.application(acme, "reused");
      const dep = await world.deployment(acme, app, "svc", { config: { maxOngoingRequests: 4 } });
      const otherApp = await world.application(globex, "reused");
      const other = await world.deployment(globex, otherApp, "svc");
      const [right, stranger] = await Promise.all([
        reused.start("right", dep.revisionId),
        reused.start("stranger", other.revisionId),
      ]);
      // acme's replica "gone" was at the address globex's replica now listens on.
      const gone = await world.replica(dep, stranger.url);
      await world.replica(dep, right.url);
      await world.replica(other, stranger.url);
      await g.refresh();
      await world.setReplicaState(gone, "stopped");
      const lane = g.router.lane(g.table.snapshot.deployments.get(dep.id)!);
      const staleSlot = lane.replicas.find((r) => r.id === gone)!;
      expect(staleSlot.address).toBe(stranger.url);

      // With one request held on "right", the next pick prefers the idle stale slot.
      const held = call(g, "/v1/acme/reused/hold", acme.key, { gate: "reused" });
      await waitFor(
        async () => (await send(right.url, "/-/stats")).json().inFlight === 1,
        "a request held on the right replica",
      );
      const replies = await Promise.all([
        ...Array.from({ length: 6 }, (_, i) =>
          i % 2
            ? call(g, "/v1/acme/reused/whoami", acme.key)
            : call(g, "/v1/acme/reused/echo", acme.key, { i }),
        ),
        // A caller cannot name the revision: its copy of the header is dropped.
        send(g.url, "/v1/acme/reused/echo", {
          body: { forged: true },
          headers: { authorization: `Bearer ${acme.key}`, [UPSTREAM_REVISION_HEADER]: other.revisionId },
        }),
      ]);
      expect(replies.map((r) => r.status)).toEqual(Array(7).fill(200));
      expect(new Set(replies.map((r) => r.json().replica))).toEqual(new Set(["right"]));
      await stranger.waitLog(
        (l) => l.msg === "misrouted request refused" && l.expectedRevision === dep.revisionId,
        "the stranger's refusal",
      );
      expect((await send(stranger.url, "/-/stats")).json()).toMatchObject({ inFlight: 0, total: 0 });
      expect(staleSlot.draining).toBe(true);
      await waitFor(() => lane.replicas.every((r) => r.id !== gone), "the reload the misroute asked for");
      reused.open("reused");
      expect((await held).json()).toMatchObject({ replica: "right" });
    } finally {
      await reused.stopAll();
    }
  });
});

describe("rollouts", () => {
  it("resends requests a draining replica refuses to the others", async () => {
    const g = await gatewayWith();
    const rolling = new EchoReplicas();
    try {
      const [old, fresh] = await Promise.all([rolling.start("old"), rolling.start("fresh")]);
      const app = await world.application(acme, "rolling");
      const dep = await world.deployment(acme, app, "svc", { config: { maxOngoingRequests: 4 } });
      await world.replica(dep, old.url);
      await g.refresh();
      const inFlight = call(g, "/v1/acme/rolling/hold", acme.key, { gate: "drain" });
      // In flight on the replica itself (not just sent), or the replica would drain at once and exit.
      await waitFor(
        async () => (await send(old.url, "/-/stats")).json().inFlight === 1,
        "a request in flight on the old replica",
      );
      // The old replica starts draining (it finishes its request first); the new one is ready,
      // but this gateway has not heard that the old one is draining.
      old.proc.kill("SIGTERM");
      await waitFor(
        async () => (await send(old.url, "/-/ready").catch(() => undefined))?.status === 503,
        "the old replica to drain",
        60_000,
      );
      await world.replica(dep, fresh.url);
      await g.refresh();
      // Load the new replica beyond the old one, so power of two choices sends to the old one.
      const busy = [1, 2].map(() => call(g, "/v1/acme/rolling/hold", acme.key, { gate: "drain" }));
      await waitFor(() => g.router.lanes.get(dep.id)?.inFlight === 3, "two more requests in flight");
      for (let i = 0; i < 8; i++) {
        const reply = await call(g, "/v1/acme/rolling/whoami", acme.key);
        expect(reply.status).toBe(200);
        expect(reply.json().replica).toBe("fresh");
      }
      expect(g.router.lanes.get(dep.id)!.replicas.find((r) => r.address === old.url)?.draining).toBe(true);
      rolling.open("drain");
      expect((await inFlight).json()).toMatchObject({ replica: "old" });
      expect((await Promise.all(busy)).map((r) => r.json().replica)).toEqual(["fresh", "fresh"]);
    } finally {
      await rolling.stopAll();
    }
  });
});
