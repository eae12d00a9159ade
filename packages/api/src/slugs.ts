import { randomBytes } from "node:crypto";
import { type Database, organisations } from "@tessera/db";
import { eq } from "drizzle-orm";

type Executor = Pick<Database, "select">;

/** Lower-case DNS-label form of any text (org names, email local parts); never empty. */
export function slugify(text: string): string {
  const s = text
    .normalize("NFKD")
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 48)
    .replace(/-+$/g, "");
  return s || "org";
}

/** Slugs the console uses as path segments next to `/orgs/{slug}` (e.g. `/orgs/new`). */
export const RESERVED_ORG_SLUGS: ReadonlySet<string> = new Set([
  "new",
  "admin",
  "api",
  "settings",
  "invitations",
]);

/**
 * A free organisation slug based on `text`: the plain form, then `-2` .. `-9`, then a random
 * suffix. A concurrent insert can still take it; callers insert and map the unique violation.
 */
export async function uniqueSlug(db: Executor, text: string): Promise<string> {
  const base = slugify(text);
  const candidates = [base, ...Array.from({ length: 8 }, (_, i) => `${base}-${i + 2}`)];
  for (const c of candidates) {
    if (RESERVED_ORG_SLUGS.has(c)) continue;
    const [hit] = await db
      .select({ id: organisations.id })
      .from(organisations)
      .where(eq(organisations.slug, c))
      .limit(1);
    if (!hit) return c;
  }
  return `${base}-${randomBytes(3).toString("hex")}`;
}
