import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ClusterDriver, LocalDriver } from "@tessera/cluster";
import { replicas } from "@tessera/db";
import { createGateway, type Gateway, type GatewayOptions } from "@tessera/gateway";
import { and, eq } from "drizzle-orm";
import type { DriverLogHooks, ProvisionerOptions } from "../../src/index.js";
import {
  createTestPlatform,
  localDriverTestConfig,
  REDIS_URL,
  type TestPlatform,
  waitFor,
} from "./platform.js";

/**
 * The whole product in one process, every piece real: the tRPC API enqueues on BullMQ, a
 * provisioner runs handlers as local processes (LocalDriver), and requests come in through the
 * gateway with an API key. Shared by the end-to-end test and `pnpm bench autoscaling`.
 */
export interface LocalStack {
  platform: TestPlatform;
  gateway: Gateway;
  dataDir: string;
  /** The provisioner's local driver, once the first cluster has been provisioned. */
  driver(): LocalDriver | undefined;
  /** A signed-up user with an API key and a cluster. */
  tenant(email: string): Promise<Tenant>;
  /** Stops gateway, provisioner and every replica process, and drops database and Redis keys. */
  close(): Promise<void>;
}

export type Api = Awaited<ReturnType<TestPlatform["user"]>>["api"];
export interface Tenant {
  api: Api;
  orgId: string;
  slug: string;
  key: string;
  clusterId: string;
  /** The stack's gateway, where `send` goes. */
  gatewayUrl: string;
}

export async function startLocalStack(
  label: string,
  overrides: { provisioner?: Partial<ProvisionerOptions>; gateway?: Partial<GatewayOptions> } = {},
): Promise<LocalStack> {
  const handleSecret = `${label}-handle-secret`;
  const dataDir = mkdtempSync(join(tmpdir(), `tessera-${label}-`));
  let driver: LocalDriver | undefined;
  const platform = await createTestPlatform(
    label,
    () =>
      (_cluster: unknown, hooks: DriverLogHooks): ClusterDriver => {
        driver ??= new LocalDriver({
          driverConfig: localDriverTestConfig(dataDir, { maxQuickCrashes: 3, drainTimeoutS: 5 }),
          onLog: hooks.onLog,
          onError: () => {},
        });
        return driver;
      },
  );
  const gateway = await createGateway({
    db: platform.tdb.db,
    redisUrl: REDIS_URL,
    redisPrefix: platform.prefix,
    port: 0,
    handleSecret,
    coldStartTimeoutS: 60,
    routingRefreshMs: 1000,
    loadReportMs: 250,
    log: process.env.TEST_LOG ? undefined : () => {},
    ...overrides.gateway,
  });
  const provisioner = platform.startProvisioner({
    handles: { secret: handleSecret, gatewayUrl: gateway.url },
    maxDrainS: 5,
    ...overrides.provisioner,
  });
  await provisioner.ready;
  const tenants: Tenant[] = [];

  return {
    platform,
    gateway,
    dataDir,
    driver: () => driver,
    async tenant(email) {
      const { api, orgId } = await platform.user(email);
      const slug = (await api.orgs.list()).find((o) => o.id === orgId)!.slug;
      const { key } = await api.apiKeys.create({ orgId, name: "ci" });
      const clusterId = (await api.clusters.create({ orgId, name: "main" })).cluster.id;
      const t = { api, orgId, slug, key, clusterId, gatewayUrl: gateway.url };
      tenants.push(t);
      return t;
    },
    async close() {
      await gateway.close();
      await platform.close();
      // Replicas outlive a closed provisioner on purpose (a restart adopts them): stop them here.
      const last = new LocalDriver({ driverConfig: { dataDir }, onError: () => {} });
      await last.stopAllReplicas({ drainTimeoutS: 0 });
      await last.close();
      await driver?.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** One request through the gateway, like `curl -H "Authorization: Bearer $KEY"`. */
export async function send(
  t: Pick<Tenant, "slug" | "key" | "gatewayUrl">,
  app: string,
  path: string,
  body?: unknown,
) {
  const res = await fetch(`${t.gatewayUrl}/v1/${t.slug}/${app}${path}`, {
    method: body === undefined ? "GET" : "POST",
    headers: { authorization: `Bearer ${t.key}`, "content-type": "application/json" },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = { raw: text };
  }
  return { status: res.status, body: json };
}

/** Deploys `files` as deployment `name` of application `app` (created on first use). */
export async function deploy(
  t: Tenant,
  app: string,
  name: string,
  config: Record<string, unknown>,
  files: Record<string, string>,
) {
  const applicationId =
    (await t.api.applications.list({ orgId: t.orgId })).find((a) => a.name === app)?.id ??
    (await t.api.applications.create({ orgId: t.orgId, clusterId: t.clusterId, name: app })).id;
  const existing = (await t.api.deployments.list({ orgId: t.orgId, applicationId })).find(
    (d) => d.name === name,
  );
  return t.api.deployments.deploy({
    orgId: t.orgId,
    applicationId,
    name,
    config,
    code: { files },
    prevVersion: existing?.version ?? 0,
  });
}

export async function revisionState(t: Tenant, deploymentId: string, revisionId: string) {
  const revs = await t.api.deployments.revisions({ orgId: t.orgId, deploymentId });
  return revs.find((r) => r.id === revisionId);
}

export async function waitLive(t: Tenant, deploymentId: string, revisionId: string, ms = 90_000) {
  return waitFor(
    `revision ${revisionId} live`,
    async () => {
      const rev = await revisionState(t, deploymentId, revisionId);
      if (rev?.state === "failed" || rev?.state === "rolled_back")
        throw new Error(`revision failed: ${rev.failureReason}`);
      return rev?.state === "live" ? rev : undefined;
    },
    ms,
  );
}

/** Waits until the revision has failed or been rolled back, and returns it. */
export async function waitFailed(t: Tenant, deploymentId: string, revisionId: string, ms = 90_000) {
  return waitFor(
    `revision ${revisionId} failed`,
    async () => {
      const rev = await revisionState(t, deploymentId, revisionId);
      return rev?.state === "failed" || rev?.state === "rolled_back" ? rev : undefined;
    },
    ms,
  );
}

export async function readyReplicaCount(stack: Pick<LocalStack, "platform">, deploymentId: string) {
  const rows = await stack.platform.tdb.db
    .select()
    .from(replicas)
    .where(and(eq(replicas.deploymentId, deploymentId), eq(replicas.state, "ready")));
  return rows.length;
}

/** Sends requests back to back from `concurrency` workers until stopped; counts what failed. */
export function continuousLoad(call: () => Promise<{ status: number }>, concurrency = 2) {
  let running = true;
  const failures: number[] = [];
  let sent = 0;
  const workers = Array.from({ length: concurrency }, async () => {
    while (running) {
      const started = Date.now();
      const { status } = await call().catch(() => ({ status: 0 }));
      sent++;
      if (status !== 200) failures.push(status);
      const ms = Date.now() - started;
      if (ms > 5000) console.warn(`continuousLoad: a request took ${ms} ms (status ${status})`);
    }
  });
  return {
    get sent() {
      return sent;
    },
    async stop() {
      running = false;
      await Promise.all(workers);
      return { sent, failures };
    },
  };
}
