import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCaller, createSession, signUp } from "@tessera/api";
import {
  type ClusterDriver,
  isSameProcessAlive,
  type ProcessIdentity,
  processIdentity,
} from "@tessera/cluster";
import { redisKeys } from "@tessera/core";
import { createTestDatabase, type TestDatabase, testRedisPrefix } from "@tessera/db/testing";
import { BullJobQueue, createRedisNotifier } from "@tessera/jobs";
import { Redis } from "ioredis";
import { type Provisioner, type ProvisionerOptions, startProvisioner } from "../../src/index.js";

export const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";

/**
 * A platform for one test file: its own database and Redis prefix, the API with the real BullMQ
 * queue and notifier, and provisioners started against a given driver.
 */
export interface TestPlatform {
  tdb: TestDatabase;
  prefix: string;
  redis: Redis;
  queue: BullJobQueue;
  /** Deployment ids published on the routing-changed channel, in order. */
  routingNotices: string[];
  startProvisioner(overrides?: Partial<ProvisionerOptions>): Provisioner;
  /** A new user with a personal organisation; `platformAdmin` makes them a platform operator. */
  user(
    email: string,
    opts?: { platformAdmin?: boolean },
  ): Promise<{ orgId: string; api: Awaited<ReturnType<typeof createCaller>> }>;
  close(): Promise<void>;
}

/** `driver`: one driver for every provisioner of the test, or a factory making one per provisioner. */
export async function createTestPlatform(
  label: string,
  driver: ClusterDriver | (() => NonNullable<ProvisionerOptions["driverFor"]>),
): Promise<TestPlatform> {
  const tdb = await createTestDatabase(label);
  const prefix = testRedisPrefix(label);
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  const queue = new BullJobQueue({ db: tdb.db, redis, prefix, backoffMs: 50 });
  const notify = createRedisNotifier(redis, prefix);
  const routingNotices: string[] = [];
  const sub = redis.duplicate();
  sub.on("message", (_channel: string, message: string) => routingNotices.push(message));
  await sub.subscribe(redisKeys(prefix).routingChanged);
  const provisioners: Provisioner[] = [];
  const silent = () => {};

  return {
    tdb,
    prefix,
    redis,
    queue,
    routingNotices,
    startProvisioner(overrides = {}) {
      const p = startProvisioner({
        db: tdb.db,
        redisUrl: REDIS_URL,
        redisPrefix: prefix,
        driverFor: typeof driver === "function" ? driver() : () => driver,
        // A shared scripted driver has no gateway in front to wait for; real drivers keep the default.
        ...(typeof driver === "function" ? {} : { routingGraceMs: 0 }),
        reconcileIntervalMs: 300,
        autoscalerIntervalMs: 200,
        jobLockMs: 2000,
        jobRetryBackoffMs: 50,
        maxDrainS: 1,
        log: process.env.TEST_LOG ? undefined : silent,
        ...overrides,
      });
      provisioners.push(p);
      return p;
    },
    async user(email, opts = {}) {
      const { user, org } = await signUp(
        tdb.db,
        { email, password: "correct horse battery", name: email.split("@")[0] },
        { adminEmails: opts.platformAdmin ? [email] : [] },
      );
      const { sessionId } = await createSession(tdb.db, user.id);
      return {
        orgId: org.id,
        api: await createCaller({ db: tdb.db, jobs: queue, auth: { sessionId }, notify }),
      };
    },
    async close() {
      for (const p of provisioners) await p.close({ force: true }).catch(() => {});
      await sub.quit().catch(() => {});
      await queue.queue.obliterate({ force: true }).catch(() => {});
      await queue.close();
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length) await redis.del(...keys);
      redis.disconnect();
      await tdb.drop();
    },
  };
}

const PORT_RANGE_SIZE = 250;
const PORT_RANGES = 40; // 20000-29999
let claimedPortRange: { portRangeFrom: number; portRangeTo: number } | undefined;

/**
 * Replica ports of this test process's local drivers, claimed machine-wide. Drivers share out
 * ports only within one data directory, and test files run side by side (and whole test runs may
 * too): with a range of its own, one file's gateway can never reach another file's replica (or its
 * port check) through a stale routing table. A claim is a file naming the claiming process (pid and
 * start time, so a recycled pid does not hold it); a claim whose process is gone is taken over.
 */
function claimTestPortRange(): { portRangeFrom: number; portRangeTo: number } {
  if (claimedPortRange) return claimedPortRange;
  const dir = join(tmpdir(), "tessera-test-port-ranges");
  mkdirSync(dir, { recursive: true });
  const me = JSON.stringify(processIdentity(process.pid));
  for (let i = 0; i < PORT_RANGES; i++) {
    const file = join(dir, String(i));
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        writeFileSync(file, me, { flag: "wx" });
        const portRangeFrom = 20_000 + i * PORT_RANGE_SIZE;
        claimedPortRange = { portRangeFrom, portRangeTo: portRangeFrom + PORT_RANGE_SIZE - 1 };
        return claimedPortRange;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        if (claimHolderAlive(file)) break;
        rmSync(file, { force: true });
      }
    }
  }
  throw new Error(`all ${PORT_RANGES} test port ranges are claimed by running processes (see ${dir})`);
}

function claimHolderAlive(file: string): boolean {
  try {
    return isSameProcessAlive(JSON.parse(readFileSync(file, "utf8")) as ProcessIdentity);
  } catch {
    // Empty while its creator is still writing it; otherwise a leftover of another format.
    try {
      return Date.now() - statSync(file).mtimeMs < 10_000;
    } catch {
      return false;
    }
  }
}

/** `driverConfig` of a test's LocalDriver: the worker's ports, quick restarts, short drains. */
export function localDriverTestConfig(dataDir: string, overrides: Record<string, unknown> = {}) {
  return {
    dataDir,
    ...claimTestPortRange(),
    restartBackoffMs: 100,
    maxQuickCrashes: 2,
    drainTimeoutS: 2,
    ...overrides,
  };
}

/** Polls `probe` until it returns something truthy; fails after `ms` naming what it waited for. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  ms = 20_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
