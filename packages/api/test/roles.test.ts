import { apiKeys, invitations, organisations } from "@tessera/db";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyApiKey } from "../src/index.js";
import { createTestEnv, failure, sampleCode, sampleConfig, type TestEnv, type TestUser } from "./helpers.js";

let env: TestEnv;
let owner: TestUser;
let admin: TestUser;
let member: TestUser;
let orgId: string;

async function invite(email: string, role: "owner" | "admin" | "member", by = owner) {
  return by.api.invitations.create({ orgId, email, role });
}

beforeAll(async () => {
  env = await createTestEnv("apiroles");
  owner = await env.user("owner@team.example");
  admin = await env.user("admin@team.example");
  member = await env.user("member@team.example");
  orgId = (await owner.api.orgs.create({ name: "Team", slug: "team" })).id;
});
afterAll(async () => {
  await env?.tdb.drop();
});

describe("invitations", () => {
  it("invites by email, looks up publicly, and accepts only for the invited address", async () => {
    const { invitation, token } = await invite("Admin@Team.example", "admin");
    expect(invitation).toMatchObject({ email: "admin@team.example", role: "admin", state: "pending" });
    expect(JSON.stringify(invitation)).not.toContain(token);

    const lookup = await (await env.caller(null)).invitations.lookup({ token });
    expect(lookup).toMatchObject({
      orgName: "Team",
      orgSlug: "team",
      email: "admin@team.example",
      role: "admin",
      state: "pending",
    });

    expect((await failure(member.api.invitations.accept({ token }))).code).toBe("FORBIDDEN");
    expect((await failure((await env.caller(null)).invitations.accept({ token }))).code).toBe(
      "UNAUTHENTICATED",
    );
    expect(await admin.api.invitations.accept({ token })).toMatchObject({ orgId, role: "admin" });
    expect((await failure(admin.api.invitations.accept({ token }))).code).toBe("CONFLICT");

    const m = await invite("member@team.example", "member");
    await member.api.invitations.accept({ token: m.token });
    const roles = Object.fromEntries(
      (await member.api.members.list({ orgId })).map((x) => [x.email, x.role]),
    );
    expect(roles).toEqual({
      "owner@team.example": "owner",
      "admin@team.example": "admin",
      "member@team.example": "member",
    });
  });

  it("refuses revoked and expired invitations, and inviting an existing member", async () => {
    const revoked = await invite("late@team.example", "member");
    await admin.api.invitations.revoke({ orgId, invitationId: revoked.invitation.id });
    const late = await env.user("late@team.example");
    expect((await failure(late.api.invitations.accept({ token: revoked.token }))).code).toBe("CONFLICT");
    expect(
      (await failure(admin.api.invitations.revoke({ orgId, invitationId: revoked.invitation.id }))).code,
    ).toBe("NOT_FOUND");

    const expired = await invite("late@team.example", "member");
    await env.db
      .update(invitations)
      .set({ expiresAt: new Date(Date.now() - 1000) })
      .where(eq(invitations.id, expired.invitation.id));
    const err = await failure(late.api.invitations.accept({ token: expired.token }));
    expect(err).toMatchObject({ code: "CONFLICT", message: "this invitation is expired" });

    expect((await failure(invite("member@team.example", "member"))).fieldErrors).toEqual({
      email: "already a member",
    });
    expect(
      (await failure((await env.caller(null)).invitations.lookup({ token: "no-such-token-at-all" }))).code,
    ).toBe("NOT_FOUND");
  });

  it("lets only owners invite owners, and members invite nobody", async () => {
    expect((await failure(invite("boss@team.example", "owner", admin))).code).toBe("FORBIDDEN");
    expect((await failure(invite("friend@team.example", "member", member))).code).toBe("FORBIDDEN");
    await invite("friend@team.example", "member", admin);
  });
});

