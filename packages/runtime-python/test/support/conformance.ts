/**
 * The behaviour every replica runtime must show, whatever its language: one suite, run by the
 * python and node runtime tests against their own `probe` fixture (same routes in both).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { Agent } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UPSTREAM_REVISION_HEADER } from "@tessera/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  openStream,
  type ReplicaLaunch,
  send,
  startReplica,
  type TestReplica,
  waitFor,
} from "./replica-harness.js";

export type FixtureClass = "Probe" | "Broken" | "SlowStart";

export interface RuntimeUnderTest {
  name: string;
  /** Launch spec for a fixture class; `env` overrides contract variables. */
  launch(
    cls: FixtureClass,
    opts: { userConfig: Record<string, unknown>; env?: Record<string, string> },
  ): Promise<ReplicaLaunch>;
}

export function runtimeConformance(runtime: RuntimeUnderTest): void {
  describe(`${runtime.name} runtime conformance`, () => {
    const gateDir = mkdtempSync(join(tmpdir(), "tessera-gates-"));
    const replicas: TestReplica[] = [];
    const openGate = (name: string) => writeFileSync(join(gateDir, name), "");
    const start = async (cls: FixtureClass = "Probe", env?: Record<string, string>, waitReady = true) => {
      const r = await startReplica(await runtime.launch(cls, { userConfig: { gateDir, answer: 42 }, env }), {
        waitReady,
      });
      replicas.push(r);
      return r;
    };
    let probe: TestReplica;

    beforeAll(async () => {
      process.env.TESSERA_TEST_PLATFORM_SECRET = "must-not-leak";
      probe = await start();
    });
    afterAll(async () => {
      await Promise.all(replicas.map((r) => r.stop()));
      rmSync(gateDir, { recursive: true, force: true });
    });

    it("serves routes with path and query params, and the user config", async () => {
      const item = await send(probe.url, "/items/a%20b?q=hello");
      expect(item.status).toBe(200);
      expect(item.json()).toEqual({ item_id: "a b", q: "hello" });
      expect((await send(probe.url, "/config")).json()).toEqual({ gateDir, answer: 42 });
      const echo = await send(probe.url, "/echo", { body: { rows: [1, 2] }, headers: { "x-custom": "yes" } });
      expect(echo.json()).toMatchObject({ body: { rows: [1, 2] }, custom: "yes" });
    });

    it("sees only the contract environment", async () => {
      const keys: string[] = (await send(probe.url, "/env")).json();
      expect(keys).toContain("TESSERA_DEPLOYMENT");
      expect(keys).not.toContain("TESSERA_TEST_PLATFORM_SECRET");
      const unexpected = keys.filter(
        (k) =>
          !k.startsWith("TESSERA_") &&
          !["PATH", "HOME", "PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"].includes(k),
      );
      // Python on some platforms sets LC_CTYPE for itself.
      expect(unexpected.filter((k) => k !== "LC_CTYPE")).toEqual([]);
    });

    it("echoes the request id, or makes one, and logs one JSON line per request", async () => {
      const given = await send(probe.url, "/echo", { body: {}, headers: { "x-request-id": "req-abc" } });
      expect(given.headers["x-request-id"]).toBe("req-abc");
      expect(given.json().requestId).toBe("req-abc");
      const made = await send(probe.url, "/echo", { body: {} });
      expect(made.headers["x-request-id"]).toMatch(/^[0-9a-f]{32}$/);
      const line = await probe.waitLog(
        (r) => r.msg === "request" && r.requestId === "req-abc",
        "the request log line",
      );
      expect(line).toMatchObject({
        level: "info",
        method: "POST",
        path: "/echo",
        status: 200,
        deployment: "dep-1",
        revision: "rev-1",
        replica: "rep-1",
      });
      expect(typeof line.ms).toBe("number");
      expect(typeof line.ts).toBe("string");
    });

    it("answers a Response with its status and headers", async () => {
      const r = await send(probe.url, "/created", { method: "POST" });
      expect(r.status).toBe(201);
      expect(r.headers["x-made-by"]).toBe("probe");
      expect(r.json()).toEqual({ made: true });
    });

    it("answers unknown routes, wrong methods and bad JSON with JSON errors", async () => {
      const missing = await send(probe.url, "/nope");
      expect(missing.status).toBe(404);
      expect(missing.json().error.code).toBe("NOT_FOUND");
      const wrongMethod = await send(probe.url, "/echo");
      expect(wrongMethod.status).toBe(404);
      expect(wrongMethod.json().error.message).toContain("POST");
      const bad = await send(probe.url, "/echo", {
        raw: "{not json",
        headers: { "content-type": "application/json" },
      });
      expect(bad.status).toBe(400);
      expect(bad.json().error.code).toBe("BAD_REQUEST");
    });

    it("turns a handler exception into HANDLER_ERROR, traceback only in the log", async () => {
      const r = await send(probe.url, "/boom", { headers: { "x-request-id": "boom-1" } });
      expect(r.status).toBe(500);
      expect(r.json().error.code).toBe("HANDLER_ERROR");
      expect(r.json().error.message).toContain("kaput in handler");
      expect(r.json().error.traceback).toBeUndefined();
      const logged = await probe.waitLog(
        (l) => l.level === "error" && l.requestId === "boom-1",
        "the error log line",
      );
      expect(String(logged.traceback)).toContain("kaput in handler");
      expect(String(logged.traceback)).toMatch(/probe\.(py|ts)/);
    });

    it("exposes the traceback when TESSERA_EXPOSE_TRACEBACKS=1", async () => {
      const exposing = await start("Probe", { TESSERA_EXPOSE_TRACEBACKS: "1" });
      const r = await send(exposing.url, "/boom");
      expect(r.status).toBe(500);
      expect(r.json().error.traceback).toMatch(/probe\.(py|ts)/);
      await exposing.stop();
    });

    it("streams chunks as they are produced", async () => {
      const stream = await openStream(probe.url, "/stream", { gate: "stream-1" });
      expect(stream.res.headers["transfer-encoding"]).toBe("chunked");
      // The handler is blocked on the gate: the first chunk can only be here if it was flushed.
      expect(await stream.until("first;")).toBe("first;");
      expect(stream.isEnded).toBe(false);
      openGate("stream-1");
      expect(await stream.end()).toBe("first;second;");
    });

    it("streams server-sent events as they are produced", async () => {
      const stream = await openStream(probe.url, "/sse", { gate: "sse-1" });
      expect(stream.res.headers["content-type"]).toContain("text/event-stream");
      expect(await stream.until("\n\n")).toBe('data: {"n":1}\n\n');
      expect(stream.isEnded).toBe(false);
      openGate("sse-1");
      const all = await stream.end();
      expect(
        all
          .split("\n\n")
          .filter(Boolean)
          .map((e) => JSON.parse(e.replace(/^data: /, ""))),
      ).toEqual([{ n: 1 }, { n: 2 }]);
    });

    it("reuses one connection for successive requests (keep-alive)", async () => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      try {
        const first = await send(probe.url, "/echo", { body: { i: 1 }, agent });
        const second = await send(probe.url, "/items/7", { agent });
        const third = await send(probe.url, "/echo", { body: { i: 3 }, agent, chunked: 3 });
        expect([first.status, second.status, third.status]).toEqual([200, 200, 200]);
        expect(first.reusedSocket).toBe(false);
        expect(second.reusedSocket).toBe(true);
        expect(third.reusedSocket).toBe(true);
        expect(third.json().body).toEqual({ i: 3 });
        expect(first.headers.connection).toBe("keep-alive");
      } finally {
        agent.destroy();
      }
    });

    it("refuses, unrun, a request the gateway meant for another revision", async () => {
      const r = await start();
      const header = UPSTREAM_REVISION_HEADER;
      const meant = await send(r.url, "/tick", { method: "POST", headers: { [header]: "rev-1" } });
      expect(meant.status).toBe(200);
      expect(meant.json()).toEqual({ ticks: 1 });
      const misrouted = await send(r.url, "/tick", {
        body: { payload: "x".repeat(1000) },
        headers: { [header]: "rev-of-another-replica", "x-request-id": "misrouted-1" },
      });
      expect(misrouted.status).toBe(503);
      expect(misrouted.json().error.code).toBe("MISROUTED");
      expect(misrouted.headers.connection).toBe("close");
      const line = await r.waitLog(
        (l) => l.requestId === "misrouted-1" && l.level === "warn",
        "the misroute warning",
      );
      expect(line).toMatchObject({ expectedRevision: "rev-of-another-replica", revision: "rev-1" });
      // Runtime endpoints answer whatever the header says.
      expect((await send(r.url, "/-/ready", { headers: { [header]: "rev-2" } })).status).toBe(200);
      const unnamed = await send(r.url, "/tick", { method: "POST" });
      expect(unnamed.json()).toEqual({ ticks: 2 });
      expect((await send(r.url, "/-/stats")).json()).toMatchObject({ total: 2 });
      await r.stop();
    });

    it("accepts every revision when started without one", async () => {
      const r = await start("Probe", { TESSERA_REVISION: "" });
      const any = await send(r.url, "/tick", {
        method: "POST",
        headers: { [UPSTREAM_REVISION_HEADER]: "rev-9" },
      });
      expect(any.status).toBe(200);
      expect(any.json()).toEqual({ ticks: 1 });
      await r.stop();
    });

    it("refuses bodies over TESSERA_MAX_BODY_BYTES, declared or chunked", async () => {
      const small = await start("Probe", { TESSERA_MAX_BODY_BYTES: "1024" });
      const big = { blob: "x".repeat(4000) };
      const declared = await send(small.url, "/echo", { body: big });
      expect(declared.status).toBe(413);
      expect(declared.json().error.code).toBe("PAYLOAD_TOO_LARGE");
      const chunked = await send(small.url, "/echo", { body: big, chunked: 500 });
      expect(chunked.status).toBe(413);
      expect(chunked.json().error.code).toBe("PAYLOAD_TOO_LARGE");
      const fits = await send(small.url, "/echo", { body: { blob: "x".repeat(500) }, chunked: 100 });
      expect(fits.status).toBe(200);
      await small.stop();
    });

    it("is ready only while health() passes", async () => {
      const r = await start();
      expect((await send(r.url, "/-/healthz")).status).toBe(200);
      expect((await send(r.url, "/-/ready")).status).toBe(200);
      await send(r.url, "/admin/health", { body: { healthy: false } });
      const notReady = await send(r.url, "/-/ready");
      expect(notReady.status).toBe(503);
      expect(notReady.json().reason).toContain("health()");
      await send(r.url, "/admin/health", { body: { healthy: "raise" } });
      const raising = await send(r.url, "/-/ready");
      expect(raising.status).toBe(503);
      expect(raising.json().reason).toContain("health exploded");
      expect((await send(r.url, "/-/healthz")).status).toBe(200);
      await send(r.url, "/admin/health", { body: { healthy: true } });
      expect((await send(r.url, "/-/ready")).status).toBe(200);
      const stats = (await send(r.url, "/-/stats")).json();
      expect(stats).toEqual({ inFlight: 0, total: 3, draining: false });
      await r.stop();
    });

    it("is not ready, and refuses work, until the class is constructed", async () => {
      const r = await start("SlowStart", undefined, false);
      expect(r.port).toBeGreaterThan(0);
      const early = await send(r.url, "/-/ready");
      expect(early.status).toBe(503);
      expect(early.json().reason).toBe("starting");
      const refused = await send(r.url, "/hello");
      expect(refused.status).toBe(503);
      expect(refused.json().error.code).toBe("OVERLOADED");
      openGate("construct");
      await waitFor(
        async () => (await send(r.url, "/-/ready")).status === 200,
        "readiness after construction",
      );
      expect((await send(r.url, "/hello")).json()).toBe("hi");
      await r.stop();
    });

    it("drains on SIGTERM: in-flight work completes, new work is refused, exit 0", async () => {
      const r = await start();
      const slow = send(r.url, "/slow", { body: { gate: "drain-1" } });
      await waitFor(
        async () => (await send(r.url, "/-/stats")).json().inFlight === 1,
        "the slow request to be in flight",
      );
      r.proc.kill("SIGTERM");
      await waitFor(
        async () => (await send(r.url, "/-/stats")).json().draining === true,
        "draining to start",
      );
      expect((await send(r.url, "/-/ready")).status).toBe(503);
      const refused = await send(r.url, "/echo", { body: {} });
      expect(refused.status).toBe(503);
      expect(refused.json().error.code).toBe("DRAINING");
      expect(r.exitCode).toBeUndefined();
      openGate("drain-1");
      const done = await slow;
      expect(done.status).toBe(200);
      expect(done.json()).toEqual({ done: "drain-1" });
      expect(await r.exited).toBe(0);
      expect(r.logs.map((l) => l.msg)).toEqual(expect.arrayContaining(["draining", "drained", "stopped"]));
    });

    it("exits after draining even when handler code left background work that will not stop", async () => {
      const r = await start();
      expect((await send(r.url, "/linger", { body: {} })).json()).toEqual({ lingering: true });
      r.proc.kill("SIGTERM");
      expect(await r.exited).toBe(0);
      expect(r.logs.map((l) => l.msg)).toEqual(expect.arrayContaining(["drained", "stopped"]));
    });

    it("exits non-zero, with the error logged, when the constructor fails", async () => {
      const r = await start("Broken", undefined, false);
      expect(await r.exited).not.toBe(0);
      const line = await r.waitLog(
        (l) => l.msg === "handler construction failed",
        "the construction failure line",
      );
      expect(String(line.traceback)).toContain("cannot load the model");
    });

    it("exits non-zero on an invalid runtime environment", async () => {
      const r = await start("Probe", { TESSERA_PORT: "not-a-port" }, false);
      expect(await r.exited).toBe(2);
      const line = await r.waitLog((l) => l.msg === "invalid runtime environment", "the invalid env line");
      expect(String(line.error)).toContain("TESSERA_PORT");
    });
  });
}
