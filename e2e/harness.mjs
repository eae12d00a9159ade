/**
 * The smallest test harness over playwright-core: specs register tests with `test(name, fn)`;
 * `run.mjs` runs them in order, each with fresh browser contexts, and screenshots every open
 * page when one fails.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";

export const registered = [];

/** Register a browser test: `fn(t)` gets the fixture `t` described in `run.mjs`. */
export function test(name, fn) {
  registered.push({ name, fn });
}

export const ARTIFACTS = join(import.meta.dirname, "artifacts");
export const SCREENSHOTS = join(ARTIFACTS, "screenshots");
mkdirSync(SCREENSHOTS, { recursive: true });

const DEFAULT_TIMEOUT_MS = 20_000;

/** Wait until the locator is visible (a condition with a deadline, never a fixed sleep). */
export async function expectVisible(locator, timeout = DEFAULT_TIMEOUT_MS) {
  await locator.first().waitFor({ state: "visible", timeout });
}

export async function expectHidden(locator, timeout = DEFAULT_TIMEOUT_MS) {
  await locator.first().waitFor({ state: "hidden", timeout });
}

/** Poll `probe` until it returns a truthy value; throws `what` after the deadline. */
export async function eventually(probe, what, timeout = DEFAULT_TIMEOUT_MS) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}
