import { hash as argonHash, verify as argonVerify } from "@node-rs/argon2";
import { apiKeyMatches, parseApiKey } from "@tessera/core";
import {
  apiKeys,
  auditLog,
  authAccounts,
  authSessions,
  type Database,
  memberships,
  organisations,
  users,
} from "@tessera/db";
import { and, eq, gt, isNull, sql } from "drizzle-orm";
import { z } from "zod";
import { apiError, uniqueViolation, validationError } from "./errors.js";
import { uniqueSlug } from "./slugs.js";

export const DEFAULT_SESSION_TTL_S = 30 * 24 * 3600;

export const email = z
  .string()
  .trim()
  .toLowerCase()
  .max(320, "at most 320 characters")
  .pipe(z.email("must be a valid email address"));
export const password = z.string().min(8, "at least 8 characters").max(200, "at most 200 characters");

export const signUpInput = z.object({
  email,
  password,
  name: z.string().trim().min(1).max(200).optional(),
});
export type SignUpInput = z.input<typeof signUpInput>;

export interface PublicUser {
  id: string;
  email: string;
  name: string | null;
  isPlatformAdmin: boolean;
  createdAt: Date;
}

const publicUserColumns = {
  id: users.id,
  email: users.email,
  name: users.name,
  isPlatformAdmin: users.isPlatformAdmin,
  createdAt: users.createdAt,
};

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (s: unknown): s is string => typeof s === "string" && UUID_RE.test(s);

export function hashPassword(plain: string): Promise<string> {
  return argonHash(plain);
}

/** A fixed hash to verify against when the email is unknown, so both paths cost the same time. */
let dummyHash: Promise<string> | undefined;

/** `TESSERA_ADMIN_EMAILS`: comma or whitespace separated; such users become platform admins on sign-up. */
export function adminEmailsFromEnv(env: NodeJS.ProcessEnv = process.env): string[] {
  return (env.TESSERA_ADMIN_EMAILS ?? "")
    .split(/[\s,]+/)
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
}

/**
 * Create a user with an argon2 password hash and their personal organisation (slug from the
 * email's local part, suffixed until unique), owner membership included, in one transaction.
 */
export async function signUp(
  db: Database,
  input: SignUpInput,
  opts: { adminEmails?: string[] } = {},
): Promise<{ user: PublicUser; org: { id: string; slug: string; name: string } }> {
  const parsed = signUpInput.safeParse(input);
  if (!parsed.success) throw validationError(parsed.error);
  const { email: addr, password: plain, name } = parsed.data;
  const admins = opts.adminEmails ?? adminEmailsFromEnv();
  const passwordHash = await hashPassword(plain);
  // A concurrent sign-up can take the derived org slug between our check and insert: try again.
  for (let attempt = 0; ; attempt++) {
    try {
      return await db.transaction(async (tx) => {
        const [user] = await tx
          .insert(users)
          .values({ email: addr, name: name ?? null, passwordHash, isPlatformAdmin: admins.includes(addr) })
          .returning(publicUserColumns);
        const slug = await uniqueSlug(tx, addr.split("@")[0] ?? "user");
        const [org] = await tx
          .insert(organisations)
          .values({ slug, name: name ? `${name}'s organisation` : slug, personal: true })
          .returning({ id: organisations.id, slug: organisations.slug, name: organisations.name });
        await tx.insert(memberships).values({ orgId: org!.id, userId: user!.id, role: "owner" });
        await tx.insert(auditLog).values({
          orgId: org!.id,
          userId: user!.id,
          action: "auth.signUp",
          targetId: user!.id,
          details: { email: addr, platformAdmin: user!.isPlatformAdmin },
        });
        return { user: user!, org: org! };
      });
    } catch (err) {
      const constraint = uniqueViolation(err);
      if (constraint === "users_email_unique") {
        throw apiError("CONFLICT", "an account with this email already exists", {
          fieldErrors: { email: "already registered" },
        });
      }
      if (constraint === "organisations_slug_unique" && attempt < 5) continue;
      throw err;
    }
  }
}

