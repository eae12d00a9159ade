import type { AddressInfo } from "node:net";
import { createBillingMetrics } from "@tessera/billing";
import { createTestDatabase, type TestDatabase } from "@tessera/db/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMetricsServer } from "../src/metrics-server.js";

let tdb: TestDatabase;
let metrics: Awaited<ReturnType<typeof startMetricsServer>>;
let base: string;

beforeAll(async () => {
  tdb = await createTestDatabase("provmetrics");
  metrics = await startMetricsServer(0, "127.0.0.1");
  createBillingMetrics(metrics.registry, { db: tdb.db });
  base = `http://127.0.0.1:${(metrics.server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await metrics?.close();
  await tdb?.drop();
});

describe("provisioner metrics endpoint", () => {
  it("serves process and billing metrics in the Prometheus text format", async () => {
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/plain");
    const body = await res.text();
    expect(body).toContain("tessera_provisioner_process_cpu_seconds_total");
    expect(body).toContain("tessera_billing_job_runs_total");
  });

  it("answers /healthz for liveness probes and 404 elsewhere", async () => {
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const other = await fetch(`${base}/nope`);
    expect(other.status).toBe(404);
    expect(await other.json()).toMatchObject({ error: { code: "NOT_FOUND" } });
  });
});
