import {
  billingAccounts,
  replicaLogs,
  replicas,
  scalingEvents,
  uptimeIncidents,
  uptimeProbes,
  usageHourly,
} from "@tessera/db";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appRouter } from "../src/index.js";
import { createTestEnv, failure, sampleCode, sampleConfig, type TestEnv, type TestUser } from "./helpers.js";

/**
 * Tenant isolation, procedure by procedure. A user of org A calls every procedure with inputs
 * that point at org B's objects (B's orgId, or A's orgId with B's object ids); each call must
 * be refused with NOT_FOUND or FORBIDDEN, or (for procedures that only list the caller's own
 * things) return nothing of B. Org B's rows must be byte-for-byte unchanged afterwards. A
 * procedure without a fixture here fails the test, so new procedures cannot skip this check.
 */

let env: TestEnv;
let a: TestUser;
let b: TestUser;
let aKey: string;

interface World {
  A: { orgId: string; clusterId: string; applicationId: string; deploymentId: string; revisionId: string };
  B: {
    orgId: string;
    userId: string;
    memberId: string;
    clusterId: string;
    applicationId: string;
    deploymentId: string;
    revisionId: string;
    version: number;
    replicaId: string;
    jobId: string;
    envHash: string;
    invitationId: string;
    invitationToken: string;
    apiKeyId: string;
    apiKeyPrefix: string;
    stripeCustomerId: string;
  };
}
let w: World;

/** `input` may be a function for procedures whose input must differ per call (unique emails). */
type Case = { input: unknown; check?: (result: unknown) => void };
let signUps = 0;
const REFUSED = ["NOT_FOUND", "FORBIDDEN"];
/** Fails if anything of org B shows up in a result. */
const revealsNothingOfB = (result: unknown) => {
  const text = JSON.stringify(result);
  for (const [k, v] of Object.entries(w.B))
    if (typeof v === "string" && v.length > 8) expect(text, `leaks B.${k}`).not.toContain(v);
};

