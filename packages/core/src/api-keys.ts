import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/**
 * API keys look like `tsk_<8 char prefix>_<32 char secret>`. The prefix is stored in clear so the
 * gateway finds the row by index and users recognise their keys; only a SHA-256 of the whole key
 * is stored. Keys carry 190 bits of entropy, so a fast hash is right here (unlike passwords).
 */
const KEY_RE = /^tsk_([a-z0-9]{8})_([A-Za-z0-9]{32})$/;
const ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";
const SECRET_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

function randomString(alphabet: string, length: number): string {
  const bytes = randomBytes(length);
  let out = "";
  for (let i = 0; i < length; i++) out += alphabet[bytes[i]! % alphabet.length];
  return out;
}

export function generateApiKey(): { key: string; prefix: string; hash: string } {
  const prefix = randomString(ALPHABET, 8);
  const key = `tsk_${prefix}_${randomString(SECRET_ALPHABET, 32)}`;
  return { key, prefix, hash: hashApiKey(key) };
}

export function hashApiKey(key: string): string {
  return createHash("sha256").update(key).digest("hex");
}

export function parseApiKey(key: string): { prefix: string } | null {
  const m = KEY_RE.exec(key);
  return m ? { prefix: m[1]! } : null;
}

export function apiKeyMatches(key: string, storedHash: string): boolean {
  const a = Buffer.from(hashApiKey(key), "hex");
  const b = Buffer.from(storedHash, "hex");
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Tokens for invitations and similar one-time links: random, stored hashed. */
export function generateToken(): { token: string; hash: string } {
  const token = randomBytes(24).toString("base64url");
  return { token, hash: hashApiKey(token) };
}
