import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import { REQUEST_ID_HEADER, TesseraError } from "@tessera/core";
import type { Dispatcher } from "undici";
import type { DeploymentLane, ReplicaSlot, Router } from "./router.js";

/** Connection-level failures that prove the replica never saw the request: safe to send elsewhere. */
const NEVER_REACHED = new Set([
  "ECONNREFUSED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EADDRNOTAVAIL",
  "UND_ERR_CONNECT_TIMEOUT",
]);

/** Failures of an established connection: the request may have reached the replica. */
const CONNECTION_LOST = new Set(["ECONNRESET", "EPIPE", "UND_ERR_SOCKET", "UND_ERR_CLOSED"]);
/** Methods that mean the same when sent twice (RFC 9110 §9.2.2): safe to resend after a lost connection. */
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]);

/** Hop-by-hop headers (RFC 9110 §7.6.1) and ones the gateway owns; never forwarded either way. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);
/**
 * Also dropped towards replicas: the caller's credential must never reach tenant code, and
 * `expect: 100-continue` (curl sends it for larger bodies) was answered by this server already.
 */
const NOT_TO_REPLICA = new Set([
  ...HOP_BY_HOP,
  "host",
  "authorization",
  "content-length",
  "expect",
  REQUEST_ID_HEADER,
]);

/** What a forwarded request produced, for metering. */
export interface ForwardResult {
  bytesOut: number;
  replicaId: string | null;
}

export interface ForwardRequest {
  req: IncomingMessage;
  res: ServerResponse;
  lane: DeploymentLane;
  /** Path and query on the replica, starting with `/`. */
  path: string;
  body: Buffer | undefined;
  requestId: string;
  /** Aborted when the client goes away. */
  abort: AbortController;
}

function upstreamHeaders(req: IncomingMessage, requestId: string): string[] {
  const raw = req.rawHeaders;
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    if (!NOT_TO_REPLICA.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!);
  }
  out.push(REQUEST_ID_HEADER, requestId);
  return out;
}

function downstreamHeaders(headers: IncomingHttpHeaders, requestId: string): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {};
  for (const name in headers) if (!HOP_BY_HOP.has(name)) out[name] = headers[name];
  out[REQUEST_ID_HEADER] = requestId;
  return out;
}

/** The runtimes' marker for "not processed, send it elsewhere": a 503 DRAINING (or a replica still starting). */
function notProcessedReason(body: string): "draining" | "starting" | null {
  try {
    const error = (JSON.parse(body) as { error?: { code?: string; message?: string } }).error;
    if (error?.code === "DRAINING") return "draining";
    if (error?.code === "OVERLOADED" && error.message === "replica is starting") return "starting";
  } catch {
    // a handler's own 503 with a non-JSON body
  }
  return null;
}

/** Runtime refusals are short JSON with a length; a handler's streamed 503 is passed through untouched. */
function isSmallJson(headers: IncomingHttpHeaders): boolean {
  const length = Number(headers["content-length"]);
  return length <= 4096 && String(headers["content-type"] ?? "").startsWith("application/json");
}

function waitWritable(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}

/**
 * Sends requests to replicas over keep-alive pools and streams answers back. A request is sent
 * to another replica only when the first provably never processed it: the connection was
 * refused, or the replica answered DRAINING.
 */
export class ReplicaProxy {
  constructor(private readonly router: Router) {}

  async forward(f: ForwardRequest): Promise<ForwardResult> {
    const { lane } = f;
    const timeoutMs = lane.route.limits.requestTimeoutMs;
    let deadline = Date.now() + timeoutMs;
    let exclude: Set<ReplicaSlot> | undefined;
    for (;;) {
      let slot = this.router.tryAcquire(lane, exclude);
      if (!slot) {
        const cold = lane.replicas.length === 0;
        slot = await this.router.acquire(lane, { exclude, deadline, signal: f.abort.signal });
        // A request held through a cold start gets its full timeout from when a replica took it.
        if (cold) deadline = Date.now() + timeoutMs;
      }
      const outcome = await this.attempt(f, slot, deadline);
      if (outcome !== "resend") return outcome;
      exclude ??= new Set();
      exclude.add(slot);
    }
  }

  private async attempt(
    f: ForwardRequest,
    slot: ReplicaSlot,
    deadline: number,
  ): Promise<ForwardResult | "resend"> {
    const { res } = f;
    let timedOut = false;
    const timer = setTimeout(
      () => {
        timedOut = true;
        f.abort.abort();
      },
      Math.max(1, deadline - Date.now()),
    );
    let released = false;
    const release = () => {
      if (!released) this.router.release(slot);
      released = true;
    };
    try {
      let upstream: Dispatcher.ResponseData;
      try {
        upstream = await slot.pool.request({
          path: f.path,
          method: (f.req.method ?? "GET") as Dispatcher.HttpMethod,
          headers: upstreamHeaders(f.req, f.requestId),
          body: f.body,
          signal: f.abort.signal,
          // Our own timer bounds the wait for headers; bodyTimeout bounds silence inside a stream.
          headersTimeout: 0,
          bodyTimeout: f.lane.route.limits.requestTimeoutMs,
        });
      } catch (err) {
        if (timedOut) throw timeoutError(f.lane);
        if (f.abort.signal.aborted) return { bytesOut: 0, replicaId: slot.id };
        const code = (err as { code?: string }).code ?? "";
        if (NEVER_REACHED.has(code)) {
          this.router.avoid(slot);
          return "resend";
        }
        // A replica that died leaves dead keep-alive connections behind; an idempotent request
        // that hit one is resent, anything else would risk running twice.
        if (CONNECTION_LOST.has(code) && IDEMPOTENT.has(f.req.method ?? "GET")) {
          this.router.avoid(slot);
          return "resend";
        }
        throw new TesseraError("UPSTREAM_ERROR", `replica failed: ${(err as Error).message}`);
      }
      clearTimeout(timer);

      if (upstream.statusCode === 503 && isSmallJson(upstream.headers)) {
        const text = await upstream.body.text().catch(() => "");
        const reason = notProcessedReason(text);
        if (reason === "draining") this.router.markDraining(slot);
        if (reason) return "resend";
        const payload = Buffer.from(text);
        if (!res.destroyed) {
          res.writeHead(503, downstreamHeaders(upstream.headers, f.requestId));
          res.end(payload);
        }
        return { bytesOut: payload.length, replicaId: slot.id };
      }

      let bytesOut = 0;
      res.writeHead(upstream.statusCode, downstreamHeaders(upstream.headers, f.requestId));
      try {
        for await (const chunk of upstream.body as AsyncIterable<Buffer>) {
          bytesOut += chunk.length;
          if (!res.write(chunk)) await waitWritable(res);
          if (res.destroyed) break;
        }
        res.end();
      } catch {
        // The replica died or went silent mid-stream: the status is out, so cut the response.
        res.destroy();
      }
      if (res.destroyed) upstream.body.destroy();
      return { bytesOut, replicaId: slot.id };
    } finally {
      clearTimeout(timer);
      release();
    }
  }
}

function timeoutError(lane: DeploymentLane): TesseraError {
  return new TesseraError(
    "TIMEOUT",
    `deployment ${lane.route.name} did not answer within ${lane.route.limits.requestTimeoutMs / 1000} s`,
  );
}
