import { OrgAdmission } from "@tessera/billing";
import { billingAccounts, plans, usageEvents } from "@tessera/db";
import { createTestDatabase, type TestDatabase, testRedisPrefix } from "@tessera/db/testing";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGateway, type Gateway } from "../src/gateway.js";
import { EchoReplicas, send, type TestReplica, waitFor } from "./support/echo-replicas.js";
import { type TestOrg, World } from "./support/world.js";

/** Plan enforcement on the data plane: the billing package's admission wired into the gateway. */
const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";

let tdb: TestDatabase;
let gateway: Gateway;
const echo = new EchoReplicas();
let replica: TestReplica;
let acme: TestOrg;
let globex: TestOrg;

const call = (org: TestOrg) =>
  send(gateway.url, `/v1/${org.slug}/shop/whoami`, { headers: { authorization: `Bearer ${org.key}` } });

beforeAll(async () => {
  [tdb, replica] = await Promise.all([createTestDatabase("gwadmit"), echo.start("admit")]);
  const world = new World(tdb.db);
  acme = await world.org("acme");
  globex = await world.org("globex");
  for (const org of [acme, globex]) {
    const app = await world.application(org, "shop", "api");
    await world.replica(await world.deployment(org, app, "api"), replica.url);
  }
  // This platform's free plan allows 3 requests a minute.
  await tdb.db
    .insert(plans)
    .values({ id: "free", name: "Free", limits: { requestsPerMinute: 3 }, prices: {} });
  await tdb.db
    .insert(billingAccounts)
    .values({ orgId: globex.id, paymentFailed: true, paymentFailedAt: new Date(0) });
  gateway = await createGateway({
    db: tdb.db,
    redisUrl: REDIS_URL,
    redisPrefix: testRedisPrefix("gwadmit"),
    usageFlushMs: 100,
    admission: new OrgAdmission(tdb.db, { refreshMs: 60_000 }),
    log: () => {},
  });
});

afterAll(async () => {
  await gateway?.close();
  await echo.stopAll();
  await tdb?.drop();
});

describe("plan admission", () => {
  it("answers RATE_LIMITED with Retry-After past the plan's rate, and meters only admitted requests", async () => {
    const statuses: number[] = [];
    // The org's billing state loads in the background; requests before it lands are admitted.
    const refused = await waitFor(async () => {
      const res = await call(acme);
      statuses.push(res.status);
      return res.status === 429 ? res : undefined;
    }, "a refused request");
    expect(
      statuses.slice(0, -1).every((s) => s === 200),
      String(statuses),
    ).toBe(true);
    expect(refused.json()).toMatchObject({ error: { code: "RATE_LIMITED" } });
    expect(Number(refused.headers["retry-after"])).toBeGreaterThan(0);
    const admitted = statuses.filter((s) => s === 200).length;
    expect(admitted).toBeGreaterThanOrEqual(3);
    expect(statuses.every((s) => s === 200 || s === 429)).toBe(true);

    await waitFor(async () => {
      const rows = await tdb.db.select().from(usageEvents).where(eq(usageEvents.orgId, acme.id));
      return rows.length === admitted;
    }, "usage flushed");
    await new Promise((r) => setTimeout(r, 300));
    const rows = await tdb.db.select().from(usageEvents).where(eq(usageEvents.orgId, acme.id));
    expect(rows.every((r) => r.status === 200)).toBe(true);
    expect(rows).toHaveLength(admitted);
  });

  it("answers PAYMENT_REQUIRED for an organisation whose payment failed over a week ago", async () => {
    const refused = await waitFor(async () => {
      const res = await call(globex);
      return res.status === 402 ? res : undefined;
    }, "payment required");
    expect(refused.json()).toMatchObject({ error: { code: "PAYMENT_REQUIRED" } });
  });
});
