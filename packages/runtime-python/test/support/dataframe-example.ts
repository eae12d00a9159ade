/** The dataframe example's behaviour, checked the same way through both runtimes. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  openStream,
  type ReplicaLaunch,
  send,
  startReplica,
  type TestReplica,
  waitFor,
} from "./replica-harness.js";

const ROWS = [
  { id: 1, city: "Oslo", temp: 3 },
  { id: 2, city: "Rome", temp: 18 },
  { id: 3, city: "Oslo", temp: 3 },
  { id: 4, city: "Lima", temp: null },
  { id: 5, city: "Rome", temp: 18 },
  { id: 1, city: "Oslo", temp: 3 },
];

export function dataframeExampleSuite(
  runtime: string,
  launch: (userConfig: Record<string, unknown>) => Promise<ReplicaLaunch>,
): void {
  describe(`examples/${runtime === "python" ? "python" : "ts"}-dataframe through the ${runtime} runtime`, () => {
    let replica: TestReplica;
    beforeAll(async () => {
      replica = await startReplica(await launch({ team: "analytics", limit: 3 }));
    });
    afterAll(() => replica.stop());

    it("deduplicates on all columns or on chosen ones, keeping first occurrences", async () => {
      const all = await send(replica.url, "/deduplicate", { body: { rows: ROWS } });
      expect(all.status).toBe(200);
      expect(all.json()).toEqual({ rows: ROWS.slice(0, 5), removed: 1 });
      const byCity = await send(replica.url, "/deduplicate", {
        body: { rows: ROWS, columns: ["city", "temp"] },
      });
      expect(byCity.json()).toEqual({ rows: [ROWS[0], ROWS[1], ROWS[3]], removed: 3 });
    });

    it("sorts by one or more columns, nulls last, optionally descending", async () => {
      const asc = await send(replica.url, "/sort", { body: { rows: ROWS.slice(0, 5), by: "temp" } });
      expect(asc.json().rows.map((r: { id: number }) => r.id)).toEqual([1, 3, 2, 5, 4]);
      const multi = await send(replica.url, "/sort", {
        body: { rows: ROWS.slice(0, 5), by: ["city", "id"], descending: true },
      });
      expect(multi.json().rows.map((r: { id: number }) => r.id)).toEqual([5, 2, 3, 1, 4]);
    });

    it("rejects malformed input with VALIDATION_FAILED", async () => {
      const noRows = await send(replica.url, "/deduplicate", { body: { columns: ["a"] } });
      expect(noRows.status).toBe(400);
      expect(noRows.json().error.code).toBe("VALIDATION_FAILED");
      const noBy = await send(replica.url, "/sort", { body: { rows: [] } });
      expect(noBy.status).toBe(400);
      expect(noBy.json().error.code).toBe("VALIDATION_FAILED");
    });

    it("describes the deployment and its user config", async () => {
      expect((await send(replica.url, "/info")).json()).toEqual({
        runtime,
        deployment: "dataframe",
        revision: "rev-7",
        replica: "replica-0",
        application: "analytics-app",
        config: { team: "analytics", limit: 3 },
      });
    });

    it("streams rows as server-sent events", async () => {
      const stream = await openStream(replica.url, "/rows/stream", { rows: ROWS.slice(0, 2) });
      const text = await stream.end();
      expect(text).toBe(
        `data: ${JSON.stringify(ROWS[0])}\n\ndata: ${JSON.stringify(ROWS[1])}\n\nevent: done\ndata: {"count":2}\n\n`,
      );
    });

    it("turns not ready when told to, for the self-healing tests", async () => {
      expect((await send(replica.url, "/-/ready")).status).toBe(200);
      expect((await send(replica.url, "/admin/health", { body: { healthy: false } })).json()).toEqual({
        healthy: false,
      });
      await waitFor(
        async () => (await send(replica.url, "/-/ready")).status === 503,
        "the replica to report not ready",
      );
      await send(replica.url, "/admin/health", { body: { healthy: true } });
      expect((await send(replica.url, "/-/ready")).status).toBe(200);
    });
  });
}

export const EXAMPLE_CONTRACT = {
  deployment: "dataframe",
  revision: "rev-7",
  replica: "replica-0",
  application: "analytics-app",
  maxBodyBytes: 1024 * 1024,
  exposeTracebacks: false,
  drainTimeoutS: 5,
  port: 0,
};