const fixtures: Record<string, (w: World) => Case[]> = {
  "auth.signUp": () => [
    {
      input: () => ({ email: `fresh-${++signUps}@example.com`, password: "another-password" }),
      check: revealsNothingOfB,
    },
  ],
  "auth.me": () => [{ input: undefined, check: revealsNothingOfB }],
  "auth.whoami": () => [{ input: undefined, check: revealsNothingOfB }],
  // Signs out the caller's own session only; run last (see the ordering below).
  "auth.signOut": () => [{ input: undefined, check: revealsNothingOfB }],
  "orgs.list": () => [{ input: undefined, check: revealsNothingOfB }],
  "orgs.create": () => [{ input: { name: "A's second" }, check: revealsNothingOfB }],
  "orgs.get": ({ B }) => [{ input: { orgId: B.orgId } }],
  "orgs.update": ({ B }) => [{ input: { orgId: B.orgId, name: "pwned" } }],
  "orgs.delete": ({ B }) => [{ input: { orgId: B.orgId } }],
  "members.list": ({ A, B }) => [
    { input: { orgId: B.orgId } },
    { input: { orgId: A.orgId }, check: revealsNothingOfB },
  ],
  "members.setRole": ({ A, B }) => [
    { input: { orgId: B.orgId, userId: B.memberId, role: "owner" } },
    { input: { orgId: A.orgId, userId: B.memberId, role: "owner" } },
  ],
  "members.remove": ({ A, B }) => [
    { input: { orgId: B.orgId, userId: B.memberId } },
    { input: { orgId: A.orgId, userId: B.userId } },
  ],
  "members.leave": ({ B }) => [{ input: { orgId: B.orgId } }],
  "invitations.list": ({ A, B }) => [
    { input: { orgId: B.orgId } },
    { input: { orgId: A.orgId }, check: revealsNothingOfB },
  ],
  "invitations.create": ({ B }) => [{ input: { orgId: B.orgId, email: "x@example.com", role: "owner" } }],
  "invitations.revoke": ({ A, B }) => [
    { input: { orgId: B.orgId, invitationId: B.invitationId } },
    { input: { orgId: A.orgId, invitationId: B.invitationId } },
  ],
  // The token is the credential: an unknown one finds nothing, B's own one is for another email.
  "invitations.lookup": () => [{ input: { token: "not-a-real-invitation-token" } }],
  "invitations.accept": ({ B }) => [
    { input: { token: B.invitationToken } },
    { input: { token: "not-a-real-invitation-token" } },
  ],
  "apiKeys.list": ({ A, B }) => [
    { input: { orgId: B.orgId } },
    { input: { orgId: A.orgId }, check: revealsNothingOfB },
  ],
  "apiKeys.create": ({ B }) => [{ input: { orgId: B.orgId, name: "mine now" } }],
  "apiKeys.revoke": ({ A, B }) => [
    { input: { orgId: B.orgId, apiKeyId: B.apiKeyId } },
    { input: { orgId: A.orgId, apiKeyId: B.apiKeyId } },
  ],
  "clusters.list": ({ A, B }) => [
    { input: { orgId: B.orgId } },
    { input: { orgId: A.orgId }, check: revealsNothingOfB },
  ],
  "clusters.get": ({ A, B }) => [
    { input: { orgId: B.orgId, clusterId: B.clusterId } },
    { input: { orgId: A.orgId, clusterId: B.clusterId } },
  ],
  "clusters.create": ({ B }) => [{ input: { orgId: B.orgId, name: "intruder" } }],
  "clusters.update": ({ A, B }) => [
    { input: { orgId: B.orgId, clusterId: B.clusterId, name: "renamed" } },
    { input: { orgId: A.orgId, clusterId: B.clusterId, name: "renamed" } },
  ],
  "clusters.delete": ({ A, B }) => [
    { input: { orgId: B.orgId, clusterId: B.clusterId } },
    { input: { orgId: A.orgId, clusterId: B.clusterId } },
  ],
  "applications.list": ({ A, B }) => [
    { input: { orgId: B.orgId } },
    { input: { orgId: A.orgId, clusterId: B.clusterId }, check: revealsNothingOfB },
  ],
  "applications.get": ({ A, B }) => [
    { input: { orgId: B.orgId, applicationId: B.applicationId } },
    { input: { orgId: A.orgId, applicationId: B.applicationId } },
  ],
  "applications.create": ({ A, B }) => [
    { input: { orgId: B.orgId, clusterId: B.clusterId, name: "sneaky" } },
    { input: { orgId: A.orgId, clusterId: B.clusterId, name: "sneaky" } },
  ],
  "applications.delete": ({ A, B }) => [
    { input: { orgId: B.orgId, applicationId: B.applicationId } },
    { input: { orgId: A.orgId, applicationId: B.applicationId } },
  ],
  "deployments.list": ({ A, B }) => [
    { input: { orgId: B.orgId } },
    { input: { orgId: A.orgId, applicationId: B.applicationId }, check: revealsNothingOfB },
  ],
  "deployments.get": ({ A, B }) => [
    { input: { orgId: B.orgId, deploymentId: B.deploymentId } },
    { input: { orgId: A.orgId, deploymentId: B.deploymentId } },
  ],
  "deployments.deploy": ({ A, B }) => [
    {
      input: {
        orgId: B.orgId,
        applicationId: B.applicationId,
        name: "echo",
        config: sampleConfig,
        code: sampleCode,
        prevVersion: B.version,
      },
    },
    {
      input: {
        orgId: A.orgId,
        applicationId: B.applicationId,
        name: "echo",
        config: sampleConfig,
        code: sampleCode,
        prevVersion: B.version,
      },
    },
  ],
  "deployments.updateScaling": ({ A, B }) => [
    { input: { orgId: B.orgId, deploymentId: B.deploymentId, numReplicas: 0 } },
    { input: { orgId: A.orgId, deploymentId: B.deploymentId, numReplicas: 0 } },
  ],
  "rayServe.deploy": ({ A, B }) => {
    const ray = {
      entry: "app:app",
      code: {
        files: {
          "app.py":
            "from ray import serve\n\n@serve.deployment\nclass Echo:\n    def __call__(self, request):\n        return 'x'\n\napp = Echo.bind()\n",
        },
      },
      prevVersions: { echo: B.version },
    };
    return [
      { input: { orgId: B.orgId, applicationId: B.applicationId, ...ray } },
      { input: { orgId: A.orgId, applicationId: B.applicationId, ...ray } },
    ];
  },
  "deployments.rollback": ({ A, B }) => [
    {
      input: {
        orgId: B.orgId,
        deploymentId: B.deploymentId,
        revisionId: B.revisionId,
        prevVersion: B.version,
      },
    },
    {
      input: {
        orgId: A.orgId,
        deploymentId: B.deploymentId,
        revisionId: B.revisionId,
        prevVersion: B.version,
      },
    },
    // A's own deployment, B's revision: must not copy B's code into A.
    { input: { orgId: A.orgId, deploymentId: A.deploymentId, revisionId: B.revisionId, prevVersion: 1 } },
  ],
  "deployments.delete": ({ A, B }) => [
    { input: { orgId: B.orgId, deploymentId: B.deploymentId } },
    { input: { orgId: A.orgId, deploymentId: B.deploymentId } },
  ],
  "deployments.revisions": ({ A, B }) => [
    { input: { orgId: B.orgId, deploymentId: B.deploymentId } },
    { input: { orgId: A.orgId, deploymentId: B.deploymentId } },
  ],
  "deployments.replicas": ({ A, B }) => [
    { input: { orgId: B.orgId, deploymentId: B.deploymentId } },
    { input: { orgId: A.orgId, deploymentId: B.deploymentId } },
  ],
  "deployments.scalingEvents": ({ A, B }) => [
    { input: { orgId: B.orgId, deploymentId: B.deploymentId } },
    { input: { orgId: A.orgId, deploymentId: B.deploymentId } },
  ],
  "traffic.get": ({ A, B }) => [
    { input: { orgId: B.orgId, deploymentId: B.deploymentId } },
    { input: { orgId: A.orgId, deploymentId: B.deploymentId } },
  ],
  "traffic.deployCanary": ({ A, B }) =>
    [B.orgId, A.orgId].map((orgId) => ({
      input: {
        orgId,
        deploymentId: B.deploymentId,
        config: sampleConfig,
        code: sampleCode,
        prevVersion: B.version,
        percent: 50,
      },
    })),
  "traffic.setWeight": ({ A, B }) => [
    { input: { orgId: B.orgId, deploymentId: B.deploymentId, percent: 100 } },
    { input: { orgId: A.orgId, deploymentId: B.deploymentId, percent: 100 } },
  ],
  "traffic.promote": ({ A, B }) => [
    { input: { orgId: B.orgId, deploymentId: B.deploymentId, prevVersion: B.version } },
    { input: { orgId: A.orgId, deploymentId: B.deploymentId, prevVersion: B.version } },
  ],
  "traffic.abort": ({ A, B }) => [
    { input: { orgId: B.orgId, deploymentId: B.deploymentId } },
    { input: { orgId: A.orgId, deploymentId: B.deploymentId } },
  ],
  "deployments.logs": ({ A, B }) => [
    { input: { orgId: B.orgId, deploymentId: B.deploymentId } },
    { input: { orgId: A.orgId, deploymentId: B.deploymentId } },
    {
      input: { orgId: A.orgId, deploymentId: A.deploymentId, replicaId: B.replicaId },
      check: revealsNothingOfB,
    },
  ],
  "jobs.get": ({ A, B }) => [
    { input: { orgId: B.orgId, jobId: B.jobId } },
    { input: { orgId: A.orgId, jobId: B.jobId } },
  ],
  "environments.get": ({ A, B }) => [
    { input: { orgId: B.orgId, hash: B.envHash } },
    { input: { orgId: A.orgId, hash: B.envHash } },
  ],
  "admin.organisations": () => [{ input: {} }],
  "admin.clusters": () => [{ input: {} }],
  "admin.deployments": () => [{ input: {} }],
  "admin.users": () => [{ input: {} }],
  "admin.overview": () => [{ input: {} }],
  "admin.queues": () => [{ input: undefined }],
  "admin.retryJob": ({ B }) => [{ input: { jobId: B.jobId } }],
  "admin.setClusterDriverConfig": ({ B }) => [
    { input: { clusterId: B.clusterId, driverConfig: { inCluster: true } } },
  ],
  "admin.usageByDay": ({ B }) => [{ input: {} }, { input: { orgId: B.orgId } }],
  "billing.plan": ({ A, B }) => [
    { input: { orgId: B.orgId } },
    { input: { orgId: A.orgId }, check: revealsNothingOfB },
  ],
  "billing.usageSummary": ({ A, B }) => [
    { input: { orgId: B.orgId } },
    { input: { orgId: A.orgId }, check: revealsNothingOfB },
  ],
  "billing.invoices": ({ A, B }) => [
    { input: { orgId: B.orgId } },
    { input: { orgId: A.orgId }, check: revealsNothingOfB },
  ],
  "billing.checkout": ({ B }) => [{ input: { orgId: B.orgId } }],
  "billing.portal": ({ B }) => [{ input: { orgId: B.orgId } }],
  "usage.byDay": ({ A, B }) => [
    { input: { orgId: B.orgId } },
    { input: { orgId: A.orgId }, check: revealsNothingOfB },
  ],
  "slo.summary": ({ A, B }) => [
    { input: { orgId: B.orgId, window: "24h" } },
    { input: { orgId: A.orgId, window: "30d" }, check: revealsNothingOfB },
  ],
  "slo.deployment": ({ A, B }) => [
    { input: { orgId: B.orgId, deploymentId: B.deploymentId } },
    { input: { orgId: A.orgId, deploymentId: B.deploymentId } },
  ],
  "slo.incidents": ({ A, B }) => [
    { input: { orgId: B.orgId } },
    { input: { orgId: A.orgId, deploymentId: B.deploymentId }, check: revealsNothingOfB },
  ],
  "metrics.deployment": ({ A, B }) => [
    { input: { orgId: B.orgId, deploymentId: B.deploymentId } },
    { input: { orgId: A.orgId, deploymentId: B.deploymentId } },
  ],
  "metrics.adminDeployments": () => [{ input: {} }],
  "metrics.clusterUsage": ({ A, B }) => [
    { input: { orgId: B.orgId } },
    { input: { orgId: A.orgId }, check: revealsNothingOfB },
  ],
};

