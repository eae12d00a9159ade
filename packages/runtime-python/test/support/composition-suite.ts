/**
 * Composition behaviour every runtime must show: handles (through a token-checking handle
 * ingress), streaming through handles, request-id propagation, cancellation, typed errors, and
 * request batching. Run by the python and node runtime tests against their own `composition`
 * fixture (same classes and routes in both languages).
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { replicaHandleEnv, runtimeEnv } from "@tessera/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HandleIngress, type IngressApplication } from "./handle-ingress.js";
import {
  openStream,
  type ReplicaLaunch,
  send,
  startReplica,
  type TestReplica,
  waitFor,
} from "./replica-harness.js";

export type CompositionClass = "Words" | "Front" | "Batched" | "NoInit";

export interface CompositionRuntime {
  name: string;
  launch(
    cls: CompositionClass,
    opts: { userConfig: Record<string, unknown>; env: Record<string, string> },
  ): Promise<ReplicaLaunch>;
}

/** The contract environment of one fixture replica, its handle variables included. */
export function compositionEnv(
  cls: CompositionClass,
  codeDir: string,
  entry: string,
  opts: { userConfig: Record<string, unknown>; env: Record<string, string> },
): Record<string, string> {
  return {
    ...runtimeEnv({
      port: 0,
      codeDir,
      entry,
      userConfig: opts.userConfig,
      deployment: cls.toLowerCase(),
      revision: "rev-1",
      replica: `${cls.toLowerCase()}-1`,
      application: "shop",
      maxBodyBytes: 1024 * 1024,
      exposeTracebacks: false,
      drainTimeoutS: 5,
    }),
    ...opts.env,
  };
}

const SECRET = "handle-secret-for-tests";
const SHOP: IngressApplication = {
  orgId: "11111111-1111-4111-8111-111111111111",
  orgSlug: "acme",
  applicationId: "22222222-2222-4222-8222-222222222222",
  appName: "shop",
  deployments: {},
};
const OTHER_ORG = {
  orgId: "33333333-3333-4333-8333-333333333333",
  applicationId: "44444444-4444-4444-8444-444444444444",
};

/** Opens a request and returns a function that hangs up on it (the client going away). */
function openAndAbandon(base: string, path: string, body: unknown): () => void {
  const payload = Buffer.from(JSON.stringify(body));
  const req = httpRequest(`${base}${path}`, {
    method: "POST",
    agent: false,
    headers: { "content-type": "application/json", "content-length": String(payload.length) },
  });
  req.on("error", () => {});
  req.end(payload);
  return () => req.destroy();
}

function sseData(text: string): string[] {
  return text
    .split("\n\n")
    .filter((block) => block.trim())
    .map((block) => block.trim());
}

