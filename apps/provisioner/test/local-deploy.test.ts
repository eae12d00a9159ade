import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { type ClusterDriver, LocalDriver } from "@tessera/cluster";
import { deployments, jobs, replicaLogs, replicas, revisions } from "@tessera/db";
import { createGateway } from "@tessera/gateway";
import { and, eq, inArray } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DriverLogHooks, Provisioner } from "../src/index.js";
import {
  createTestPlatform,
  localDriverTestConfig,
  REDIS_URL,
  type TestPlatform,
  waitFor,
} from "./support/platform.js";

/**
 * The whole path with real processes: tRPC API -> BullMQ -> provisioner -> local driver -> python
 * and node runtimes serving the examples, answering HTTP.
 */
const REPO = resolve(import.meta.dirname, "../../..");
const example = (dir: string, file: string) => readFileSync(join(REPO, "examples", dir, file), "utf8");
const PYTHON = example("python-dataframe", "handler.py");
const TS = example("ts-dataframe", "handler.ts");

let dataDir: string;
let platform: TestPlatform;
let provisioner: Provisioner;
let drivers: LocalDriver[] = [];
let api: Awaited<ReturnType<TestPlatform["user"]>>["api"];
let orgId: string;
let clusterId: string;

/** A fresh LocalDriver per provisioner on the same data dir, as after a real restart. */
function localDriverFactory() {
  let driver: LocalDriver | undefined;
  return (_cluster: unknown, hooks: DriverLogHooks): ClusterDriver => {
    driver ??= new LocalDriver({
      driverConfig: localDriverTestConfig(dataDir),
      onLog: hooks.onLog,
      onError: () => {},
    });
    drivers.push(driver);
    return driver;
  };
}

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "tessera-prov-local-"));
  platform = await createTestPlatform("provlocal", localDriverFactory);
  provisioner = platform.startProvisioner();
  await provisioner.ready;
  const u = await platform.user("local@example.com");
  api = u.api;
  orgId = u.orgId;
  clusterId = (await api.clusters.create({ orgId, name: "local" })).cluster.id;
});

afterAll(async () => {
  await platform?.close();
  // Replicas outlive provisioners by design: stop what this test started.
  const last = new LocalDriver({ driverConfig: { dataDir }, onError: () => {} });
  await last.stopAllReplicas({ drainTimeoutS: 0 });
  await last.close();
  drivers = [];
  rmSync(dataDir, { recursive: true, force: true });
});

const db = () => platform.tdb.db;

async function jobDone(jobId: string) {
  return waitFor(
    `job ${jobId}`,
    async () => {
      const [row] = await db().select().from(jobs).where(eq(jobs.id, jobId));
      return row && (row.state === "succeeded" || row.state === "failed") ? row : undefined;
    },
    45_000,
  );
}

async function readyAddresses(deploymentId: string, revisionId?: string): Promise<string[]> {
  const rows = await db()
    .select()
    .from(replicas)
    .where(and(eq(replicas.deploymentId, deploymentId), eq(replicas.state, "ready")));
  return rows.filter((r) => !revisionId || r.revisionId === revisionId).map((r) => r.address!);
}

