import { FakeStripe } from "@tessera/billing/testing";
import { auditLog, deployments, jobs } from "@tessera/db";
import { asc, eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appRouter, billingOptionsFromEnv, createCaller } from "../src/index.js";
import { createTestEnv, failure, sampleCode, sampleConfig, type TestEnv } from "./helpers.js";

// rayServe.deploy imports the tenant's module to read its deployments: Debian's python has FastAPI.
process.env.TESSERA_RAY_INSPECT_PYTHON = process.env.TESSERA_TEST_RAY_PYTHON ?? "/usr/bin/python3";
const rayApp = {
  files: {
    "hello.py": [
      "from ray import serve",
      "",
      "@serve.deployment(num_replicas=1)",
      "class Hello:",
      "    async def __call__(self, request):",
      '        return "hello"',
      "",
      "app = Hello.bind()",
      "",
    ].join("\n"),
  },
};

let env: TestEnv;
let stripe: FakeStripe;
beforeAll(async () => {
  [env, stripe] = await Promise.all([createTestEnv("apiaudit"), new FakeStripe().start()]);
});
afterAll(async () => {
  await Promise.all([env?.tdb.drop(), stripe?.stop()]);
});

type Expected = { action: string; orgId: string | null; userId: string | null; targetId: string | null };

describe("audit log", () => {
  it("writes one row per successful state-changing procedure, naming who, org, what and target", async () => {
    const expected: Expected[] = [];
    const did = (action: string, orgId: string | null, userId: string | null, targetId: string | null) =>
      expected.push({ action, orgId, userId, targetId });

    const anon = await env.caller(null);
    const signed = await anon.auth.signUp({ email: "audit@example.com", password: "long-enough-pw" });
    did("auth.signUp", signed.org.id, signed.user.id, signed.user.id);
    const o = await env.user("owner@example.com");
    did("auth.signUp", o.orgId, o.id, o.id);
    const m = await env.user("member@example.com");
    did("auth.signUp", m.orgId, m.id, m.id);

    const org = await o.api.orgs.create({ name: "Audited" });
    did("orgs.create", org.id, o.id, org.id);
    const orgId = org.id;
    await o.api.orgs.update({ orgId, name: "Audited Inc" });
    did("orgs.update", orgId, o.id, orgId);

    const inv = await o.api.invitations.create({ orgId, email: m.email, role: "member" });
    did("invitations.create", orgId, o.id, inv.invitation.id);
    await m.api.invitations.accept({ token: inv.token });
    did("invitations.accept", orgId, m.id, inv.invitation.id);
    const inv2 = await o.api.invitations.create({ orgId, email: "nobody@example.com", role: "member" });
    did("invitations.create", orgId, o.id, inv2.invitation.id);
    await o.api.invitations.revoke({ orgId, invitationId: inv2.invitation.id });
    did("invitations.revoke", orgId, o.id, inv2.invitation.id);

    await o.api.members.setRole({ orgId, userId: m.id, role: "admin" });
    did("members.setRole", orgId, o.id, m.id);
    await o.api.members.remove({ orgId, userId: m.id });
    did("members.remove", orgId, o.id, m.id);
    const inv3 = await o.api.invitations.create({ orgId, email: m.email, role: "member" });
    did("invitations.create", orgId, o.id, inv3.invitation.id);
    await m.api.invitations.accept({ token: inv3.token });
    did("invitations.accept", orgId, m.id, inv3.invitation.id);
    await m.api.members.leave({ orgId });
    did("members.leave", orgId, m.id, m.id);

    const key = await o.api.apiKeys.create({ orgId, name: "ci" });
    did("apiKeys.create", orgId, o.id, key.apiKey.id);
    const bot = await env.caller({ authorization: `Bearer ${key.key}` });

    const { cluster } = await bot.clusters.create({ orgId, name: "main" });
    did("clusters.create", orgId, null, cluster.id);
    await o.api.clusters.update({
      orgId,
      clusterId: cluster.id,
      quota: { cpus: 2, memoryMb: 2048, gpus: 0, maxReplicas: 4 },
    });
    did("clusters.update", orgId, o.id, cluster.id);
    const app = await o.api.applications.create({ orgId, clusterId: cluster.id, name: "app" });
    did("applications.create", orgId, o.id, app.id);
    const d1 = await bot.deployments.deploy({
      orgId,
      applicationId: app.id,
      name: "echo",
      config: sampleConfig,
      code: sampleCode,
      prevVersion: 0,
    });
    did("deployments.deploy", orgId, null, d1.deployment.id);
    const deploymentId = d1.deployment.id;
    await o.api.deployments.deploy({
      orgId,
      applicationId: app.id,
      name: "echo",
      config: sampleConfig,
      code: sampleCode,
      prevVersion: 1,
    });
    did("deployments.deploy", orgId, o.id, deploymentId);
    await o.api.deployments.rollback({ orgId, deploymentId, revisionId: d1.revision.id, prevVersion: 2 });
    did("deployments.rollback", orgId, o.id, deploymentId);
    await o.api.deployments.updateScaling({ orgId, deploymentId, numReplicas: 1 });
    did("deployments.updateScaling", orgId, o.id, deploymentId);

    // The controller settles the rollout; then a canary is started, shifted, aborted, promoted.
    await env.db
      .update(deployments)
      .set({ liveRevisionId: sql`${deployments.desiredRevisionId}` })
      .where(eq(deployments.id, deploymentId));
    const canary = {
      orgId,
      deploymentId,
      config: sampleConfig,
      code: sampleCode,
      prevVersion: 3,
      percent: 10,
    };
    await o.api.traffic.deployCanary(canary);
    did("traffic.deployCanary", orgId, o.id, deploymentId);
    await o.api.traffic.setWeight({ orgId, deploymentId, percent: 25 });
    did("traffic.setWeight", orgId, o.id, deploymentId);
    await o.api.traffic.abort({ orgId, deploymentId });
    did("traffic.abort", orgId, o.id, deploymentId);
    await o.api.traffic.deployCanary(canary);
    did("traffic.deployCanary", orgId, o.id, deploymentId);
    await o.api.traffic.promote({ orgId, deploymentId, prevVersion: 3 });
    did("traffic.promote", orgId, o.id, deploymentId);
    const rayAppRow = await o.api.applications.create({ orgId, clusterId: cluster.id, name: "ray" });
    did("applications.create", orgId, o.id, rayAppRow.id);
    await o.api.rayServe.deploy({ orgId, applicationId: rayAppRow.id, entry: "hello:app", code: rayApp });
    did("rayServe.deploy", orgId, o.id, rayAppRow.id);
    await o.api.deployments.delete({ orgId, deploymentId });
    did("deployments.delete", orgId, o.id, deploymentId);
    await o.api.applications.delete({ orgId, applicationId: app.id });
    did("applications.delete", orgId, o.id, app.id);
    await o.api.applications.delete({ orgId, applicationId: rayAppRow.id });
    did("applications.delete", orgId, o.id, rayAppRow.id);
    await o.api.clusters.delete({ orgId, clusterId: cluster.id });
    did("clusters.delete", orgId, o.id, cluster.id);
    await o.api.apiKeys.revoke({ orgId, apiKeyId: key.apiKey.id });
    did("apiKeys.revoke", orgId, o.id, key.apiKey.id);

    // Failed mutations change nothing and leave no row.
    await failure(
      o.api.deployments.deploy({
        orgId,
        applicationId: app.id,
        name: "x",
        config: {},
        code: sampleCode,
        prevVersion: 0,
      }),
    );
    await failure(o.api.members.leave({ orgId }));

    const billing = billingOptionsFromEnv(env.db, {
      STRIPE_SECRET_KEY: stripe.secretKey,
      STRIPE_PRICE_IDS: "price_metered",
      STRIPE_API_URL: `http://127.0.0.1:${stripe.port}`,
    });
    const billed = await createCaller({
      db: env.db,
      jobs: env.jobs,
      auth: { sessionId: o.sessionId },
      billing,
    });
    await billed.billing.checkout({ orgId });
    did("billing.checkout", orgId, o.id, orgId);
    await billed.billing.portal({ orgId });
    did("billing.portal", orgId, o.id, orgId);

    // A platform admin re-runs a failed control job of the org.
    const ops = await env.user("ops@example.com", { adminEmails: ["ops@example.com"] });
    await env.db.update(jobs).set({ state: "failed", error: "boom" }).where(eq(jobs.id, d1.jobId));
    const retried = await ops.api.admin.retryJob({ jobId: d1.jobId });
    did("auth.signUp", ops.orgId, ops.id, ops.id);
    did("admin.retryJob", orgId, ops.id, retried.jobId);
    // ...and points a kubernetes cluster of the org at its API (audited without the kubeconfig).
    const { cluster: k8s } = await o.api.clusters.create({ orgId, name: "k8s", driver: "kubernetes" });
    did("clusters.create", orgId, o.id, k8s.id);
    await ops.api.admin.setClusterDriverConfig({
      clusterId: k8s.id,
      driverConfig: { kubeconfig: "/etc/tessera/kubeconfig-secret-path", registry: "r.example.com" },
    });
    did("admin.setClusterDriverConfig", orgId, ops.id, k8s.id);
    await o.api.clusters.delete({ orgId, clusterId: k8s.id });
    did("clusters.delete", orgId, o.id, k8s.id);

    await o.api.orgs.delete({ orgId });
    did("orgs.delete", orgId, o.id, orgId);
    await o.api.auth.signOut();
    did("auth.signOut", null, o.id, o.sessionId);

    const rows = await env.db.select().from(auditLog).orderBy(asc(auditLog.id));
    expect(rows.map(({ action, orgId, userId, targetId }) => ({ action, orgId, userId, targetId }))).toEqual(
      expected,
    );
    for (const r of rows) expect(r.at).toBeInstanceOf(Date);
    const configured = rows.find((r) => r.action === "admin.setClusterDriverConfig");
    expect(configured?.details).toMatchObject({ driverConfigKeys: ["kubeconfig", "registry"] });
    expect(JSON.stringify(configured?.details)).not.toContain("kubeconfig-secret-path");
    const byKey = rows.filter((r) => r.details?.apiKeyId === key.apiKey.id).map((r) => r.action);
    expect(byKey).toEqual(["clusters.create", "deployments.deploy"]);

    const mutations = Object.entries(appRouter._def.procedures)
      .filter(([, p]) => (p as unknown as { _def: { type: string } })._def.type === "mutation")
      .map(([path]) => path);
    const covered = new Set(rows.map((r) => r.action));
    expect(
      mutations.filter((p) => !covered.has(p)),
      "mutations this test does not exercise",
    ).toEqual([]);
  });
});
