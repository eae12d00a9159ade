import { createCaller, createSession, signUp } from "@tessera/api";
import type { ClusterDriver } from "@tessera/cluster";
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

/** Polls `probe` until it returns something truthy; fails after `ms` naming what it waited for. */
/**
 * Replica ports for the local drivers of this test worker. Drivers share out ports only within one
 * data directory, and vitest runs test files side by side: with a range of its own per worker, one
 * file's gateway can never reach another file's replica (or its port check) through a stale
 * routing table. Outside vitest (the benchmarks) a random range above the workers' ones.
 */
function workerPortRange(): { portRangeFrom: number; portRangeTo: number } {
  const pool = Number(process.env.VITEST_POOL_ID);
  const index = Number.isInteger(pool) && pool > 0 ? (pool - 1) % 16 : 16 + Math.floor(Math.random() * 32);
  const portRangeFrom = 20_000 + index * 250;
  return { portRangeFrom, portRangeTo: portRangeFrom + 249 };
}

/** `driverConfig` of a test's LocalDriver: the worker's ports, quick restarts, short drains. */
export function localDriverTestConfig(dataDir: string, overrides: Record<string, unknown> = {}) {
  return {
    dataDir,
    ...workerPortRange(),
    restartBackoffMs: 100,
    maxQuickCrashes: 2,
    drainTimeoutS: 2,
    ...overrides,
  };
}

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
