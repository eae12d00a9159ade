import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { authSessions, users } from "@tessera/db";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createApiHandler,
  createSession,
  grantPlatformAdmin,
  oauthSignIn,
  revokeSession,
  signUp,
  validateSession,
  verifyCredentials,
} from "../src/index.js";
import { createTestEnv, failure, type TestEnv } from "./helpers.js";

let env: TestEnv;
beforeAll(async () => {
  env = await createTestEnv("apiauth");
});
afterAll(async () => {
  await env?.tdb.drop();
});

describe("sign-up and sign-in", () => {
  it("signs up with an argon2 hash and a personal organisation owned by the user", async () => {
    const { user, org } = await signUp(
      env.db,
      { email: "  Ada@Example.com ", password: "s3cret-enough", name: "Ada" },
      { adminEmails: [] },
    );
    expect(user.email).toBe("ada@example.com");
    expect(user.isPlatformAdmin).toBe(false);
    expect(org.slug).toBe("ada");
    const [row] = await env.db.select().from(users).where(eq(users.id, user.id));
    expect(row!.passwordHash).toMatch(/^\$argon2id\$/);
    expect(row!.passwordHash).not.toContain("s3cret-enough");

    const { sessionId } = await createSession(env.db, user.id);
    const me = await (await env.caller({ sessionId })).auth.me();
    expect(me.user.id).toBe(user.id);
    expect(me.orgs).toEqual([expect.objectContaining({ id: org.id, slug: "ada", role: "owner" })]);
  });

  it("makes the personal organisation slug unique", async () => {
    const a = await signUp(
      env.db,
      { email: "ada@other.org", password: "s3cret-enough" },
      { adminEmails: [] },
    );
    expect(a.org.slug).toBe("ada-2");
  });

  it("gives concurrent sign-ups with the same email local part distinct slugs", async () => {
    const results = await Promise.all(
      Array.from({ length: 5 }, (_, i) =>
        signUp(env.db, { email: `grace@host${i}.example`, password: "s3cret-enough" }, { adminEmails: [] }),
      ),
    );
    const slugs = results.map((r) => r.org.slug);
    expect(new Set(slugs).size).toBe(5);
    for (const s of slugs) expect(s).toMatch(/^grace(-[0-9a-f]+)?$/);
  });

  it("verifies credentials, rejecting a wrong password and an unknown email alike", async () => {
    expect((await verifyCredentials(env.db, "ADA@example.com", "s3cret-enough"))?.email).toBe(
      "ada@example.com",
    );
    expect(await verifyCredentials(env.db, "ada@example.com", "wrong-password")).toBeNull();
    expect(await verifyCredentials(env.db, "nobody@example.com", "s3cret-enough")).toBeNull();
    expect(await verifyCredentials(env.db, "ada@example.com", "")).toBeNull();
  });

  it("refuses a duplicate email with CONFLICT, also through the router", async () => {
    const err = await failure(signUp(env.db, { email: "ada@example.com", password: "another-pass" }));
    expect(err.code).toBe("CONFLICT");
    expect(err.fieldErrors).toEqual({ email: "already registered" });
    const anon = await env.caller(null);
    expect(
      (await failure(anon.auth.signUp({ email: "ADA@example.com", password: "another-pass" }))).code,
    ).toBe("CONFLICT");
  });

  it("gives field errors for a bad email or short password", async () => {
    const anon = await env.caller(null);
    const err = await failure(anon.auth.signUp({ email: "not-an-email", password: "short" }));
    expect(err.code).toBe("VALIDATION_FAILED");
    expect(err.fieldErrors).toEqual({
      email: "must be a valid email address",
      password: "at least 8 characters",
    });
  });

  it("makes TESSERA_ADMIN_EMAILS users platform admins, and grantPlatformAdmin others", async () => {
    const prev = process.env.TESSERA_ADMIN_EMAILS;
    process.env.TESSERA_ADMIN_EMAILS = "ops@example.com, root@example.com";
    try {
      const { user } = await signUp(env.db, { email: "Root@Example.com", password: "s3cret-enough" });
      expect(user.isPlatformAdmin).toBe(true);
    } finally {
      process.env.TESSERA_ADMIN_EMAILS = prev;
    }
    const u = await env.user("later-admin@example.com");
    expect((await failure(u.api.admin.users())).code).toBe("FORBIDDEN");
    expect((await grantPlatformAdmin(env.db, "LATER-admin@example.com")).isPlatformAdmin).toBe(true);
    // The caller re-reads the user per request, so the grant applies to the next one.
    const again = await env.caller({ sessionId: u.sessionId });
    const all = await again.admin.users({ search: "example.com" });
    expect(all.map((x) => x.email)).toContain("ada@example.com");
    expect((await failure(grantPlatformAdmin(env.db, "ghost@example.com"))).code).toBe("NOT_FOUND");
  });
});