/** Everything of org B, as JSON, to compare before and after the attack. */
async function snapshotB(): Promise<string> {
  const q = async (text: string) => (await env.db.execute(sql.raw(text))).rows;
  const B = w.B;
  const byOrg = [
    "memberships",
    "invitations",
    "api_keys",
    "clusters",
    "applications",
    "deployments",
    "revisions",
    "replicas",
    "replica_logs",
    "scaling_events",
    "jobs",
    "usage_hourly",
    "uptime_probes",
    "uptime_incidents",
    "billing_accounts",
  ];
  const out: Record<string, unknown> = {};
  for (const t of byOrg) out[t] = await q(`select * from ${t} where org_id = '${B.orgId}' order by 1, 2`);
  out.organisation = await q(`select * from organisations where id = '${B.orgId}'`);
  out.users = await q(`select * from users where id in ('${B.userId}', '${B.memberId}')`);
  out.environment = await q(`select * from environments where hash = '${B.envHash}'`);
  out.audit = await q(`select * from audit_log where org_id = '${B.orgId}' order by id`);
  return JSON.stringify(out);
}

function call(api: unknown, path: string, input: unknown): Promise<unknown> {
  const fn = path.split(".").reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], api) as (
    i: unknown,
  ) => Promise<unknown>;
  return fn(input);
}

