import { defineConfig } from "vitest/config";

// One vitest run covers every package and app; integration tests talk to the real
// Postgres and Redis, each test file making its own database and key prefix.
export default defineConfig({
  test: {
    include: ["packages/*/test/**/*.test.ts", "apps/*/test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    fileParallelism: true,
    maxWorkers: 2,
  },
});
