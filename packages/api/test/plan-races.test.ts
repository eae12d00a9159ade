import { readFileSync } from "node:fs";
import { join } from "node:path";
import { mostReplicas, type PlanLimits } from "@tessera/billing/service";
import { deployments, organisations, plans } from "@tessera/db";
import { and, eq, isNull } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type BillingOptions,
  billingOptionsFromEnv,
  createCaller,
  createRestHandler,
  describeError,
} from "../src/index.js";
import { createTestEnv, failure, sampleCode, sampleConfig, type TestEnv, type TestUser } from "./helpers.js";

/**
 * Plan limits under concurrency: deploys and scale-ups of one organisation that together exceed
 * its plan must not all get through, however they interleave (the plan lock serialises them).
 */

// The deploy-time inspector imports the tenant's module: Debian's python has fastapi/pandas.
process.env.TESSERA_RAY_INSPECT_PYTHON = process.env.TESSERA_TEST_RAY_PYTHON ?? "/usr/bin/python3";
const composition = {
  files: {
    "graph.py": readFileSync(
      join(import.meta.dirname, "..", "..", "..", "examples", "ray-serve-composition", "graph.py"),
      "utf8",
    ),
  },
};

let env: TestEnv;
let billing: BillingOptions;
let users = 0;

beforeAll(async () => {
  env = await createTestEnv("apiplanraces");
  billing = billingOptionsFromEnv(env.db, { TESSERA_ENFORCE_PLAN_LIMITS: "1" });
});
afterAll(async () => {
  await env?.tdb.drop();
});

const UNLIMITED: PlanLimits = {
  maxReplicas: null,
  maxCpus: null,
  maxGpus: null,
  maxDeployments: null,
  monthlyRequests: null,
  requestsPerMinute: null,
};

/** A fresh organisation on a plan of its own with `limits`, its enforcing caller and an application. */
async function tenant(limits: Partial<PlanLimits>) {
  const user: TestUser = await env.user(`racer${++users}@plans.example`);
  const planId = `race-${users}`;
  const setLimits = (l: Partial<PlanLimits>) =>
    env.db
      .insert(plans)
      .values({ id: planId, name: "Race", limits: { ...UNLIMITED, ...l }, prices: {} })
      .onConflictDoUpdate({ target: plans.id, set: { limits: { ...UNLIMITED, ...l } } });
  await setLimits(limits);
  await env.db.update(organisations).set({ plan: planId }).where(eq(organisations.id, user.orgId));
  const api = await createCaller({
    db: env.db,
    jobs: env.jobs,
    auth: { sessionId: user.sessionId },
    billing,
  });
  const { cluster } = await api.clusters.create({
    orgId: user.orgId,
    name: "main",
    quota: { cpus: 8, memoryMb: 8192, gpus: 0, maxReplicas: 10 },
  });
  const app = await api.applications.create({ orgId: user.orgId, clusterId: cluster.id, name: "shop" });
  const deploy = (name: string, numReplicas: number, prevVersion = 0, applicationId = app.id) =>
    api.deployments.deploy({
      orgId: user.orgId,
      applicationId,
      name,
      config: { ...sampleConfig, numReplicas },
      code: sampleCode,
      prevVersion,
    });
  return { user, api, app, cluster, deploy, setLimits };
}

/** `count` deployments of one replica, deployed one after another. */
async function oneReplicaEach(t: Awaited<ReturnType<typeof tenant>>, count: number) {
  const out = [];
  for (let i = 0; i < count; i++) out.push((await t.deploy(`d${i}`, 1)).deployment);
  return out;
}

/** Starts every call at once; what got through and how the others were refused. */
async function race<T>(calls: (() => Promise<T>)[]) {
  const settled = await Promise.allSettled(calls.map((call) => call()));
  return {
    passed: settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : [])),
    refused: settled.flatMap((s) => (s.status === "rejected" ? [describeError(s.reason)] : [])),
  };
}

/** The organisation's live deployments and the replicas the plan counts for them. */
async function footprint(orgId: string) {
  const rows = await env.db
    .select()
    .from(deployments)
    .where(and(eq(deployments.orgId, orgId), isNull(deployments.deletedAt)));
  return {
    deployments: rows.length,
    replicas: rows.reduce((n, d) => n + mostReplicas(d.targetReplicas, d.scaling), 0),
  };
}

