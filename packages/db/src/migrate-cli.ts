import { DEFAULT_DATABASE_URL, ensureDatabase, runMigrations } from "./index.js";

const url = process.env.DATABASE_URL ?? DEFAULT_DATABASE_URL;
await ensureDatabase(url);
await runMigrations(url);
console.log(`migrations applied to ${new URL(url).pathname.slice(1)}`);