beforeAll(async () => {
  env = await createTestEnv("apiiso");
  a = await env.user("alice@a.example");
  b = await env.user("bob@b.example");
  const member = await env.user("carol@b.example");

  const setUp = async (u: TestUser, envSpec: unknown) => {
    const { cluster } = await u.api.clusters.create({ orgId: u.orgId, name: "main" });
    const app = await u.api.applications.create({ orgId: u.orgId, clusterId: cluster.id, name: "app" });
    const first = await u.api.deployments.deploy({
      orgId: u.orgId,
      applicationId: app.id,
      name: "echo",
      config: { ...sampleConfig, environment: envSpec },
      code: sampleCode,
      prevVersion: 0,
    });
    return { cluster, app, first };
  };
  const A = await setUp(a, { kind: "pip", requirements: ["requests==2.31.0"] });
  const B = await setUp(b, { kind: "pip", requirements: ["torch==2.3.0"] });
  const second = await b.api.deployments.deploy({
    orgId: b.orgId,
    applicationId: B.app.id,
    name: "echo",
    config: { ...sampleConfig, numReplicas: 3, environment: { kind: "pip", requirements: ["torch==2.3.0"] } },
    code: sampleCode,
    prevVersion: 1,
  });
  const inv = await b.api.invitations.create({ orgId: b.orgId, email: "carol@b.example", role: "member" });
  await member.api.invitations.accept({ token: inv.token });
  const pending = await b.api.invitations.create({ orgId: b.orgId, email: "dave@b.example", role: "admin" });
  const key = await b.api.apiKeys.create({ orgId: b.orgId, name: "ci" });
  aKey = (await a.api.apiKeys.create({ orgId: a.orgId, name: "a-ci" })).key;

  // Rows the provisioner and runtimes would write, so the read procedures have B data to leak.
  const [replica] = await env.db
    .insert(replicas)
    .values({
      orgId: b.orgId,
      clusterId: B.cluster.id,
      deploymentId: B.first.deployment.id,
      revisionId: B.first.revision.id,
      address: "http://127.0.0.1:9999",
      state: "ready",
      resources: { cpus: 0.5, gpus: 0, memoryMb: 256 },
    })
    .returning();
  await env.db.insert(replicaLogs).values({
    orgId: b.orgId,
    deploymentId: B.first.deployment.id,
    replicaId: replica!.id,
    level: "error",
    message: "B's secret log line",
  });
  await env.db.insert(scalingEvents).values({
    orgId: b.orgId,
    deploymentId: B.first.deployment.id,
    fromReplicas: 2,
    toReplicas: 3,
    reason: "autoscale",
  });

  // Usage, probes, an incident and a Stripe customer of B, for the billing, usage and SLO procedures to leak.
  const hour = new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000);
  await env.db.insert(usageHourly).values({
    orgId: b.orgId,
    deploymentId: B.first.deployment.id,
    hour,
    requests: 1234,
    errors: 5,
    cpuSeconds: 60,
  });
  await env.db.insert(uptimeProbes).values({
    orgId: b.orgId,
    deploymentId: B.first.deployment.id,
    ok: false,
    error: "B's probe failure",
    at: new Date(),
  });
  await env.db.insert(uptimeIncidents).values({
    orgId: b.orgId,
    deploymentId: B.first.deployment.id,
    openedAt: new Date(),
    reason: "B's incident",
    failedProbes: 3,
  });
  await env.db.insert(billingAccounts).values({ orgId: b.orgId, stripeCustomerId: "cus_b_secret_customer" });

  w = {
    A: {
      orgId: a.orgId,
      clusterId: A.cluster.id,
      applicationId: A.app.id,
      deploymentId: A.first.deployment.id,
      revisionId: A.first.revision.id,
    },
    B: {
      orgId: b.orgId,
      userId: b.id,
      memberId: member.id,
      clusterId: B.cluster.id,
      applicationId: B.app.id,
      deploymentId: B.first.deployment.id,
      revisionId: B.first.revision.id,
      version: second.deployment.version,
      replicaId: replica!.id,
      jobId: second.jobId,
      envHash: B.first.revision.envHash,
      invitationId: pending.invitation.id,
      invitationToken: pending.token,
      apiKeyId: key.apiKey.id,
      apiKeyPrefix: key.apiKey.prefix,
      stripeCustomerId: "cus_b_secret_customer",
    },
  };
  env.jobs.clear();
});