export interface OAuthIdentity {
  provider: string;
  providerAccountId: string;
  email: string | null | undefined;
  name?: string | null;
  /** Provider login (GitHub username): preferred as the personal org's slug. */
  login?: string | null;
}

/**
 * Map an OAuth identity (GitHub) to a user: a linked identity signs in its user; a new identity
 * with an unused email gets a user without a password plus a personal organisation, like
 * `signUp`. An email that already has an account is refused (`CONFLICT`) rather than linked: the
 * provider's email claim is not proof of owning that account. No email -> `BAD_REQUEST`.
 */
export async function oauthSignIn(
  db: Database,
  identity: OAuthIdentity,
  opts: { adminEmails?: string[] } = {},
): Promise<PublicUser> {
  const linkedUser = async () => {
    const [row] = await db
      .select(publicUserColumns)
      .from(authAccounts)
      .innerJoin(users, eq(users.id, authAccounts.userId))
      .where(
        and(
          eq(authAccounts.provider, identity.provider),
          eq(authAccounts.providerAccountId, identity.providerAccountId),
        ),
      )
      .limit(1);
    return row;
  };
  const linked = await linkedUser();
  if (linked) return linked;
  const addr = identity.email?.trim().toLowerCase();
  if (!addr || !email.safeParse(addr).success)
    throw apiError("BAD_REQUEST", `${identity.provider} did not share a usable email address`);
  const taken = () => apiError("CONFLICT", `an account with ${addr} exists; sign in with its password`);
  const admins = opts.adminEmails ?? adminEmailsFromEnv();
  for (let attempt = 0; ; attempt++) {
    try {
      return await db.transaction(async (tx) => {
        const [user] = await tx
          .insert(users)
          .values({
            email: addr,
            name: identity.name ?? null,
            passwordHash: null,
            isPlatformAdmin: admins.includes(addr),
          })
          .returning(publicUserColumns);
        const slug = await uniqueSlug(tx, identity.login ?? addr.split("@")[0] ?? "user");
        const [org] = await tx
          .insert(organisations)
          .values({ slug, name: identity.name ? `${identity.name}'s organisation` : slug, personal: true })
          .returning({ id: organisations.id });
        await tx.insert(memberships).values({ orgId: org!.id, userId: user!.id, role: "owner" });
        await tx.insert(authAccounts).values({
          userId: user!.id,
          provider: identity.provider,
          providerAccountId: identity.providerAccountId,
        });
        await tx.insert(auditLog).values({
          orgId: org!.id,
          userId: user!.id,
          action: "auth.signUp",
          targetId: user!.id,
          details: { email: addr, provider: identity.provider, platformAdmin: user!.isPlatformAdmin },
        });
        return user!;
      });
    } catch (err) {
      const constraint = uniqueViolation(err);
      if (!constraint) throw err;
      // A concurrent first sign-in of the same identity won: use its user.
      const raced = await linkedUser();
      if (raced) return raced;
      if (constraint === "users_email_unique") throw taken();
      if (attempt >= 5) throw err;
    }
  }
}

/** Returns the user when email and password match, else null (unknown email and wrong password look alike). */
export async function verifyCredentials(
  db: Database,
  emailAddr: string,
  plain: string,
): Promise<PublicUser | null> {
  const addr = typeof emailAddr === "string" ? emailAddr.trim().toLowerCase() : "";
  if (typeof plain !== "string" || plain.length === 0 || plain.length > 200) return null;
  const [row] = await db
    .select({ ...publicUserColumns, passwordHash: users.passwordHash })
    .from(users)
    .where(eq(users.email, addr))
    .limit(1);
  if (!row?.passwordHash) {
    dummyHash ??= argonHash("tessera-dummy-password");
    await argonVerify(await dummyHash, plain).catch(() => false);
    return null;
  }
  const ok = await argonVerify(row.passwordHash, plain).catch(() => false);
  if (!ok) return null;
  const { passwordHash: _omit, ...user } = row;
  return user;
}

