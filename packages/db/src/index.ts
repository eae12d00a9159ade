import { fileURLToPath } from "node:url";
import { drizzle, type NodePgDatabase } from "drizzle-orm/node-postgres";
import { migrate } from "drizzle-orm/node-postgres/migrator";
import pg from "pg";
import * as schema from "./schema.js";

export * from "./schema.js";
export { schema };
export type Database = NodePgDatabase<typeof schema>;
/** The handle `Database.transaction` passes its callback. */
export type Transaction = Parameters<Parameters<Database["transaction"]>[0]>[0];

/** `drizzle/` at the repository root holds the generated SQL migrations. */
export const MIGRATIONS_DIR = fileURLToPath(new URL("../../../drizzle", import.meta.url));

export const DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tessera";

export interface DbHandle {
  db: Database;
  pool: pg.Pool;
  close(): Promise<void>;
}

export function connect(url = process.env.DATABASE_URL ?? DEFAULT_DATABASE_URL, max = 10): DbHandle {
  const pool = new pg.Pool({ connectionString: url, max });
  // An idle client losing its connection (database restart) must not crash the process.
  pool.on("error", (err) =>
    console.error(JSON.stringify({ level: "error", msg: "postgres pool error", err: err.message })),
  );
  const db = drizzle(pool, { schema });
  return { db, pool, close: () => pool.end() };
}

export async function runMigrations(url: string): Promise<void> {
  const handle = connect(url, 1);
  try {
    await migrate(handle.db, { migrationsFolder: MIGRATIONS_DIR });
  } finally {
    await handle.close();
  }
}

/** Create the database named in `url` if it does not exist (connects to `postgres` to do so). */
export async function ensureDatabase(url: string): Promise<void> {
  const target = new URL(url);
  const name = decodeURIComponent(target.pathname.slice(1));
  const admin = new URL(url);
  admin.pathname = "/postgres";
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  try {
    const { rowCount } = await client.query("select 1 from pg_database where datname = $1", [name]);
    if (!rowCount) await client.query(`create database "${name.replaceAll('"', '""')}"`);
  } catch (err) {
    // Two processes racing to create the same database: the loser sees a duplicate error.
    if ((err as { code?: string }).code !== "42P04" && (err as { code?: string }).code !== "23505") throw err;
  } finally {
    await client.end();
  }
}
