import { randomBytes } from "node:crypto";
import pg from "pg";
import { connect, type DbHandle, runMigrations } from "./index.js";

/** Base server for test databases; every test file creates (and drops) its own database on it. */
export const TEST_SERVER_URL = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

export interface TestDatabase extends DbHandle {
  url: string;
  name: string;
  drop(): Promise<void>;
}

export async function createTestDatabase(label = "t"): Promise<TestDatabase> {
  const name = `tessera_test_${label
    .replace(/[^a-z0-9]/gi, "")
    .toLowerCase()
    .slice(0, 20)}_${randomBytes(5).toString("hex")}`;
  const admin = new pg.Client({ connectionString: TEST_SERVER_URL });
  await admin.connect();
  await admin.query(`create database "${name}"`);
  await admin.end();
  const url = new URL(TEST_SERVER_URL);
  url.pathname = `/${name}`;
  await runMigrations(url.toString());
  const handle = connect(url.toString(), 5);
  return {
    ...handle,
    url: url.toString(),
    name,
    async drop() {
      await handle.close().catch(() => {});
      const c = new pg.Client({ connectionString: TEST_SERVER_URL });
      await c.connect();
      await c.query(`drop database if exists "${name}" with (force)`);
      await c.end();
    },
  };
}

/** A Redis key prefix unique to one test run, so parallel runs never collide. */
export function testRedisPrefix(label = "t"): string {
  return `tessera-test:${label}:${randomBytes(5).toString("hex")}:`;
}