afterAll(async () => {
  await env?.tdb.drop();
});

describe("tenant isolation", () => {
  it("has a fixture for every procedure of the router", () => {
    const procedures = Object.keys(appRouter._def.procedures).sort();
    expect(procedures.length).toBeGreaterThan(40);
    const missing = procedures.filter((p) => !(p in fixtures));
    expect(missing, "procedures without an isolation fixture").toEqual([]);
    const stale = Object.keys(fixtures).filter((p) => !procedures.includes(p));
    expect(stale, "fixtures for procedures that no longer exist").toEqual([]);
  });

  it("refuses or hides org B's objects from org A on every procedure, by session and by API key, changing nothing", async () => {
    const before = await snapshotB();
    // signOut ends the session the other calls use, so it runs last.
    const paths = Object.keys(appRouter._def.procedures).sort(
      (x, y) => Number(x === "auth.signOut") - Number(y === "auth.signOut"),
    );
    const outcomes: string[] = [];
    let expected = 0;
    for (const path of paths) {
      const cases = fixtures[path]?.(w) ?? [];
      expect(cases.length, path).toBeGreaterThan(0);
      expected += cases.length * 2;
      for (const [i, c] of cases.entries()) {
        for (const as of ["key", "session"] as const) {
          const api = as === "session" ? a.api : await env.caller({ authorization: `Bearer ${aKey}` });
          const label = `${path}#${i} as ${as}`;
          let result: unknown;
          let code: string | undefined;
          try {
            result = await call(api, path, typeof c.input === "function" ? c.input() : c.input);
          } catch (err) {
            code = (await failure(Promise.reject(err))).code;
          }
          if (c.check && code === undefined) {
            c.check(result);
            outcomes.push(`${label}: hidden`);
          } else {
            // An API key is not a user: user-level procedures answer UNAUTHENTICATED to it.
            const allowed = as === "key" ? [...REFUSED, "UNAUTHENTICATED"] : REFUSED;
            expect(allowed, `${label} answered ${code ?? "success"}`).toContain(code);
            outcomes.push(`${label}: ${code}`);
          }
        }
      }
    }
    expect(await snapshotB()).toBe(before);
    expect(env.jobs.enqueued.filter((j) => j.orgId === w.B.orgId)).toEqual([]);
    expect(outcomes).toHaveLength(expected);
  });
});