describe("OAuth sign-in", () => {
  it("creates a passwordless user with a personal org once, then signs the identity in", async () => {
    const identity = {
      provider: "github",
      providerAccountId: "4242",
      email: "Octo@Example.com",
      name: "Octo",
      login: "octocat",
    };
    const [first, second] = await Promise.all([
      oauthSignIn(env.db, identity, { adminEmails: [] }),
      oauthSignIn(env.db, identity, { adminEmails: [] }),
    ]);
    expect(second!.id).toBe(first!.id);
    expect(first).toMatchObject({ email: "octo@example.com", name: "Octo", isPlatformAdmin: false });
    const { sessionId } = await createSession(env.db, first!.id);
    const me = await (await env.caller({ sessionId })).auth.me();
    expect(me.orgs).toEqual([expect.objectContaining({ slug: "octocat", role: "owner", personal: true })]);
    expect(await verifyCredentials(env.db, "octo@example.com", "")).toBeNull();
    expect((await oauthSignIn(env.db, { ...identity, email: "changed@example.com" })).id).toBe(first!.id);
  });

  it("refuses an identity whose email belongs to a password account, or that has no email", async () => {
    const taken = await failure(
      oauthSignIn(env.db, { provider: "github", providerAccountId: "1", email: "ada@example.com" }),
    );
    expect(taken.code).toBe("CONFLICT");
    expect(
      (await failure(oauthSignIn(env.db, { provider: "github", providerAccountId: "2", email: null }))).code,
    ).toBe("BAD_REQUEST");
  });
});

describe("sessions", () => {
  it("rejects an expired session", async () => {
    const u = await env.user("expiry@example.com");
    const { sessionId } = await createSession(env.db, u.id, -1);
    expect(await validateSession(env.db, sessionId)).toBeNull();
    const api = await env.caller({ sessionId });
    expect((await failure(api.auth.me())).code).toBe("UNAUTHENTICATED");
    expect((await failure(api.orgs.get({ orgId: u.orgId }))).code).toBe("UNAUTHENTICATED");
  });

  it("rejects a revoked session, and signOut revokes the calling one", async () => {
    const u = await env.user("revoke@example.com");
    expect((await validateSession(env.db, u.sessionId))?.userId).toBe(u.id);
    expect(await revokeSession(env.db, u.sessionId)).toBe(true);
    expect(await validateSession(env.db, u.sessionId)).toBeNull();
    expect((await failure((await env.caller({ sessionId: u.sessionId })).auth.me())).code).toBe(
      "UNAUTHENTICATED",
    );

    const { sessionId } = await createSession(env.db, u.id, 3600);
    const api = await env.caller({ sessionId });
    await api.auth.signOut();
    expect(await env.db.select().from(authSessions).where(eq(authSessions.id, sessionId))).toEqual([]);
    expect((await failure((await env.caller({ sessionId })).auth.me())).code).toBe("UNAUTHENTICATED");
  });

  it("treats a malformed session id as no session instead of a database error", async () => {
    expect(await validateSession(env.db, "not-a-uuid")).toBeNull();
    expect((await failure((await env.caller({ sessionId: "'; drop table users" })).auth.me())).code).toBe(
      "UNAUTHENTICATED",
    );
  });
});

