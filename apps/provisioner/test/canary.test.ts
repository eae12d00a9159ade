import { deployments, jobs, replicas, revisions } from "@tessera/db";
import { and, eq, inArray } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Provisioner } from "../src/index.js";
import { createTestPlatform, type TestPlatform, waitFor } from "./support/platform.js";
import { ScriptedDriver } from "./support/scripted-driver.js";

/**
 * Traffic splitting in the controller: a canary started through the API runs next to the live
 * revision with its share of the replicas, follows weight shifts, and is promoted or aborted.
 */
let platform: TestPlatform;
let provisioner: Provisioner;
let api: Awaited<ReturnType<TestPlatform["user"]>>["api"];
let orgId: string;
let applicationId: string;

const config = {
  runtime: "python",
  entry: "handler:Echo",
  environment: { kind: "pip", requirements: ["numpy==1.26.4"] },
  resources: { cpus: 0.5, gpus: 0, memoryMb: 256 },
  numReplicas: 4,
};
const code = (body: string) => ({
  files: { "handler.py": `class Echo:\n    def __call__(self, body):\n        ${body}\n` },
});

beforeAll(async () => {
  platform = await createTestPlatform("canary", new ScriptedDriver());
  provisioner = platform.startProvisioner();
  await provisioner.ready;
  const u = await platform.user("canary-ops@example.com");
  api = u.api;
  orgId = u.orgId;
  const { cluster } = await api.clusters.create({ orgId, name: "main" });
  applicationId = (await api.applications.create({ orgId, clusterId: cluster.id, name: "app" })).id;
});
afterAll(async () => {
  await platform?.close();
});

const db = () => platform.tdb.db;

async function jobDone(jobId: string) {
  return waitFor(`job ${jobId} to finish`, async () => {
    const [row] = await db().select().from(jobs).where(eq(jobs.id, jobId));
    return row?.state === "succeeded" || row?.state === "failed" ? row : undefined;
  });
}

/** Ready replicas per revision id, once the counts are exactly `want` and nothing else runs. */
async function replicasSettleAt(deploymentId: string, want: Record<string, number>) {
  return waitFor(`replicas per revision to be ${JSON.stringify(want)}`, async () => {
    const rows = await db()
      .select()
      .from(replicas)
      .where(
        and(
          eq(replicas.deploymentId, deploymentId),
          inArray(replicas.state, ["starting", "ready", "draining"]),
        ),
      );
    const ready: Record<string, number> = {};
    for (const r of rows) if (r.state === "ready") ready[r.revisionId] = (ready[r.revisionId] ?? 0) + 1;
    const settled =
      rows.every((r) => r.state === "ready") &&
      Object.keys(want).length === Object.keys(ready).length &&
      Object.entries(want).every(([rev, n]) => ready[rev] === n);
    return settled ? ready : undefined;
  });
}

describe("canary replicas", () => {
  it("runs the canary's share next to the live revision, follows the weight, promotes it", async () => {
    const first = await api.deployments.deploy({
      orgId,
      applicationId,
      name: "promoted",
      config,
      code: code("return 1"),
      prevVersion: 0,
    });
    expect((await jobDone(first.jobId)).state).toBe("succeeded");
    const live = first.revision.id;
    await replicasSettleAt(first.deployment.id, { [live]: 4 });

    const canary = await api.traffic.deployCanary({
      orgId,
      deploymentId: first.deployment.id,
      config,
      code: code("return 2"),
      prevVersion: 1,
      percent: 25,
    });
    await replicasSettleAt(first.deployment.id, { [live]: 3, [canary.revision.id]: 1 });

    await api.traffic.setWeight({ orgId, deploymentId: first.deployment.id, percent: 50 });
    await replicasSettleAt(first.deployment.id, { [live]: 2, [canary.revision.id]: 2 });

    const promoted = await api.traffic.promote({ orgId, deploymentId: first.deployment.id, prevVersion: 1 });
    expect((await jobDone(promoted.jobId)).state).toBe("succeeded");
    await replicasSettleAt(first.deployment.id, { [canary.revision.id]: 4 });
    const [dep] = await db().select().from(deployments).where(eq(deployments.id, first.deployment.id));
    expect(dep).toMatchObject({ liveRevisionId: canary.revision.id, traffic: null, state: "ready" });
    const [rev] = await db().select().from(revisions).where(eq(revisions.id, canary.revision.id));
    expect(rev!.state).toBe("live");
  });

  it("aborting stops the canary's replicas and restores the live revision's count", async () => {
    const first = await api.deployments.deploy({
      orgId,
      applicationId,
      name: "aborted",
      config: { ...config, numReplicas: 2 },
      code: code("return 1"),
      prevVersion: 0,
    });
    expect((await jobDone(first.jobId)).state).toBe("succeeded");
    const live = first.revision.id;
    const canary = await api.traffic.deployCanary({
      orgId,
      deploymentId: first.deployment.id,
      config: { ...config, numReplicas: 2 },
      code: code("return 3"),
      prevVersion: 1,
      percent: 10,
    });
    // 10% of 2 rounds to none, but a running canary keeps one replica (pinned requests).
    await replicasSettleAt(first.deployment.id, { [live]: 2, [canary.revision.id]: 1 });
    await api.traffic.abort({ orgId, deploymentId: first.deployment.id });
    await replicasSettleAt(first.deployment.id, { [live]: 2 });
  });

  it("marks a crashing canary failed and drains it; abort then clears the split", async () => {
    const first = await api.deployments.deploy({
      orgId,
      applicationId,
      name: "crashing",
      config: { ...config, numReplicas: 2 },
      code: code("return 1"),
      prevVersion: 0,
    });
    expect((await jobDone(first.jobId)).state).toBe("succeeded");
    const canary = await api.traffic.deployCanary({
      orgId,
      deploymentId: first.deployment.id,
      config: { ...config, numReplicas: 2 },
      code: code("raise CRASH_ON_START"),
      prevVersion: 1,
      percent: 50,
    });
    const rev = await waitFor("the canary revision to be marked failed", async () => {
      const [row] = await db().select().from(revisions).where(eq(revisions.id, canary.revision.id));
      return row?.state === "failed" ? row : undefined;
    });
    expect(rev.failureReason).toBeTruthy();
    await replicasSettleAt(first.deployment.id, { [first.revision.id]: 2 });
    await api.traffic.abort({ orgId, deploymentId: first.deployment.id });
    const [dep] = await db().select().from(deployments).where(eq(deployments.id, first.deployment.id));
    expect(dep!.traffic).toBeNull();
    const [after] = await db().select().from(revisions).where(eq(revisions.id, canary.revision.id));
    expect(after).toMatchObject({ state: "failed", failureReason: rev.failureReason });
  });
});