describe("plan limits under concurrent deploys", () => {
  it("lets exactly the plan's deployments through when more new deploys race", async () => {
    // Several rounds, each a fresh organisation: the outcome may not depend on the interleaving.
    for (let round = 0; round < 3; round++) {
      const t = await tenant({ maxDeployments: 3 });
      const { passed, refused } = await race(Array.from({ length: 8 }, (_, i) => () => t.deploy(`m${i}`, 1)));
      expect(passed).toHaveLength(3);
      expect(refused).toHaveLength(5);
      for (const r of refused) {
        expect(r).toMatchObject({ code: "PAYMENT_REQUIRED", httpStatus: 402 });
        expect(r.message).toMatch(/Race plan allows 3 deployments; this deploy would use 4/);
      }
      expect((await footprint(t.user.orgId)).deployments).toBe(3);
    }
  });

  it("lets exactly the replicas that fit through when redeploys of existing deployments race", async () => {
    const t = await tenant({ maxReplicas: 8 });
    const existing = await oneReplicaEach(t, 6);
    // 6 of 8 replicas used: of six redeploys each adding a replica, two fit.
    const { passed, refused } = await race(existing.map((d) => () => t.deploy(d.name, 2, d.version)));
    expect(passed).toHaveLength(2);
    expect(refused).toHaveLength(4);
    for (const r of refused) {
      expect(r.code).toBe("PAYMENT_REQUIRED");
      expect(r.message).toMatch(/allows 8 replicas; this deploy would use 9/);
    }
    expect(await footprint(t.user.orgId)).toEqual({ deployments: 6, replicas: 8 });
  });

  it("lets exactly the replicas that fit through when scale-ups race, over tRPC and over REST", async () => {
    const t = await tenant({ maxReplicas: 8 });
    const existing = await oneReplicaEach(t, 6);
    /** "OK", or the HTTP status and code of the refusal. */
    const viaTrpc = (deploymentId: string) =>
      t.api.deployments.updateScaling({ orgId: t.user.orgId, deploymentId, numReplicas: 2 }).then(
        () => "OK",
        (err) => `${describeError(err).httpStatus} ${describeError(err).code}`,
      );
    // 6 of 8 replicas used: of six scale-ups each adding a replica, two fit.
    const overTrpc = await Promise.all(existing.map((d) => viaTrpc(d.id)));
    expect(overTrpc.filter((o) => o === "OK")).toHaveLength(2);
    expect(overTrpc.filter((o) => o === "402 PAYMENT_REQUIRED")).toHaveLength(4);
    expect(await footprint(t.user.orgId)).toEqual({ deployments: 6, replicas: 8 });

    const { key } = await t.api.apiKeys.create({ orgId: t.user.orgId, name: "ops" });
    const slug = (await t.api.orgs.list()).find((o) => o.id === t.user.orgId)!.slug;
    const rest = createRestHandler({ db: env.db, jobs: env.jobs, basePath: "/api/v1", billing });
    const viaRest = async (name: string) => {
      const res = await rest(
        new Request(`http://console.test/api/v1/orgs/${slug}/applications/shop/deployments/${name}/scaling`, {
          method: "PUT",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify({ num_replicas: 2 }),
        }),
      );
      if (res.status === 200) return "OK";
      const { error } = (await res.json()) as { error: { code: string } };
      return `${res.status} ${error.code}`;
    };
    // The seeds' operator API: with room for 3 more replicas, three of the four still at 1 grow.
    await t.setLimits({ maxReplicas: 11 });
    const stillAtOne = overTrpc.flatMap((o, i) => (o === "OK" ? [] : [existing[i]!.name]));
    const overRest = await Promise.all(stillAtOne.map(viaRest));
    expect(overRest.filter((o) => o === "OK")).toHaveLength(3);
    expect(overRest.filter((o) => o === "402 PAYMENT_REQUIRED")).toHaveLength(1);
    expect(await footprint(t.user.orgId)).toEqual({ deployments: 6, replicas: 11 });
  });

  it("checks a Ray Serve application's deployments together, one application at a time", async () => {
    // The composition has 4 deployments counted at 8 replicas (autoscaling maxima included).
    const small = await tenant({ maxReplicas: 7 });
    const tooBig = await failure(
      small.api.rayServe.deploy({
        orgId: small.user.orgId,
        applicationId: small.app.id,
        entry: "graph:app",
        code: composition,
      }),
    );
    expect(tooBig).toMatchObject({ code: "PAYMENT_REQUIRED" });
    expect(tooBig.message).toMatch(/allows 7 replicas; this deploy would use 8/);
    expect(await footprint(small.user.orgId)).toEqual({ deployments: 0, replicas: 0 });

    // Room for one application's deployments, not two: of two racing deploys, one gets through whole.
    const t = await tenant({ maxDeployments: 6 });
    const second = await t.api.applications.create({
      orgId: t.user.orgId,
      clusterId: t.cluster.id,
      name: "shop2",
    });
    const { passed, refused } = await race(
      [t.app.id, second.id].map(
        (applicationId) => () =>
          t.api.rayServe.deploy({
            orgId: t.user.orgId,
            applicationId,
            entry: "graph:app",
            code: composition,
          }),
      ),
    );
    expect(passed).toHaveLength(1);
    expect(refused).toMatchObject([{ code: "PAYMENT_REQUIRED" }]);
    expect(refused[0]!.message).toMatch(/allows 6 deployments; this deploy would use 8/);
    expect(await footprint(t.user.orgId)).toEqual({ deployments: 4, replicas: 8 });
  });
});