async function call(address: string, path: string, body?: unknown) {
  const res = await fetch(`${address}${path}`, {
    method: body === undefined ? "GET" : "POST",
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function deploy(
  app: string,
  name: string,
  config: Record<string, unknown>,
  files: Record<string, string>,
  prevVersion: number,
) {
  const applicationId =
    (await api.applications.list({ orgId })).find((a) => a.name === app)?.id ??
    (await api.applications.create({ orgId, clusterId, name: app })).id;
  return api.deployments.deploy({ orgId, applicationId, name, config, code: { files }, prevVersion });
}

const pythonConfig = {
  runtime: "python",
  entry: "handler:Dataframe",
  numReplicas: 1,
  userConfig: { team: "t" },
};

describe("deploying through the provisioner onto local processes", () => {
  let pyDep: string;
  let pyRev: string;

  it("deploys the python example and a replica answers", async () => {
    const r = await deploy("demo", "dataframe", pythonConfig, { "handler.py": PYTHON }, 0);
    expect((await jobDone(r.jobId)).state).toBe("succeeded");
    pyDep = r.deployment.id;
    pyRev = r.revision.id;
    const [address] = await readyAddresses(pyDep, pyRev);
    const info = await call(address!, "/info");
    expect(info.body).toMatchObject({ runtime: "python", revision: pyRev, config: { team: "t" } });
    const dedup = await call(address!, "/deduplicate", { rows: [{ a: 1 }, { a: 1 }, { a: 2 }] });
    expect(dedup.body).toEqual({ rows: [{ a: 1 }, { a: 2 }], removed: 1 });
  });

  it("deploys the TypeScript example", async () => {
    const r = await deploy(
      "demo-ts",
      "dataframe-ts",
      { runtime: "node", entry: "handler.ts:Dataframe", numReplicas: 1 },
      { "handler.ts": TS },
      0,
    );
    expect((await jobDone(r.jobId)).state).toBe("succeeded");
    const [address] = await readyAddresses(r.deployment.id);
    const sorted = await call(address!, "/sort", { rows: [{ a: 2 }, { a: 1 }], by: "a" });
    expect(sorted.body).toEqual({ rows: [{ a: 1 }, { a: 2 }] });
  });

  it("rolls out new code: the new revision answers, the old replica stops", async () => {
    const [oldAddress] = await readyAddresses(pyDep, pyRev);
    const v2 = PYTHON.replace('"runtime": "python",', '"runtime": "python", "v": 2,');
    const r = await deploy("demo", "dataframe", pythonConfig, { "handler.py": v2 }, 1);
    expect((await jobDone(r.jobId)).state).toBe("succeeded");
    const [address] = await readyAddresses(pyDep, r.revision.id);
    expect((await call(address!, "/info")).body).toMatchObject({ v: 2, revision: r.revision.id });
    await waitFor("old replica stopped", async () => {
      const old = await db().select().from(replicas).where(eq(replicas.revisionId, pyRev));
      return old.every((x) => x.state === "stopped");
    });
    expect(address).not.toBe(oldAddress);
    pyRev = r.revision.id;
  });

  it("keeps serving the old code when new code crashes, with the reason and its logs", async () => {
    const r = await deploy(
      "demo",
      "dataframe",
      pythonConfig,
      {
        "handler.py":
          'class Dataframe:\n    def __init__(self, config):\n        raise RuntimeError("bad deploy on purpose")\n',
      },
      2,
    );
    expect((await jobDone(r.jobId)).state).toBe("failed");
    const [rev] = await db().select().from(revisions).where(eq(revisions.id, r.revision.id));
    expect(rev!.state).toBe("failed");
    expect(rev!.failureReason).toContain("bad deploy on purpose");
    const [dep] = await db().select().from(deployments).where(eq(deployments.id, pyDep));
    expect(dep).toMatchObject({ liveRevisionId: pyRev, version: 2 });
    const [address] = await readyAddresses(pyDep, pyRev);
    expect((await call(address!, "/info")).body).toMatchObject({ v: 2 });
    const failedReplicas = await db()
      .select({ id: replicas.id })
      .from(replicas)
      .where(eq(replicas.revisionId, r.revision.id));
    await waitFor("the crash in replica_logs", async () => {
      const lines = await db()
        .select()
        .from(replicaLogs)
        .where(
          inArray(
            replicaLogs.replicaId,
            failedReplicas.map((x) => x.id),
          ),
        );
      // The runtime logs JSON lines; the traceback may sit in a field rather than the message.
      return lines.some(
        (l) => JSON.stringify([l.message, l.fields]).includes("bad deploy on purpose") && l.orgId === orgId,
      );
    });
  });

  it("brings a killed replica back", async () => {
    const [row] = await db()
      .select()
      .from(replicas)
      .where(and(eq(replicas.deploymentId, pyDep), eq(replicas.state, "ready")));
    const driver = drivers.at(-1)!;
    const proc = await driver.replicaProcess(clusterId, row!.id);
    process.kill(proc!.pid, "SIGKILL");
    const back = await waitFor("replica serving again", async () => {
      const ready = await db()
        .select()
        .from(replicas)
        .where(and(eq(replicas.deploymentId, pyDep), eq(replicas.state, "ready")));
      const again = ready.find((x) => x.id !== row!.id || x.restarts > row!.restarts);
      return again && (await call(again.address!, "/info").catch(() => null))?.status === 200
        ? again
        : undefined;
    });
    expect(back.revisionId).toBe(pyRev);
  });

  it("replaces a replica whose readiness keeps failing", async () => {
    const r = await deploy(
      "demo",
      "watched",
      { ...pythonConfig, healthCheck: { periodS: 1, timeoutS: 0.5, failureThreshold: 1 } },
      { "handler.py": PYTHON },
      0,
    );
    expect((await jobDone(r.jobId)).state).toBe("succeeded");
    const [sick] = await db()
      .select()
      .from(replicas)
      .where(and(eq(replicas.deploymentId, r.deployment.id), eq(replicas.state, "ready")));
    expect((await call(sick!.address!, "/admin/health", { healthy: false })).body).toEqual({
      healthy: false,
    });
    const replacement = await waitFor("a healthy replacement", async () => {
      const [ready] = await readyAddresses(r.deployment.id);
      return ready && ready !== sick!.address ? ready : undefined;
    });
    expect((await call(replacement, "/info")).status).toBe(200);
    const [gone] = await db().select().from(replicas).where(eq(replicas.id, sick!.id));
    expect(gone!.state).toBe("failed");
    expect(gone!.stateReason).toMatch(/^failed readiness checks for over 1\.5s/);
  });

  it("adopts running replicas after a provisioner restart, and finishes a deploy it was in", async () => {
    const before = await readyAddresses(pyDep, pyRev);
    const v3 = PYTHON.replace('"runtime": "python",', '"runtime": "python", "v": 3,');
    const r = await deploy("demo", "dataframe", pythonConfig, { "handler.py": v3 }, 2);
    await waitFor("rollout under way", async () => {
      const [rev] = await db().select().from(revisions).where(eq(revisions.id, r.revision.id));
      return rev!.state === "starting";
    });
    await provisioner.close({ force: true });
    // The old revision's replica kept serving while no provisioner ran.
    expect((await call(before[0]!, "/info")).body).toMatchObject({ v: 2 });
    provisioner = platform.startProvisioner();
    await provisioner.ready;
    await waitFor(
      "v3 live",
      async () => {
        const [dep] = await db().select().from(deployments).where(eq(deployments.id, pyDep));
        return dep!.liveRevisionId === r.revision.id;
      },
      45_000,
    );
    const [address] = await readyAddresses(pyDep, r.revision.id);
    expect((await call(address!, "/info")).body).toMatchObject({ v: 3 });
    expect((await jobDone(r.jobId)).state).toBe("succeeded");
  });

  it("serves through the gateway without a failed request during a rolling update", async () => {
    const gateway = await createGateway({
      db: db(),
      redisUrl: REDIS_URL,
      redisPrefix: platform.prefix,
      log: () => {},
    });
    try {
      const { key } = await api.apiKeys.create({ orgId, name: "rollout" });
      const org = await api.orgs.get({ orgId });
      const get = async () => {
        const res = await fetch(`${gateway.url}/v1/${org.slug}/demo/info`, {
          headers: { authorization: `Bearer ${key}` },
        });
        return { status: res.status, body: (await res.json()) as Record<string, unknown> };
      };
      await waitFor("the gateway routes to the live replica", async () => (await get()).status === 200);
      const [dep] = await db().select().from(deployments).where(eq(deployments.id, pyDep));
      const v5 = PYTHON.replace('"runtime": "python",', '"runtime": "python", "v": 5,');
      const r = await deploy(
        "demo",
        "dataframe",
        { ...pythonConfig, numReplicas: 2 },
        { "handler.py": v5 },
        dep!.version,
      );
      const answers: { status: number; body: Record<string, unknown> }[] = [];
      let finished = false;
      const done = jobDone(r.jobId).finally(() => {
        finished = true;
      });
      while (!finished) answers.push(await get());
      expect((await done).state).toBe("succeeded");
      await waitFor("the new code answers through the gateway", async () => (await get()).body.v === 5);
      expect(answers.length).toBeGreaterThan(0);
      expect(answers.filter((a) => a.status !== 200)).toEqual([]);
    } finally {
      await gateway.close();
    }
  });

  it("stops the replicas of a deleted deployment", async () => {
    const [address] = await readyAddresses(pyDep);
    const r = await api.deployments.delete({ orgId, deploymentId: pyDep });
    expect((await jobDone(r.jobId)).state).toBe("succeeded");
    expect(await readyAddresses(pyDep)).toEqual([]);
    await expect(fetch(`${address}/info`)).rejects.toThrow();
  });
});
