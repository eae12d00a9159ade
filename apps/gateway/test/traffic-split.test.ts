/**
 * Traffic splitting in the gateway: a deployment with a live revision and a canary, real node
 * replicas of each, the split read from `deployments.traffic` like the API writes it.
 */
import { TesseraError } from "@tessera/core";
import { deployments, revisions, usageEvents } from "@tessera/db";
import { createTestDatabase, type TestDatabase, testRedisPrefix } from "@tessera/db/testing";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGateway, type Gateway } from "../src/gateway.js";
import { chooseServingRevision } from "../src/revision-choice.js";
import { type DeploymentRoute, limitsOf } from "../src/routing-table.js";
import { EchoReplicas, send, waitFor } from "./support/echo-replicas.js";
import { type TestDeployment, type TestOrg, World } from "./support/world.js";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";

describe("chooseServingRevision", () => {
  const LIVE = "11111111-1111-4111-8111-111111111111";
  const CANARY = "22222222-2222-4222-8222-222222222222";
  const route = (over: Partial<DeploymentRoute> = {}): DeploymentRoute => ({
    id: "d",
    orgId: "o",
    applicationId: "a",
    name: "api",
    liveRevisionId: LIVE,
    liveVersion: 3,
    canary: { revisionId: CANARY, version: 4, percent: 25 },
    limits: limitsOf(null),
    parked: false,
    replicas: [
      { id: "r1", address: "http://x:1", revisionId: LIVE },
      { id: "r2", address: "http://x:2", revisionId: CANARY },
    ],
    ...over,
  });

  it("makes no choice without a canary or a pin", () => {
    expect(chooseServingRevision(route({ canary: null }), undefined)).toBeNull();
  });

  it("splits by weight, and sends nothing unpinned to a canary without a ready replica", () => {
    expect(chooseServingRevision(route(), undefined, () => 0.2)).toMatchObject({
      revisionId: CANARY,
      version: 4,
    });
    expect(chooseServingRevision(route(), undefined, () => 0.3)).toMatchObject({
      revisionId: LIVE,
      version: 3,
    });
    const notReady = route({ replicas: [{ id: "r1", address: "http://x:1", revisionId: LIVE }] });
    expect(chooseServingRevision(notReady, undefined, () => 0)).toMatchObject({ revisionId: LIVE });
  });

  it("pins by header; a pin to a revision not serving or not ready is an error, not a fallback", () => {
    expect(chooseServingRevision(route(), "4", () => 0.99)).toMatchObject({
      revisionId: CANARY,
      pinned: true,
    });
    expect(chooseServingRevision(route({ canary: null }), ["3"])).toMatchObject({
      revisionId: LIVE,
      pinned: true,
    });
    const notServing = () => chooseServingRevision(route(), "2");
    expect(notServing).toThrow(TesseraError);
    expect(notServing).toThrow(/revision 2 is not serving/);
    const notReady = route({ replicas: [{ id: "r1", address: "http://x:1", revisionId: LIVE }] });
    expect(() => chooseServingRevision(notReady, "4")).toThrow(/no ready replica/);
    expect(() => chooseServingRevision(route({ liveRevisionId: null, canary: null }), "1")).toThrow(
      /no live revision/,
    );
  });
});