describe("plan limits on canaries and rollbacks", () => {
  /** Marks the deployment's desired revision live, as the controller would once it serves. */
  async function makeLive(d: { deployment: { id: string }; revision: { id: string } }) {
    await env.db
      .update(deployments)
      .set({ liveRevisionId: d.revision.id, state: "ready" })
      .where(eq(deployments.id, d.deployment.id));
  }

  it("refuses a canary, or its promotion, whose bigger replicas no longer fit the plan", async () => {
    const t = await tenant({ maxCpus: 2 });
    const model = await t.deploy("model", 2);
    await makeLive(model);
    const canary = (cpus: number) =>
      t.api.traffic.deployCanary({
        orgId: t.user.orgId,
        deploymentId: model.deployment.id,
        config: { ...sampleConfig, resources: { ...sampleConfig.resources, cpus } },
        code: sampleCode,
        prevVersion: 1,
        percent: 10,
      });
    // Two replicas of 1.5 CPUs: 3 of the plan's 2.
    const tooBig = await failure(canary(1.5));
    expect(tooBig.code).toBe("PAYMENT_REQUIRED");
    expect(tooBig.message).toMatch(/allows 2 CPU cores; this deploy would use 3/);
    expect(
      (await t.api.traffic.get({ orgId: t.user.orgId, deploymentId: model.deployment.id })).canary,
    ).toBeNull();

    await canary(1);
    // Counted at the live revision's 2 x 0.5 CPUs meanwhile, so a second deployment still fits...
    await t.deploy("other", 1);
    // ...and promoting the canary (2 x 1 CPUs, plus 0.5) no longer does.
    const promote = await failure(
      t.api.traffic.promote({ orgId: t.user.orgId, deploymentId: model.deployment.id, prevVersion: 1 }),
    );
    expect(promote.code).toBe("PAYMENT_REQUIRED");
    expect(promote.message).toMatch(/allows 2 CPU cores; this deploy would use 2.5/);
  });

  it("refuses a rollback to a revision with more replicas than the plan has room for", async () => {
    const t = await tenant({ maxReplicas: 3 });
    const v1 = await t.deploy("model", 3);
    await t.deploy("model", 1, 1);
    const other = await t.deploy("other", 1);
    const rollback = () =>
      t.api.deployments.rollback({
        orgId: t.user.orgId,
        deploymentId: v1.deployment.id,
        revisionId: v1.revision.id,
        prevVersion: 2,
      });
    const refused = await failure(rollback());
    expect(refused.code).toBe("PAYMENT_REQUIRED");
    expect(refused.message).toMatch(/allows 3 replicas; this deploy would use 4/);
    await t.api.deployments.delete({ orgId: t.user.orgId, deploymentId: other.deployment.id });
    expect((await rollback()).revision.version).toBe(3);
    expect(await footprint(t.user.orgId)).toEqual({ deployments: 1, replicas: 3 });
  });
});