export async function createSession(
  db: Database,
  userId: string,
  ttlSeconds = DEFAULT_SESSION_TTL_S,
): Promise<{ sessionId: string; userId: string; expiresAt: Date }> {
  const expiresAt = new Date(Date.now() + ttlSeconds * 1000);
  const [row] = await db
    .insert(authSessions)
    .values({ userId, expiresAt })
    .returning({ id: authSessions.id });
  return { sessionId: row!.id, userId, expiresAt };
}

/**
 * The server-side truth for a session: null when the row is gone (signed out), expired, or the id
 * is malformed. Touches `last_seen_at` so the console can show active sessions.
 */
export async function validateSession(
  db: Database,
  sessionId: string,
): Promise<{ sessionId: string; userId: string; expiresAt: Date; user: PublicUser } | null> {
  if (!isUuid(sessionId)) return null;
  const [row] = await db
    .select({
      user: publicUserColumns,
      expiresAt: authSessions.expiresAt,
      lastSeenAt: authSessions.lastSeenAt,
    })
    .from(authSessions)
    .innerJoin(users, eq(users.id, authSessions.userId))
    .where(and(eq(authSessions.id, sessionId), gt(authSessions.expiresAt, sql`now()`)))
    .limit(1);
  if (!row) return null;
  // At most one write a minute per session, not one per request.
  if (!row.lastSeenAt || Date.now() - row.lastSeenAt.getTime() > 60_000) {
    await db.update(authSessions).set({ lastSeenAt: sql`now()` }).where(eq(authSessions.id, sessionId));
  }
  return { sessionId, userId: row.user.id, expiresAt: row.expiresAt, user: row.user };
}

export async function revokeSession(db: Database, sessionId: string): Promise<boolean> {
  if (!isUuid(sessionId)) return false;
  const rows = await db
    .delete(authSessions)
    .where(eq(authSessions.id, sessionId))
    .returning({ id: authSessions.id });
  return rows.length > 0;
}

/** Sign out everywhere (e.g. after a password change). */
export async function revokeUserSessions(db: Database, userId: string): Promise<number> {
  const rows = await db
    .delete(authSessions)
    .where(eq(authSessions.userId, userId))
    .returning({ id: authSessions.id });
  return rows.length;
}

/**
 * Resolve a `tsk_...` key to its organisation: found by the clear prefix, compared by hash in
 * constant time, rejected once revoked. Records `last_used_at` (best effort, at most once a minute).
 */
export async function verifyApiKey(
  db: Database,
  key: string,
): Promise<{ apiKeyId: string; orgId: string } | null> {
  const parsed = typeof key === "string" ? parseApiKey(key) : null;
  if (!parsed) return null;
  const [row] = await db
    .select({
      id: apiKeys.id,
      orgId: apiKeys.orgId,
      keyHash: apiKeys.keyHash,
      lastUsedAt: apiKeys.lastUsedAt,
    })
    .from(apiKeys)
    .where(and(eq(apiKeys.prefix, parsed.prefix), isNull(apiKeys.revokedAt)))
    .limit(1);
  if (!row || !apiKeyMatches(key, row.keyHash)) return null;
  if (!row.lastUsedAt || Date.now() - row.lastUsedAt.getTime() > 60_000) {
    await db.update(apiKeys).set({ lastUsedAt: sql`now()` }).where(eq(apiKeys.id, row.id));
  }
  return { apiKeyId: row.id, orgId: row.orgId };
}

/** Make an existing user a platform admin (read-only access across organisations). */
export async function grantPlatformAdmin(db: Database, emailAddr: string): Promise<PublicUser> {
  const addr = emailAddr.trim().toLowerCase();
  const [user] = await db
    .update(users)
    .set({ isPlatformAdmin: true })
    .where(eq(users.email, addr))
    .returning(publicUserColumns);
  if (!user) throw apiError("NOT_FOUND", `no user with email ${addr}`);
  await db.insert(auditLog).values({
    orgId: null,
    userId: null,
    action: "admin.grantPlatformAdmin",
    targetId: user.id,
    details: { email: addr },
  });
  return user;
}
