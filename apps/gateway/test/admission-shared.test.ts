import { OrgAdmission } from "@tessera/billing";
import { redisKeys } from "@tessera/core";
import { plans } from "@tessera/db";
import { createTestDatabase, type TestDatabase, testRedisPrefix } from "@tessera/db/testing";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGateway, type Gateway } from "../src/gateway.js";
import { EchoReplicas, send, type TestReplica } from "./support/echo-replicas.js";
import { type TestOrg, World } from "./support/world.js";

/** The plan's per-minute rate counted across two gateways that share Postgres and a Redis prefix. */
const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const RATE = 4;

let tdb: TestDatabase;
let world: World;
let redis: Redis;
const prefix = testRedisPrefix("gwshared");
const echo = new EchoReplicas();
let replica: TestReplica;
const gateways: Gateway[] = [];
const admissions: OrgAdmission[] = [];

beforeAll(async () => {
  [tdb, replica] = await Promise.all([createTestDatabase("gwshared"), echo.start("shared")]);
  world = new World(tdb.db);
  redis = new Redis(REDIS_URL, { disableClientInfo: true });
  await tdb.db
    .insert(plans)
    .values({ id: "free", name: "Free", limits: { requestsPerMinute: RATE }, prices: {} });
  for (let i = 0; i < 2; i++)
    gateways.push(
      await createGateway({
        db: tdb.db,
        redisUrl: REDIS_URL,
        redisPrefix: prefix,
        admission: (shared) => {
          const admission = new OrgAdmission(tdb.db, { refreshMs: 60_000, shared });
          admissions.push(admission);
          return admission;
        },
        log: () => {},
      }),
    );
});

afterAll(async () => {
  await Promise.all(gateways.map((g) => g.close()));
  await echo.stopAll();
  redis?.disconnect();
  await tdb?.drop();
});

const minuteNow = () => Math.floor(Date.now() / 60_000);

async function servingOrg(slug: string): Promise<TestOrg> {
  const org = await world.org(slug);
  const app = await world.application(org, "shop", "api");
  await world.replica(await world.deployment(org, app, "api"), replica.url);
  await Promise.all(gateways.map((g) => g.refresh()));
  return org;
}

/**
 * Sends requests alternately through both gateways until each has refused one, letting the sender
 * and then the other gateway flush after every request (the documented lag is one flush interval),
 * and returns the statuses per gateway.
 */
async function alternate(org: TestOrg): Promise<number[][]> {
  const statuses: number[][] = [[], []];
  for (let i = 0; statuses.some((s) => !s.includes(429)) && i < 4 * RATE; i++) {
    const at = i % 2;
    const res = await send(gateways[at]!.url, `/v1/${org.slug}/shop/whoami`, {
      headers: { authorization: `Bearer ${org.key}` },
    });
    statuses[at]!.push(res.status);
    if (res.status === 429) expect(res.json()).toMatchObject({ error: { code: "RATE_LIMITED" } });
    // Before any limit applies each gateway loads the org's plan (admitting while it loads).
    await admissions[at]!.settled();
    await admissions[at]!.flush();
    await admissions[1 - at]!.flush();
  }
  return statuses;
}

describe("plan rate across gateways", () => {
  it("admits the plan's requests per minute in total over two gateways, not per gateway", async () => {
    // A run that straddles a minute boundary is repeated with a fresh organisation: its counts
    // would be split over two minutes.
    for (let attempt = 0; ; attempt++) {
      const org = await servingOrg(`acme-${attempt}`);
      const minute = minuteNow();
      const statuses = await alternate(org);
      if (minuteNow() !== minute && attempt < 3) continue;
      const admitted = statuses.flat().filter((s) => s === 200).length;
      expect(
        statuses.flat().every((s) => s === 200 || s === 429),
        JSON.stringify(statuses),
      ).toBe(true);
      expect(admitted, JSON.stringify(statuses)).toBe(RATE);
      // Both gateways served part of it and both refused past it.
      for (const s of statuses) {
        expect(s).toContain(200);
        expect(s).toContain(429);
      }
      expect(await redis.get(redisKeys(prefix).requestsInMinute(org.id, minute))).toBe(String(RATE));
      return;
    }
  });
});
