import { connect, plans, usageHourly } from "@tessera/db";
import { createTestDatabase, type TestDatabase } from "@tessera/db/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrgAdmission } from "../src/index.js";
import { seedOrg } from "./fixtures.js";

let tdb: TestDatabase;
beforeAll(async () => {
  tdb = await createTestDatabase("admission");
  // A tight free plan so the limits are reached in a few requests.
  await tdb.db
    .insert(plans)
    .values({ id: "free", name: "Free", limits: { requestsPerMinute: 3, monthlyRequests: 10 }, prices: {} });
});
afterAll(async () => {
  await tdb?.drop();
});

describe("gateway admission over cached billing state", () => {
  it("admits until the per-minute rate, then RATE_LIMITED until the next minute", async () => {
    const a = await seedOrg(tdb.db, "adm-rate");
    const gate = new OrgAdmission(tdb.db, { refreshMs: 3_600_000 });
    const t0 = new Date();
    t0.setUTCSeconds(10, 0);
    // Not loaded yet: admitted while the state loads (the data plane never waits on Postgres).
    expect(gate.admit(a.org.id, t0)).toEqual({ ok: true });
    await gate.settled();
    expect(gate.admit(a.org.id, t0)).toEqual({ ok: true });
    expect(gate.admit(a.org.id, t0)).toEqual({ ok: true });
    expect(gate.admit(a.org.id, t0)).toMatchObject({ ok: false, code: "RATE_LIMITED", retryAfterS: 50 });
    expect(gate.admit(a.org.id, new Date(t0.getTime() + 60_000))).toEqual({ ok: true });
  });

  it("answers PAYMENT_REQUIRED once the month's requests, rolled up plus admitted since, reach the plan", async () => {
    const a = await seedOrg(tdb.db, "adm-month");
    await tdb.db
      .insert(usageHourly)
      .values({ orgId: a.org.id, deploymentId: a.deployment.id, hour: new Date(), requests: 8 });
    const gate = new OrgAdmission(tdb.db, { refreshMs: 3_600_000 });
    const t0 = new Date();
    gate.admit(a.org.id, t0);
    await gate.settled();
    // 8 rolled up; 1 admitted before the load finished does not count (it reset), 2 more fit.
    expect(gate.admit(a.org.id, t0)).toEqual({ ok: true });
    expect(gate.admit(a.org.id, new Date(t0.getTime() + 60_000))).toEqual({ ok: true });
    expect(gate.admit(a.org.id, new Date(t0.getTime() + 120_000))).toMatchObject({
      ok: false,
      code: "PAYMENT_REQUIRED",
    });
  });

  it("keeps admitting when Postgres is unreachable, logging why", async () => {
    const down = connect("postgres://postgres@127.0.0.1:1/nowhere", 1);
    const warnings: string[] = [];
    const gate = new OrgAdmission(down.db, { log: (_l, msg) => warnings.push(msg) });
    expect(gate.admit("00000000-0000-4000-8000-000000000001")).toEqual({ ok: true });
    await gate.settled();
    expect(gate.admit("00000000-0000-4000-8000-000000000001")).toEqual({ ok: true });
    expect(warnings).toEqual(["billing state not loaded; admitting on the last known state"]);
    await down.close();
  });
});