describe("roles", () => {
  let clusterId: string;
  let applicationId: string;
  let deploymentId: string;

  it("lets members read but not create API keys, clusters or deploys", async () => {
    expect((await failure(member.api.apiKeys.create({ orgId, name: "x" }))).code).toBe("FORBIDDEN");
    expect((await failure(member.api.clusters.create({ orgId, name: "c" }))).code).toBe("FORBIDDEN");
    clusterId = (await admin.api.clusters.create({ orgId, name: "main" })).cluster.id;
    applicationId = (await admin.api.applications.create({ orgId, clusterId, name: "app" })).id;
    const d = await admin.api.deployments.deploy({
      orgId,
      applicationId,
      name: "echo",
      config: sampleConfig,
      code: sampleCode,
      prevVersion: 0,
    });
    deploymentId = d.deployment.id;
    expect(
      (
        await failure(
          member.api.deployments.deploy({
            orgId,
            applicationId,
            name: "echo",
            config: sampleConfig,
            code: sampleCode,
            prevVersion: 1,
          }),
        )
      ).code,
    ).toBe("FORBIDDEN");
    expect(await member.api.clusters.list({ orgId })).toHaveLength(1);
    expect((await member.api.deployments.get({ orgId, deploymentId })).version).toBe(1);
    expect(await member.api.apiKeys.list({ orgId })).toEqual([]);
  });

  it("lets admins but not members delete deployments", async () => {
    expect((await failure(member.api.deployments.delete({ orgId, deploymentId }))).code).toBe("FORBIDDEN");
    expect(
      (await failure(member.api.deployments.updateScaling({ orgId, deploymentId, numReplicas: 0 }))).code,
    ).toBe("FORBIDDEN");
    await admin.api.deployments.delete({ orgId, deploymentId });
    expect((await failure(member.api.deployments.get({ orgId, deploymentId }))).code).toBe("NOT_FOUND");
  });

  it("reserves role changes and org deletion for owners", async () => {
    expect((await failure(admin.api.members.setRole({ orgId, userId: member.id, role: "admin" }))).code).toBe(
      "FORBIDDEN",
    );
    expect((await failure(admin.api.orgs.delete({ orgId }))).code).toBe("FORBIDDEN");
    expect((await failure(admin.api.members.remove({ orgId, userId: owner.id }))).code).toBe("FORBIDDEN");
    expect((await failure(member.api.members.remove({ orgId, userId: admin.id }))).code).toBe("FORBIDDEN");
    await admin.api.orgs.update({ orgId, name: "Team Renamed" });
    expect((await owner.api.orgs.get({ orgId })).name).toBe("Team Renamed");
  });

  it("never leaves an organisation without an owner", async () => {
    expect((await failure(owner.api.members.leave({ orgId }))).code).toBe("CONFLICT");
    expect((await failure(owner.api.members.setRole({ orgId, userId: owner.id, role: "admin" }))).code).toBe(
      "CONFLICT",
    );
    expect((await failure(owner.api.members.remove({ orgId, userId: owner.id }))).code).toBe("CONFLICT");

    await owner.api.members.setRole({ orgId, userId: admin.id, role: "owner" });
    await owner.api.members.leave({ orgId });
    expect((await failure(owner.api.orgs.get({ orgId }))).code).toBe("NOT_FOUND");
    expect((await failure(admin.api.members.leave({ orgId }))).code).toBe("CONFLICT");
    await member.api.members.leave({ orgId });
    expect((await admin.api.members.list({ orgId })).map((m) => m.email).sort()).toEqual([
      "admin@team.example",
    ]);
  });

  it("deletes an organisation only after its clusters", async () => {
    const o = await admin.api.orgs.create({ name: "Scratch" });
    expect(o.slug).toBe("scratch");
    const { cluster } = await admin.api.clusters.create({ orgId: o.id, name: "c1" });
    expect((await failure(admin.api.orgs.delete({ orgId: o.id }))).code).toBe("CONFLICT");
    await admin.api.clusters.delete({ orgId: o.id, clusterId: cluster.id });
    await admin.api.orgs.delete({ orgId: o.id });
    expect((await admin.api.orgs.list()).map((x) => x.id)).not.toContain(o.id);
  });
});