describe("over HTTP", () => {
  const handler = () =>
    createApiHandler({
      db: env.db,
      jobs: env.jobs,
      endpoint: "/api/trpc",
      sessionIdOf: (req) => req.headers.get("x-test-session"),
    });
  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    handler()(
      new Request(`http://x/api/trpc/${path}`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify(body),
      }),
    );
  type ErrorJson = {
    error: {
      message: string;
      data: { code: string; fieldErrors: Record<string, string> | null; trpcCode: string };
    };
  };

  it("puts the Tessera code and field errors in data", async () => {
    const bad = await post("auth.signUp", { email: "x", password: "p" });
    expect(bad.status).toBe(400);
    const body = (await bad.json()) as ErrorJson;
    expect(body.error.data.code).toBe("VALIDATION_FAILED");
    expect(body.error.data.trpcCode).toBe("BAD_REQUEST");
    expect(body.error.data.fieldErrors?.password).toBe("at least 8 characters");

    const unauth = await handler()(new Request("http://x/api/trpc/auth.me"));
    expect(unauth.status).toBe(401);
    expect(((await unauth.json()) as ErrorJson).error.data.code).toBe("UNAUTHENTICATED");
  });

  it("authenticates by session or by bearer API key", async () => {
    const u = await env.user("http@example.com");
    const me = await handler()(
      new Request("http://x/api/trpc/auth.me", { headers: { "x-test-session": u.sessionId } }),
    );
    expect(me.status).toBe(200);
    expect(
      ((await me.json()) as { result: { data: { user: { email: string } } } }).result.data.user.email,
    ).toBe("http@example.com");

    const { key } = await u.api.apiKeys.create({ orgId: u.orgId, name: "cli" });
    const created = await post(
      "clusters.create",
      { orgId: u.orgId, name: "from-cli" },
      { authorization: `Bearer ${key}` },
    );
    expect(created.status).toBe(200);
    const forbidden = await post("orgs.delete", { orgId: u.orgId }, { authorization: `Bearer ${key}` });
    expect(forbidden.status).toBe(403);
    expect(((await forbidden.json()) as ErrorJson).error.data.code).toBe("FORBIDDEN");
    const wrong = await post(
      "clusters.create",
      { orgId: u.orgId, name: "x" },
      { authorization: "Bearer tsk_abcdefgh_0000000000000000000000000000000" },
    );
    expect(wrong.status).toBe(401);
  });
});

describe("platform admins", () => {
  it("grants admin from the CLI script and reads across organisations", async () => {
    const u = await env.user("operator@example.com");
    const other = await env.user("tenant@elsewhere.example");
    await other.api.clusters.create({ orgId: other.orgId, name: "theirs" });
    const run = (email: string) =>
      spawnSync(
        process.execPath,
        ["--import", "tsx", fileURLToPath(new URL("../src/bin/grant-admin.ts", import.meta.url)), email],
        {
          env: { ...process.env, DATABASE_URL: env.tdb.url },
          encoding: "utf8",
          timeout: 60_000,
        },
      );
    const ok = run("Operator@Example.com");
    expect(ok.stdout.trim()).toBe("operator@example.com is now a platform admin");
    expect(ok.status).toBe(0);
    const missing = run("nobody-here@example.com");
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain("NOT_FOUND");

    const admin = await env.caller({ sessionId: u.sessionId });
    const orgs = await admin.admin.organisations({ search: "tenant" });
    expect(orgs.map((o) => o.id)).toEqual([other.orgId]);
    expect(orgs[0]!.memberCount).toBe(1);
    expect((await admin.admin.clusters({ orgId: other.orgId })).map((c) => c.name)).toEqual(["theirs"]);
    expect(await admin.admin.deployments({ search: "no-such-thing" })).toEqual([]);
    expect((await admin.admin.users({ search: "elsewhere" })).map((x) => x.email)).toEqual([
      "tenant@elsewhere.example",
    ]);
    // Read-only across orgs: platform admins get no membership powers in other orgs.
    expect((await failure(admin.clusters.list({ orgId: other.orgId }))).code).toBe("NOT_FOUND");
  });
});
