#!/usr/bin/env node
/**
 * Browser tests: builds the console (when its sources changed), starts it on a free port against
 * a fresh test database (plus the gateway and provisioner when they exist), runs every
 * `specs/*.spec.mjs` in Debian's Chromium through playwright-core, and prints
 * `N passed, N failed` as the last line. `node e2e/run.mjs <filter>` runs the tests whose name
 * contains the filter.
 */
import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { chromium } from "playwright-core";
import { tsImport } from "tsx/esm/api";
import { registered, SCREENSHOTS } from "./harness.mjs";

const platform = await tsImport("../scripts/platform.ts", import.meta.url);
const { createTestDatabase, testRedisPrefix } = await tsImport(
  "../packages/db/src/testing.ts",
  import.meta.url,
);

const filter = process.argv[2];
const LOCAL_DRIVER = join(import.meta.dirname, "../packages/cluster/src/local/driver.ts");
const TEST_TIMEOUT_MS = Number(process.env.E2E_TEST_TIMEOUT_MS ?? 180_000);
const ADMIN_EMAIL = "platform-admin@e2e.test";

const serviceLog = [];
const log = (name, line) => {
  serviceLog.push(`[${name}] ${line}`);
  if (process.env.E2E_VERBOSE) console.log(`[${name}] ${line}`);
};

let passed = 0;
let failed = 0;
const cleanups = [];

async function cleanup() {
  for (const fn of cleanups.reverse()) await fn().catch((err) => console.error(`cleanup: ${err.message}`));
}

async function main() {
  // Screenshots of this run only, so a FAILED-* file is never left over from an earlier one.
  rmSync(SCREENSHOTS, { recursive: true, force: true });
  mkdirSync(SCREENSHOTS, { recursive: true });
  if (platform.consoleBuildStale()) {
    console.log("==> building the console");
    await platform.buildConsole(log);
  }
  const tdb = await createTestDatabase("e2e");
  cleanups.push(() => tdb.drop());
  const env = {
    databaseUrl: tdb.url,
    redisUrl: process.env.REDIS_URL ?? "redis://127.0.0.1:6379",
    redisPrefix: testRedisPrefix("e2e"),
    dataDir: join(import.meta.dirname, "artifacts", "data"),
    consoleUrl: `http://127.0.0.1:${await platform.freePort()}`,
    gatewayUrl: `http://127.0.0.1:${await platform.freePort()}`,
    nextAuthSecret: "e2e-nextauth-secret-not-for-production",
    handleSecret: "e2e-handle-secret-not-for-production",
    extra: { TESSERA_ADMIN_EMAILS: ADMIN_EMAIL },
  };
  console.log(`==> starting the console on ${env.consoleUrl}`);
  const consoleProc = await platform.startConsole(env, log);
  cleanups.push(() => consoleProc.stop());
  const gateway = await platform.startGateway(env, log);
  if (gateway) cleanups.push(() => gateway.stop());
  const provisioner = platform.startProvisioner(env, log);
  if (provisioner) cleanups.push(() => provisioner.stop());

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  cleanups.push(() => browser.close());

  const specDir = join(import.meta.dirname, "specs");
  for (const f of readdirSync(specDir)
    .filter((f) => f.endsWith(".spec.mjs"))
    .sort())
    await import(pathToFileURL(join(specDir, f)).href);

  let counter = 0;
  for (const { name, fn } of registered) {
    if (filter && !name.includes(filter)) continue;
    const contexts = [];
    /** The fixture every test gets. */
    const t = {
      baseURL: env.consoleUrl,
      gatewayUrl: env.gatewayUrl,
      gatewayRunning: Boolean(gateway),
      provisionerRunning: Boolean(provisioner),
      /** Deploys can really serve: gateway, provisioner and the local cluster driver are all here. */
      platformServes: Boolean(gateway && provisioner && existsSync(LOCAL_DRIVER)),
      adminEmail: ADMIN_EMAIL,
      /** Raw SQL on the test database (to play the gateway's part when it is not running). */
      sql: (text, params) => tdb.pool.query(text, params),
      /** A fresh browser context (own cookies): one per user. */
      async newPage(opts = {}) {
        const ctx = await browser.newContext({ baseURL: env.consoleUrl, ...opts });
        ctx.setDefaultTimeout(20_000);
        contexts.push(ctx);
        return ctx.newPage();
      },
      async screenshot(page, label) {
        await page.screenshot({ path: join(SCREENSHOTS, `${label}.png`), fullPage: true });
      },
      /** An email nobody has used in this run. */
      email(prefix) {
        return `${prefix}-${process.pid}-${++counter}@e2e.test`;
      },
      /** Call a tRPC procedure over HTTP outside the browser (e.g. with an API key). */
      async trpc(path, { input, type = "query", headers = {} } = {}) {
        const url = new URL(`/api/trpc/${path}`, env.consoleUrl);
        let res;
        if (type === "query") {
          if (input !== undefined) url.searchParams.set("input", JSON.stringify(input));
          res = await fetch(url, { headers });
        } else {
          res = await fetch(url, {
            method: "POST",
            headers: { "content-type": "application/json", ...headers },
            body: JSON.stringify(input ?? null),
          });
        }
        return res.json();
      },
    };
    const started = Date.now();
    let timer;
    try {
      await Promise.race([
        fn(t),
        new Promise((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`timed out after ${TEST_TIMEOUT_MS / 1000}s`)),
            TEST_TIMEOUT_MS,
          );
        }),
      ]);
      passed++;
      console.log(`  ✓ ${name} (${((Date.now() - started) / 1000).toFixed(1)}s)`);
    } catch (err) {
      failed++;
      console.log(
        `  ✗ ${name}\n    ${String(err?.stack ?? err)
          .split("\n")
          .slice(0, 6)
          .join("\n    ")}`,
      );
      let i = 0;
      for (const ctx of contexts)
        for (const page of ctx.pages())
          await page
            .screenshot({
              path: join(SCREENSHOTS, `FAILED-${name.replace(/\W+/g, "-")}-${++i}.png`),
              fullPage: true,
            })
            .catch(() => undefined);
    } finally {
      clearTimeout(timer);
      for (const ctx of contexts) await ctx.close().catch(() => undefined);
    }
  }
}

// Interrupted (Ctrl-C, a CI timeout): still stop the services and drop the test database.
for (const signal of ["SIGINT", "SIGTERM"])
  process.on(signal, () => {
    console.log(`==> ${signal}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  });

try {
  await main();
} catch (err) {
  failed++;
  console.error(`e2e setup failed: ${err?.stack ?? err}`);
  console.error(serviceLog.slice(-40).join("\n"));
}
if (failed > 0 && !process.env.E2E_VERBOSE) {
  console.log("--- last service log lines ---");
  console.log(serviceLog.slice(-30).join("\n"));
}
await cleanup();
console.log(`screenshots: ${SCREENSHOTS}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
