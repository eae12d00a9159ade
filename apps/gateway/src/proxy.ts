import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import { REQUEST_ID_HEADER, TesseraError, UPSTREAM_REVISION_HEADER } from "@tessera/core";
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
 * Also dropped towards replicas: the caller's credential must never reach tenant code,
 * `expect: 100-continue` (curl sends it for larger bodies) was answered by this server already,
 * and the revision a replica checks requests against is the gateway's to name, never the caller's.
 */
const NOT_TO_REPLICA = new Set([
  ...HOP_BY_HOP,
  "host",
  "authorization",
  "content-length",
  "expect",
  REQUEST_ID_HEADER,
  UPSTREAM_REVISION_HEADER,
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
  /** Only replicas of this revision may serve it (traffic splitting); any when absent. */
  revisionId?: string;
  /**
   * An uptime probe: never wakes a deployment scaled to zero (answered "asleep" instead) and is
   * not counted in the load the autoscaler sees.
   */
  probe?: boolean;
}

function upstreamHeaders(req: IncomingMessage, requestId: string, slot: ReplicaSlot): string[] {
  const raw = req.rawHeaders;
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    if (!NOT_TO_REPLICA.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!);
  }
  out.push(REQUEST_ID_HEADER, requestId);
  if (slot.revisionId) out.push(UPSTREAM_REVISION_HEADER, slot.revisionId);
  return out;
}

function downstreamHeaders(headers: IncomingHttpHeaders, requestId: string): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {};
  for (const name in headers) if (!HOP_BY_HOP.has(name)) out[name] = headers[name];
  out[REQUEST_ID_HEADER] = requestId;
  return out;
}

type NotProcessedReason = "draining" | "starting" | "misrouted";

/**
 * The runtimes' marker for "not processed, send it elsewhere": a 503 DRAINING, MISROUTED (the
 * address serves another revision than the routing table says), or a replica still starting.
 */
function notProcessedReason(body: string): NotProcessedReason | null {
  try {
    const error = (JSON.parse(body) as { error?: { code?: string; message?: string } }).error;
    if (error?.code === "DRAINING") return "draining";
    if (error?.code === "MISROUTED") return "misrouted";
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

type ExchangeOutcome =
  | { kind: "answered"; bytesOut: number }
  /** The replica declined without processing it (the runtimes' 503 DRAINING / MISROUTED / starting). */
  | { kind: "declined"; reason: NotProcessedReason }
  | { kind: "failed"; error: Error; responded: boolean; bytesOut: number };

/**
 * One request/response with a replica, driven by undici's dispatch API: response chunks go
 * straight to the client with backpressure, without the stream and promise machinery of
 * `request()` (this is the hot path). A short JSON 503 is held back until it is clear whether it
 * is the runtime declining the request (resend) or the handler's own answer (pass on).
 */
class UpstreamExchange implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | null = null;
  private abortReason: Error | null = null;
  private held: Buffer[] | null = null;
  private heldHeaders: IncomingHttpHeaders | null = null;
  private responded = false;
  private settled = false;
  bytesOut = 0;

  constructor(
    private readonly res: ServerResponse,
    private readonly requestId: string,
    private readonly headersArrived: () => void,
    private readonly settle: (outcome: ExchangeOutcome) => void,
  ) {}

  abort(reason: Error): void {
    this.abortReason ??= reason;
    this.controller?.abort(reason);
  }

  private finish(outcome: ExchangeOutcome): void {
    if (this.settled) return;
    this.settled = true;
    this.settle(outcome);
  }

  private readonly resume = () => this.controller?.resume();

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.abortReason) controller.abort(this.abortReason);
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
  ): void {
    if (statusCode < 200) return;
    this.headersArrived();
    if (statusCode === 503 && isSmallJson(headers)) {
      this.held = [];
      this.heldHeaders = headers;
      return;
    }
    this.responded = true;
    this.res.writeHead(statusCode, downstreamHeaders(headers, this.requestId));
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.bytesOut += chunk.length;
    if (this.held) {
      this.held.push(chunk);
      return;
    }
    if (this.res.destroyed) {
      controller.abort(new Error("the client went away"));
      return;
    }
    if (!this.res.write(chunk)) {
      controller.pause();
      this.res.once("drain", this.resume);
    }
  }

  onResponseEnd(): void {
    if (this.held) {
      const body = Buffer.concat(this.held);
      const reason = notProcessedReason(body.toString("utf8"));
      if (reason) {
        this.finish({ kind: "declined", reason });
        return;
      }
      this.responded = true;
      this.res.writeHead(503, downstreamHeaders(this.heldHeaders!, this.requestId));
      this.res.end(body);
    } else this.res.end();
    this.finish({ kind: "answered", bytesOut: this.bytesOut });
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.finish({ kind: "failed", error, responded: this.responded, bytesOut: this.bytesOut });
  }
}

