import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRestHandler } from "../src/index.js";
import { createTestEnv, sampleCode, sampleConfig, type TestEnv, type TestUser } from "./helpers.js";

/** The operator REST API: the same procedures, roles and tenant checks as tRPC, over plain HTTP. */
let env: TestEnv;
let owner: TestUser;
let other: TestUser;
let ownerKey: string;
let otherKey: string;
let slug: string;
let rest: (req: Request) => Promise<Response>;

const BASE = "http://console.test/api/v1";

beforeAll(async () => {
  env = await createTestEnv("apirest");
  owner = await env.user("ops@acme.example");
  other = await env.user("ops@globex.example");
  ownerKey = (await owner.api.apiKeys.create({ orgId: owner.orgId, name: "ops" })).key;
  otherKey = (await other.api.apiKeys.create({ orgId: other.orgId, name: "ops" })).key;
  slug = (await owner.api.orgs.list()).find((o) => o.id === owner.orgId)!.slug;
  const { cluster } = await owner.api.clusters.create({ orgId: owner.orgId, name: "main" });
  const app = await owner.api.applications.create({
    orgId: owner.orgId,
    clusterId: cluster.id,
    name: "shop",
  });
  await owner.api.deployments.deploy({
    orgId: owner.orgId,
    applicationId: app.id,
    name: "model",
    config: sampleConfig,
    code: sampleCode,
    prevVersion: 0,
  });
  rest = createRestHandler({ db: env.db, jobs: env.jobs, basePath: "/api/v1" });
});

afterAll(async () => {
  await env?.tdb.drop();
});

async function call(method: string, path: string, key: string | null, body?: unknown) {
  const res = await rest(
    new Request(`${BASE}${path}`, {
      method,
      headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), "content-type": "application/json" },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    }),
  );
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

const deploymentPath = () => `/orgs/${slug}/applications/shop/deployments/model`;

describe("operator REST API", () => {
  it("reads a deployment", async () => {
    const res = await call("GET", deploymentPath(), ownerKey);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ name: "model", version: 1 });
  });

  it("sets replicas by hand with the seeds' PUT {num_replicas}, parks at 0, and records the decision", async () => {
    const res = await call("PUT", `${deploymentPath()}/scaling`, ownerKey, { num_replicas: 3 });
    expect(res.status).toBe(200);
    expect((await call("GET", deploymentPath(), ownerKey)).body).toMatchObject({ targetReplicas: 3 });
    expect((await call("PUT", `${deploymentPath()}/scaling`, ownerKey, { numReplicas: 0 })).status).toBe(200);
    expect((await call("GET", deploymentPath(), ownerKey)).body).toMatchObject({ targetReplicas: 0 });
    const events = await call("GET", `${deploymentPath()}/scaling-events`, ownerKey);
    expect(events.status).toBe(200);
    expect((events.body as unknown as { toReplicas: number }[]).map((e) => e.toReplicas)).toEqual(
      expect.arrayContaining([3, 0]),
    );
    expect(env.jobs.enqueued.some((j) => j.job.kind === "scaleDeployment")).toBe(true);
  });

  it("switches to autoscaling without a redeploy", async () => {
    const res = await call("PUT", `${deploymentPath()}/scaling`, ownerKey, {
      autoscaling: { minReplicas: 0, maxReplicas: 4, targetOngoingRequests: 2 },
    });
    expect(res.status).toBe(200);
    expect((await call("GET", deploymentPath(), ownerKey)).body.scaling).toMatchObject({
      autoscaling: { minReplicas: 0, maxReplicas: 4 },
    });
  });

  it("answers bad input with stable codes and field errors", async () => {
    const bad = await call("PUT", `${deploymentPath()}/scaling`, ownerKey, { num_replicas: -1 });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe("VALIDATION_FAILED");
    expect(bad.body.error.details.fieldErrors).toHaveProperty("numReplicas");
    expect((await call("PUT", `${deploymentPath()}/scaling`, ownerKey, "{not json")).body.error.code).toBe(
      "BAD_REQUEST",
    );
    expect((await call("PUT", `${deploymentPath()}/scaling`, ownerKey, [1])).body.error.code).toBe(
      "VALIDATION_FAILED",
    );
    expect((await call("GET", "/nowhere", ownerKey)).status).toBe(404);
    expect((await call("DELETE", `${deploymentPath()}/scaling`, ownerKey)).status).toBe(404);
  });

  it("never lets another organisation read or scale the deployment", async () => {
    expect((await call("GET", deploymentPath(), null)).status).toBe(401);
    const read = await call("GET", deploymentPath(), otherKey);
    expect(read.status).toBe(404);
    const before = (await call("GET", deploymentPath(), ownerKey)).body;
    const write = await call("PUT", `${deploymentPath()}/scaling`, otherKey, { num_replicas: 9 });
    expect(write.status).toBe(404);
    expect((await call("GET", deploymentPath(), ownerKey)).body).toEqual(before);
  });
});
