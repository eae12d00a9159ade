import type { StripeBilling } from "@tessera/billing/service";
import type { JobQueue, PlatformNotifier, QueueMonitor } from "@tessera/core";
import type { Database } from "@tessera/db";
import { type PublicUser, validateSession, verifyApiKey } from "./auth.js";

/**
 * Who is calling. A session user acts with their memberships; an API key acts as `admin` of its
 * own organisation only and can call no user-level procedure (auth.me, orgs.create, ...).
 */
export type Caller =
  | { kind: "user"; user: PublicUser; sessionId: string }
  | { kind: "apiKey"; apiKeyId: string; orgId: string }
  | { kind: "anonymous" };

/** What the HTTP layer hands over: a session id (from the next-auth JWT) or a raw Authorization header. */
export type AuthInput =
  | { sessionId: string }
  | { authorization: string | null | undefined }
  | { apiKey: string }
  | null
  | undefined;

/** Mutable per-call audit record (a server-side caller reuses one context for many calls); the audit middleware writes it after a successful mutation. */
export interface AuditDraft {
  orgId: string | null;
  targetId: string | null;
  details: Record<string, unknown>;
  /** Set by procedures that write their own audit row inside their transaction. */
  written: boolean;
}

export interface Context {
  db: Database;
  jobs: JobQueue;
  caller: Caller;
  /** Tells gateways about revoked keys etc.; failures are logged, never fail the call. */
  notify: PlatformNotifier;
  billing: BillingOptions;
  /** Queue depths for platform admins; null when the API runs without Redis access. */
  queues: QueueMonitor | null;
}

/**
 * Billing as this deployment of the platform runs it: Stripe (null: "not configured") and whether
 * plan limits refuse deploys. Local installs without Stripe run unlimited unless told otherwise,
 * since nobody could upgrade there.
 */
export interface BillingOptions {
  stripe: StripeBilling | null;
  enforcePlanLimits: boolean;
}

export const BILLING_DISABLED: BillingOptions = { stripe: null, enforcePlanLimits: false };

export interface CreateContextOptions {
  db: Database;
  jobs: JobQueue;
  auth?: AuthInput;
  notify?: PlatformNotifier;
  billing?: BillingOptions;
  queues?: QueueMonitor | null;
}

export function newAuditDraft(): AuditDraft {
  return { orgId: null, targetId: null, details: {}, written: false };
}

/** Resolves the caller once per request; invalid credentials leave an anonymous caller (UNAUTHENTICATED later). */
export async function createContext({
  db,
  jobs,
  auth,
  notify,
  billing,
  queues,
}: CreateContextOptions): Promise<Context> {
  return {
    db,
    jobs,
    caller: await resolveCaller(db, auth),
    notify: safeNotifier(notify),
    billing: billing ?? BILLING_DISABLED,
    queues: queues ?? null,
  };
}

function safeNotifier(notify: PlatformNotifier | undefined): PlatformNotifier {
  return async (notice) => {
    try {
      await notify?.(notice);
    } catch (err) {
      console.error(
        JSON.stringify({ level: "warn", msg: "platform notice not delivered", notice, err: String(err) }),
      );
    }
  };
}

export async function resolveCaller(db: Database, auth: AuthInput): Promise<Caller> {
  if (!auth) return { kind: "anonymous" };
  if ("sessionId" in auth) {
    const s = await validateSession(db, auth.sessionId);
    return s ? { kind: "user", user: s.user, sessionId: s.sessionId } : { kind: "anonymous" };
  }
  const key = "apiKey" in auth ? auth.apiKey : bearerToken(auth.authorization);
  if (!key) return { kind: "anonymous" };
  const k = await verifyApiKey(db, key);
  return k ? { kind: "apiKey", apiKeyId: k.apiKeyId, orgId: k.orgId } : { kind: "anonymous" };
}

export function bearerToken(header: string | null | undefined): string | null {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
  return m ? m[1]! : null;
}