describe("traffic splitting through the gateway", () => {
  let tdb: TestDatabase;
  let world: World;
  let gateway: Gateway;
  let acme: TestOrg;
  let api: TestDeployment;
  let canaryRevisionId: string;
  const echo = new EchoReplicas();

  beforeAll(async () => {
    const [db, live1, live2, canary1] = await Promise.all([
      createTestDatabase("gwsplit"),
      echo.start("live-1"),
      echo.start("live-2"),
      echo.start("canary-1"),
    ]);
    tdb = db;
    world = new World(tdb.db);
    acme = await world.org("acme");
    const shop = await world.application(acme, "shop", "api");
    api = await world.deployment(acme, shop, "api");
    const [rev] = await tdb.db
      .insert(revisions)
      .values({
        orgId: acme.id,
        deploymentId: api.id,
        version: 2,
        config: { runtime: "node", entry: "echo.ts:Echo" },
        code: { files: { "echo.ts": "" }, encoding: "utf8" },
        envHash: "none",
        state: "starting",
      })
      .returning();
    canaryRevisionId = rev!.id;
    await world.replica(api, live1.url);
    await world.replica(api, live2.url);
    await world.replica({ ...api, revisionId: canaryRevisionId }, canary1.url);
    await setCanary(20);
    gateway = await createGateway({
      db: tdb.db,
      redisUrl: REDIS_URL,
      redisPrefix: testRedisPrefix("gwsplit"),
      usageFlushMs: 100,
      loadReportMs: 100,
      log: () => {},
    });
  }, 60_000);
  afterAll(async () => {
    await gateway?.close();
    await echo.stopAll();
    await tdb?.drop();
  });

  async function setCanary(percent: number | null) {
    await tdb.db
      .update(deployments)
      .set({
        traffic:
          percent === null
            ? null
            : { canaryRevisionId, canaryPercent: percent, startedAt: new Date().toISOString() },
      })
      .where(eq(deployments.id, api.id));
    if (gateway) expect(await gateway.refresh()).toBe(true);
  }

  async function whoami(n: number, headers: Record<string, string> = {}) {
    const replies = await Promise.all(
      Array.from({ length: n }, () =>
        send(gateway.url, "/v1/acme/shop/whoami", {
          headers: { authorization: `Bearer ${acme.key}`, ...headers },
        }),
      ),
    );
    for (const r of replies) expect(r.status, r.text).toBe(200);
    return replies.map((r) => ({
      replica: r.json().replica as string,
      revision: r.headers["x-tessera-revision"],
    }));
  }

  it("sends the canary its share within statistical bounds over a few hundred requests", async () => {
    const served = await whoami(400);
    const toCanary = served.filter((s) => s.replica === "canary-1").length;
    // 20% of 400 = 80, standard deviation 8: five of them either side.
    expect(toCanary).toBeGreaterThan(40);
    expect(toCanary).toBeLessThan(120);
    // The response names the revision, and it matches the replica that answered.
    for (const s of served) expect(s.revision).toBe(s.replica === "canary-1" ? "2" : "1");
  });

  it("pins a request to a revision with the x-tessera-revision header", async () => {
    expect(new Set((await whoami(20, { "x-tessera-revision": "2" })).map((s) => s.replica))).toEqual(
      new Set(["canary-1"]),
    );
    expect(
      (await whoami(20, { "x-tessera-revision": api.revisionId })).every((s) => s.replica !== "canary-1"),
    ).toBe(true);
    const unknown = await send(gateway.url, "/v1/acme/shop/whoami", {
      headers: { authorization: `Bearer ${acme.key}`, "x-tessera-revision": "9" },
    });
    expect(unknown.status).toBe(404);
    expect(unknown.json().error.message).toContain("revision 9 is not serving");
  });

  it("follows weight shifts and an abort", async () => {
    await setCanary(100);
    expect((await whoami(20)).every((s) => s.replica === "canary-1")).toBe(true);
    await setCanary(0);
    expect((await whoami(20)).every((s) => s.replica !== "canary-1")).toBe(true);
    await setCanary(null);
    const after = await whoami(20);
    // No split: any ready replica serves (as during a rollout) and no revision is announced.
    expect(after.every((s) => s.revision === undefined)).toBe(true);
  });

  it("meters usage per revision", async () => {
    await waitFor(async () => {
      const rows = await tdb.db.select().from(usageEvents).where(eq(usageEvents.deploymentId, api.id));
      const byRevision = new Set(rows.map((r) => r.revisionId));
      return byRevision.has(canaryRevisionId) && byRevision.has(api.revisionId);
    }, "usage events of both revisions");
  });
});