export function compositionSuite(runtime: CompositionRuntime): void {
  describe(`${runtime.name} runtime: composition`, () => {
    const markerDir = mkdtempSync(join(tmpdir(), "tessera-composition-"));
    const ingress = new HandleIngress(SECRET, [SHOP]);
    const replicas: TestReplica[] = [];
    let front: TestReplica;
    let intruder: TestReplica;
    let words: TestReplica;
    let batched: TestReplica;

    const start = async (cls: CompositionClass, env: Record<string, string> = {}) => {
      const r = await startReplica(await runtime.launch(cls, { userConfig: { markerDir }, env }));
      replicas.push(r);
      if (r.exitCode !== undefined) throw new Error(`${cls} did not start:\n${r.rawLines.join("\n")}`);
      return r;
    };
    const marker = (name: string) => existsSync(join(markerDir, name));

    beforeAll(async () => {
      await ingress.start();
      const shopEnv = replicaHandleEnv({ gatewayUrl: ingress.url, secret: SECRET, ...SHOP });
      // A replica of another organisation that points its handles at acme's application.
      const intruderEnv = {
        ...replicaHandleEnv({ gatewayUrl: ingress.url, secret: SECRET, ...SHOP, ...OTHER_ORG }),
      };
      [words, front, intruder, batched] = await Promise.all([
        start("Words", shopEnv),
        start("Front", shopEnv),
        start("Front", intruderEnv),
        start("Batched"),
      ]);
      SHOP.deployments = { words: words.url, front: front.url };
    }, 60_000);
    afterAll(async () => {
      await Promise.all(replicas.map((r) => r.stop()));
      await ingress.close();
      rmSync(markerDir, { recursive: true, force: true });
    });

    describe("handles", () => {
      it("call another deployment through the ingress, from async and sync handler code", async () => {
        for (const path of ["/chain", "/chain-sync"]) {
          const r = await send(front.url, path, { body: { text: "hello handles" } });
          expect(r.status, r.text).toBe(200);
          expect(r.json().text).toBe("HELLO HANDLES");
        }
        expect(ingress.hits.filter((h) => h.deployment === "words" && h.path === "/upper").length).toBe(2);
      });

      it("propagate the request id to every hop, also from concurrent calls", async () => {
        const r = await send(front.url, "/chain", {
          body: { text: "x" },
          headers: { "x-request-id": "trace-123" },
        });
        expect(r.headers["x-request-id"]).toBe("trace-123");
        expect(r.json().requestId).toBe("trace-123");
        expect(ingress.hits.some((h) => h.requestId === "trace-123")).toBe(true);
        const fan = await send(front.url, "/fanout", {
          body: { a: "left", b: "right" },
          headers: { "x-request-id": "trace-fan" },
        });
        expect(fan.json()).toEqual({ a: "LEFT", b: "RIGHT", ids: ["trace-fan", "trace-fan"] });
        const who = await send(front.url, "/whoami", { headers: { "x-request-id": "trace-who" } });
        expect(who.json()).toEqual({
          mine: "trace-who",
          callee: { requestId: "trace-who", context: "trace-who" },
        });
      });

      it("surface callee errors as typed exceptions; uncaught they answer 502 UPSTREAM_ERROR", async () => {
        const caught = await send(front.url, "/caught", { body: {} });
        expect(caught.status).toBe(200);
        expect(caught.json()).toMatchObject({ status: 422, code: "VALIDATION_FAILED", deployment: "words" });
        expect(caught.json().message).toContain("not today");
        const uncaught = await send(front.url, "/uncaught", { body: {} });
        expect(uncaught.status).toBe(502);
        expect(uncaught.json().error.code).toBe("UPSTREAM_ERROR");
        expect(uncaught.json().error.message).toContain("not today");
        const missing = await send(front.url, "/missing", { body: {} });
        expect(missing.status).toBe(502);
        expect(missing.json().error.message).toMatch(/404/);
      });

      it("pass query strings, in the route and as a query option", async () => {
        const r = await send(front.url, "/query");
        expect(r.status, r.text).toBe(200);
        expect(r.json()).toEqual({ a: ["1"], b: ["two words"], c: ["3", "4"] });
      });

      it("cannot reach another organisation's application", async () => {
        const before = ingress.hits.length;
        const r = await send(intruder.url, "/chain", { body: { text: "let me in" } });
        expect(r.status).toBe(502);
        expect(r.json().error.message).toContain("FORBIDDEN");
        expect(ingress.hits.length).toBe(before);
      });

      it("are given to handler classes without __init__", async () => {
        const r = await start("NoInit");
        const hello = await send(r.url, "/hello");
        expect(hello.status, r.rawLines.join("\n")).toBe(200);
        expect(hello.json()).toEqual({ hello: "world", hasHandles: true });
      });
    });

    describe("streaming through handles", () => {
      it("relays SSE events (named ones unchanged), from async and sync handler code", async () => {
        for (const path of ["/relay", "/relay-sync"]) {
          const r = await send(front.url, path, { body: { text: "one two three" } });
          expect(r.status, r.text).toBe(200);
          expect(r.headers["content-type"]).toContain("text/event-stream");
          expect(sseData(r.text)).toEqual([
            "data: one",
            "data: two",
            "data: three",
            "event: done\ndata: end",
          ]);
        }
      });

      it("delivers the first item before the callee has finished", async () => {
        const stream = await openStream(front.url, "/relay-gated", { gate: "relay-gate" });
        expect(await stream.until("data: first")).not.toContain("second");
        writeFileSync(join(markerDir, "relay-gate"), "");
        expect(await stream.end()).toContain("data: second");
      });

      it("raises a callee's mid-stream failure as a HandleError after the items before it", async () => {
        const r = await send(front.url, "/relay-failing", { body: {} });
        expect(r.json().got).toEqual(["one"]);
        expect(r.json().error).toContain("stream broke");
      });
    });

    describe("cancellation", () => {
      for (const [path, what] of [
        ["/hang", "an async handler"],
        ["/hang-sync", "a sync handler"],
        ["/hang-stream", "a streaming handler"],
      ] as const) {
        it(`a client disconnect cancels the downstream call of ${what}`, async () => {
          const tag = path.slice(1);
          const hangUp = openAndAbandon(front.url, path, { tag });
          await waitFor(() => marker(`started-${tag}`), `the callee to start (${tag})`);
          hangUp();
          await waitFor(() => marker(`cancelled-${tag}`), `the callee to be cancelled (${tag})`);
          await front.waitLog(
            (l) => l.msg === "client disconnected: request cancelled" && l.path === path,
            "the caller to log the cancellation",
          );
        });
      }
    });

    describe("batching", () => {
      it("collects concurrent calls into one list call, up to max_batch_size", async () => {
        // The batch waits 30 s for company: only a full batch of 5 explains a prompt answer.
        const replies = await Promise.all(
          Array.from({ length: 10 }, (_, i) => send(batched.url, "/fill", { body: { x: i } })),
        );
        expect(replies.map((r) => r.json().batchSize)).toEqual(Array(10).fill(5));
      });

      it("flushes a partial batch after batch_wait_timeout_s", async () => {
        const r = await send(batched.url, "/score", { body: { x: 21 } });
        expect(r.json()).toEqual({ x: 21, double: 42, batchSize: 1 });
      });

      it("fans results back to their callers; a per-item error fails only its caller", async () => {
        const calls = (await send(batched.url, "/calls")).json().calls;
        const replies = await Promise.all(
          [1, 2, 3, 4].map((x) => send(batched.url, "/score", { body: { x, bad: x === 3 } })),
        );
        expect(replies.map((r) => r.status)).toEqual([200, 200, 422, 200]);
        expect(replies[2]!.json().error.message).toContain("bad item 3");
        for (const i of [0, 1, 3])
          expect(replies[i]!.json()).toMatchObject({ x: i + 1, double: 2 * (i + 1) });
        const sizes = replies.filter((r) => r.status === 200).map((r) => r.json().batchSize as number);
        expect(Math.max(...sizes)).toBeLessThanOrEqual(4);
        const batches = (await send(batched.url, "/calls")).json().calls - calls;
        expect(batches).toBeGreaterThanOrEqual(1);
        expect(batches).toBeLessThanOrEqual(4);
      });

      it("batches a route method itself, running a synchronous batch function off the event loop", async () => {
        const replies = await Promise.all(
          [1, 2, 3].map((x) => send(batched.url, "/direct", { body: { x } })),
        );
        expect(replies.map((r) => r.json())).toEqual(
          // python runs a synchronous batch function in a worker thread and says so.
          [1, 2, 3].map((x) => ({ x, batchSize: 3, ...(runtime.name === "python" ? { thread: true } : {}) })),
        );
      });

      it("fails every caller of a batch whose function breaks the one-result-per-item contract", async () => {
        const replies = await Promise.all([1, 2].map((x) => send(batched.url, "/wrong", { body: { x } })));
        for (const r of replies) {
          expect(r.status).toBe(500);
          expect(r.json().error.message).toMatch(/BatchError.*results for a batch of/);
        }
      });
    });
  });
}