const CLIENT_GONE = new Error("the client went away");
const TIMED_OUT = new Error("no response within the request timeout");

/**
 * Sends requests to replicas over keep-alive pools and streams answers back. A request is sent
 * to another replica only when the first provably never processed it: the connection was
 * refused, or the replica answered DRAINING or MISROUTED.
 */
export class ReplicaProxy {
  constructor(private readonly router: Router) {}

  async forward(f: ForwardRequest): Promise<ForwardResult> {
    if (!f.probe) return this.route(f);
    f.lane.probes++;
    try {
      return await this.route(f);
    } finally {
      f.lane.probes--;
    }
  }

  private async route(f: ForwardRequest): Promise<ForwardResult> {
    const { lane } = f;
    const timeoutMs = lane.route.limits.requestTimeoutMs;
    let deadline = Date.now() + timeoutMs;
    // Replicas of other revisions are excluded up front, like ones already tried.
    let exclude: Set<ReplicaSlot> | undefined = f.revisionId
      ? new Set(lane.replicas.filter((s) => s.revisionId !== f.revisionId))
      : undefined;
    for (;;) {
      let slot = this.router.tryAcquire(lane, exclude);
      if (!slot) {
        const cold = lane.replicas.length === 0;
        slot = await this.router.acquire(lane, { exclude, deadline, signal: f.abort.signal, wake: !f.probe });
        // A request held through a cold start gets its full timeout from when a replica took it.
        if (cold) deadline = Date.now() + timeoutMs;
      }
      let outcome: ExchangeOutcome;
      try {
        outcome = await this.exchange(f, slot, deadline);
      } finally {
        this.router.release(slot);
      }
      const result = this.judge(f, slot, outcome);
      if (result !== "resend") return result;
      exclude ??= new Set();
      exclude.add(slot);
    }
  }

  private exchange(f: ForwardRequest, slot: ReplicaSlot, deadline: number): Promise<ExchangeOutcome> {
    return new Promise<ExchangeOutcome>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const onClientGone = () => exchange.abort(CLIENT_GONE);
      const exchange = new UpstreamExchange(
        f.res,
        f.requestId,
        () => clearTimeout(timer),
        (outcome) => {
          clearTimeout(timer);
          f.abort.signal.removeEventListener("abort", onClientGone);
          resolve(outcome);
        },
      );
      timer = setTimeout(() => exchange.abort(TIMED_OUT), Math.max(1, deadline - Date.now()));
      if (f.abort.signal.aborted) exchange.abort(CLIENT_GONE);
      else f.abort.signal.addEventListener("abort", onClientGone, { once: true });
      try {
        slot.pool.dispatch(
          {
            path: f.path,
            method: (f.req.method ?? "GET") as Dispatcher.HttpMethod,
            headers: upstreamHeaders(f.req, f.requestId, slot),
            body: f.body,
            // Our timer bounds the wait for headers; bodyTimeout bounds silence inside a stream.
            headersTimeout: 0,
            bodyTimeout: f.lane.route.limits.requestTimeoutMs,
          },
          exchange,
        );
      } catch (err) {
        exchange.onResponseError(null as unknown as Dispatcher.DispatchController, err as Error);
      }
    });
  }

  /** What an exchange means for the client: a result, a resend elsewhere, or an error to answer. */
  private judge(f: ForwardRequest, slot: ReplicaSlot, outcome: ExchangeOutcome): ForwardResult | "resend" {
    if (outcome.kind === "answered") return { bytesOut: outcome.bytesOut, replicaId: slot.id };
    if (outcome.kind === "declined") {
      if (outcome.reason === "draining") this.router.markDraining(slot);
      else if (outcome.reason === "misrouted") this.router.markMisrouted(slot);
      return "resend";
    }
    if (outcome.responded) {
      // The replica died or went silent mid-stream: the status is out, so cut the response.
      f.res.destroy();
      return { bytesOut: outcome.bytesOut, replicaId: slot.id };
    }
    if (outcome.error === TIMED_OUT) throw timeoutError(f.lane);
    if (outcome.error === CLIENT_GONE || f.abort.signal.aborted) return { bytesOut: 0, replicaId: slot.id };
    const code = (outcome.error as { code?: string }).code ?? "";
    // Refused: never reached. Lost connection: a replica that died leaves dead keep-alive
    // connections behind; an idempotent request that hit one is resent, anything else could run twice.
    if (NEVER_REACHED.has(code) || (CONNECTION_LOST.has(code) && IDEMPOTENT.has(f.req.method ?? "GET"))) {
      this.router.avoid(slot);
      return "resend";
    }
    throw new TesseraError("UPSTREAM_ERROR", `replica failed: ${outcome.error.message}`);
  }
}

function timeoutError(lane: DeploymentLane): TesseraError {
  return new TesseraError(
    "TIMEOUT",
    `deployment ${lane.route.name} did not answer within ${lane.route.limits.requestTimeoutMs / 1000} s`,
  );
}