describe("API keys", () => {
  it("shows a key once, stores only hash and prefix, authenticates as an org admin, and stops when revoked", async () => {
    const u = await env.user("keys@team.example");
    const other = await env.user("other@team.example");
    const { apiKey, key } = await u.api.apiKeys.create({ orgId: u.orgId, name: "ci" });
    expect(key).toMatch(new RegExp(`^tsk_${apiKey.prefix}_[A-Za-z0-9]{32}$`));
    expect(JSON.stringify(await u.api.apiKeys.list({ orgId: u.orgId }))).not.toContain(key);
    const [stored] = await env.db.select().from(apiKeys).where(eq(apiKeys.id, apiKey.id));
    expect(stored!.keyHash).not.toContain(key.slice(13));
    expect(stored!.lastUsedAt).toBeNull();

    const bot = await env.caller({ authorization: `Bearer ${key}` });
    expect(await bot.auth.whoami()).toEqual({
      kind: "apiKey",
      apiKeyId: apiKey.id,
      role: "admin",
      org: { id: u.orgId, slug: "keys", name: "keys's organisation" },
    });
    expect(await u.api.auth.whoami()).toMatchObject({
      kind: "user",
      userId: u.id,
      email: "keys@team.example",
    });
    expect(await (await env.caller(null)).auth.whoami()).toEqual({ kind: "anonymous" });
    const { cluster } = await bot.clusters.create({ orgId: u.orgId, name: "ci" });
    const app = await bot.applications.create({ orgId: u.orgId, clusterId: cluster.id, name: "svc" });
    const d = await bot.deployments.deploy({
      orgId: u.orgId,
      applicationId: app.id,
      name: "echo",
      config: sampleConfig,
      code: sampleCode,
      prevVersion: 0,
    });
    expect(d.revision.createdBy).toBeNull();
    const [used] = await env.db.select().from(apiKeys).where(eq(apiKeys.id, apiKey.id));
    expect(used!.lastUsedAt).not.toBeNull();

    // Admin of its own organisation only: no owner powers, no other orgs, no user-level calls.
    expect((await failure(bot.orgs.delete({ orgId: u.orgId }))).code).toBe("FORBIDDEN");
    expect((await failure(bot.clusters.list({ orgId: other.orgId }))).code).toBe("NOT_FOUND");
    expect((await failure(bot.auth.me())).code).toBe("UNAUTHENTICATED");
    expect((await failure(bot.orgs.create({ name: "x" }))).code).toBe("UNAUTHENTICATED");

    expect(await verifyApiKey(env.db, key)).toEqual({ apiKeyId: apiKey.id, orgId: u.orgId });
    expect(await verifyApiKey(env.db, `${key.slice(0, -1)}x`)).toBeNull();
    expect(await verifyApiKey(env.db, "tsk_garbage")).toBeNull();

    await u.api.apiKeys.revoke({ orgId: u.orgId, apiKeyId: apiKey.id });
    expect(await verifyApiKey(env.db, key)).toBeNull();
    // Gateways cache keys: the revocation is announced so they drop it at once.
    expect(env.notices).toContainEqual({ kind: "apiKeyRevoked", prefix: apiKey.prefix });
    const revoked = await env.caller({ authorization: `Bearer ${key}` });
    expect((await failure(revoked.clusters.list({ orgId: u.orgId }))).code).toBe("UNAUTHENTICATED");
    expect((await failure(u.api.apiKeys.revoke({ orgId: u.orgId, apiKeyId: apiKey.id }))).code).toBe(
      "NOT_FOUND",
    );
    expect((await u.api.apiKeys.list({ orgId: u.orgId }))[0]!.revokedAt).not.toBeNull();
  });
});

describe("organisation slugs", () => {
  it("never hands out or accepts a slug the console uses as a path", async () => {
    const derived = await owner.api.orgs.create({ name: "New" });
    const [row] = await env.db.select().from(organisations).where(eq(organisations.id, derived.id));
    expect(row!.slug).toBe("new-2");
    const refused = await failure(owner.api.orgs.create({ name: "Whatever", slug: "new" }));
    expect(refused.code).toBe("VALIDATION_FAILED");
    expect(refused.fieldErrors).toEqual({ slug: "is reserved" });
  });
});
