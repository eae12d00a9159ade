import { apiKeyMatches, parseApiKey, TesseraError } from "@tessera/core";
import { apiKeys, type Database, organisations } from "@tessera/db";
import { and, eq, inArray, isNull, sql } from "drizzle-orm";
import { DB_CALL_TIMEOUT_MS, withTimeout } from "./deadline.js";
import type { Log } from "./log.js";

/** A key lookup is on a request's path: fail over to the cached verdict quickly. */
const LOOKUP_TIMEOUT_MS = 3_000;

/** Who an API key belongs to. */
export interface KeyIdentity {
  keyId: string;
  prefix: string;
  orgId: string;
  orgSlug: string;
}

interface CacheEntry {
  identity: KeyIdentity | null;
  expiresAt: number;
}

export interface ApiKeyVerifierOptions {
  positiveTtlMs?: number;
  negativeTtlMs?: number;
  maxEntries?: number;
  lastUsedFlushMs?: number;
  /** Deadline of database calls (default DB_CALL_TIMEOUT_MS; a key lookup gets at most 3 s). */
  dbTimeoutMs?: number;
  log: Log;
}

/** `Bearer <token>` (scheme case-insensitive), or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header || header.length < 8) return undefined;
  if (header.slice(0, 7).toLowerCase() !== "bearer ") return undefined;
  return header.slice(7).trim() || undefined;
}

/**
 * Verifies API keys against Postgres with a short-lived cache (valid and invalid keys alike), so
 * the hot path is a map lookup. Revocations arrive as `apiKeysChanged` notices and drop the key's
 * entries at once; the TTL bounds staleness if a notice is lost. `last_used_at` is written in
 * batches. When Postgres is down, a key seen before keeps working (the data plane outlives the
 * control plane); an unknown key gets UNAVAILABLE rather than a wrong 401.
 */
export class ApiKeyVerifier {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly pending = new Map<string, Promise<KeyIdentity | null>>();
  private readonly usedKeyIds = new Set<string>();
  /** Bumped by every invalidation: a lookup that started before one must not cache its answer. */
  private generation = 0;
  private readonly positiveTtlMs: number;
  private readonly negativeTtlMs: number;
  private readonly maxEntries: number;
  private readonly timer: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly db: Database,
    private readonly options: ApiKeyVerifierOptions,
  ) {
    this.positiveTtlMs = options.positiveTtlMs ?? 30_000;
    this.negativeTtlMs = options.negativeTtlMs ?? 5_000;
    this.maxEntries = options.maxEntries ?? 10_000;
    this.timer = setInterval(() => void this.flushLastUsed(), options.lastUsedFlushMs ?? 5_000);
    this.timer.unref();
  }

  /** The key's identity, null for an unknown/revoked/malformed key; synchronous on a cache hit. */
  verify(key: string): KeyIdentity | null | Promise<KeyIdentity | null> {
    const entry = this.cache.get(key);
    if (entry && entry.expiresAt > Date.now()) return this.used(entry.identity);
    if (!parseApiKey(key)) return null;
    let lookup = this.pending.get(key);
    if (!lookup) {
      lookup = this.lookup(key, entry).finally(() => this.pending.delete(key));
      this.pending.set(key, lookup);
    }
    return lookup.then((identity) => this.used(identity));
  }

  /** Forget cached answers for one key prefix, or all of them for `*`. */
  invalidate(prefix: string): void {
    this.generation++;
    if (prefix === "*") {
      this.cache.clear();
      return;
    }
    for (const [key, entry] of this.cache)
      if (entry.identity?.prefix === prefix || parseApiKey(key)?.prefix === prefix) this.cache.delete(key);
  }

  private used(identity: KeyIdentity | null): KeyIdentity | null {
    if (identity) this.usedKeyIds.add(identity.keyId);
    return identity;
  }

  private async lookup(key: string, stale: CacheEntry | undefined): Promise<KeyIdentity | null> {
    const prefix = parseApiKey(key)!.prefix;
    const generation = this.generation;
    let rows: { keyId: string; keyHash: string; orgId: string; orgSlug: string }[];
    try {
      const query = this.db
        .select({
          keyId: apiKeys.id,
          keyHash: apiKeys.keyHash,
          orgId: apiKeys.orgId,
          orgSlug: organisations.slug,
        })
        .from(apiKeys)
        .innerJoin(organisations, eq(organisations.id, apiKeys.orgId))
        .where(and(eq(apiKeys.prefix, prefix), isNull(apiKeys.revokedAt)));
      rows = await withTimeout(
        query,
        Math.min(LOOKUP_TIMEOUT_MS, this.options.dbTimeoutMs ?? LOOKUP_TIMEOUT_MS),
        "API key lookup",
      );
    } catch (err) {
      if (stale) {
        // Keep answering from the last verdict; ask the database again after a short pause.
        if (generation === this.generation) this.remember(key, stale.identity, this.negativeTtlMs);
        return stale.identity;
      }
      this.options.log("warn", "cannot verify an API key: database unreachable", { err: String(err) });
      throw new TesseraError("UNAVAILABLE", "cannot verify the API key right now; try again shortly");
    }
    const row = rows.find((r) => apiKeyMatches(key, r.keyHash));
    const identity = row ? { keyId: row.keyId, prefix, orgId: row.orgId, orgSlug: row.orgSlug } : null;
    if (generation === this.generation) this.remember(key, identity);
    return identity;
  }

  private remember(key: string, identity: KeyIdentity | null, ttlMs?: number): void {
    if (this.cache.size >= this.maxEntries) {
      // Maps iterate in insertion order: drop the oldest tenth.
      let drop = Math.ceil(this.maxEntries / 10);
      for (const k of this.cache.keys()) {
        this.cache.delete(k);
        if (--drop === 0) break;
      }
    }
    this.cache.delete(key);
    this.cache.set(key, {
      identity,
      expiresAt: Date.now() + (ttlMs ?? (identity ? this.positiveTtlMs : this.negativeTtlMs)),
    });
  }

  /** Writes `last_used_at` for the keys used since the last flush (one statement). */
  flushLastUsed(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      if (this.usedKeyIds.size === 0) return;
      const ids = [...this.usedKeyIds];
      this.usedKeyIds.clear();
      try {
        await withTimeout(
          this.db.update(apiKeys).set({ lastUsedAt: sql`now()` }).where(inArray(apiKeys.id, ids)),
          this.options.dbTimeoutMs ?? DB_CALL_TIMEOUT_MS,
          "recording API key use",
        );
      } catch (err) {
        for (const id of ids) this.usedKeyIds.add(id);
        this.options.log("warn", "could not record API key use; will retry", { err: String(err) });
      }
    });
    return this.flushing;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flushLastUsed();
  }
}
