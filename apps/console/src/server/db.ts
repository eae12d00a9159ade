import { connect, type Database } from "@tessera/db";

/**
 * One pool per server process. Next.js may evaluate this module more than once in development
 * (hot reload), so the pool is kept on `globalThis` instead of leaking a new one each time.
 */
const holder = globalThis as unknown as { __tesseraDb?: ReturnType<typeof connect> };

export function db(): Database {
  holder.__tesseraDb ??= connect(process.env.DATABASE_URL);
  return holder.__tesseraDb.db;
}
