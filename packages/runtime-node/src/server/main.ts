/**
 * The Tessera node replica runtime. Bundled by esbuild (see ../build.ts) and run as
 * `node runtime-server.mjs`: loads the handler bundle TESSERA_CODE_DIR/<file of TESSERA_ENTRY>,
 * constructs the class with TESSERA_USER_CONFIG and serves its routes.
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import {
  ERROR_CODES,
  type ErrorCode,
  REQUEST_ID_HEADER,
  RUNTIME_PATHS,
  UPSTREAM_REVISION_HEADER,
} from "@tessera/core";
import { HttpError, handles, Response, type TesseraRequest } from "../api.js";
import { callContextStore } from "../call-context.js";
import { createLog, type Log } from "./log.js";
import { collectRoutes, matchRoute, type Route } from "./routes.js";
import { loadSettings, type Settings } from "./settings.js";

// Longer than any sane client pool's idle timeout, so the client (gateway) always closes an idle
// pooled connection first and never writes into one we are closing.
const KEEP_ALIVE_MS = 65_000;
const BINARY_TYPES = ["application/octet-stream", "multipart/", "image/", "audio/", "video/"];

class ClientError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

type HandlerClass = new (config?: Record<string, unknown>) => Record<string, any>;

class Replica {
  instance: Record<string, any> | undefined;
  routes: Route[] = [];
  draining = false;
  inFlight = 0;
  total = 0;
  private onIdle: (() => void) | undefined;

  constructor(
    readonly settings: Settings,
    readonly log: Log,
  ) {}

  async construct(): Promise<void> {
    const [file, className] = splitEntry(this.settings.entry);
    const mod = await import(pathToFileURL(resolve(join(this.settings.codeDir, file))).href);
    const named = mod[className];
    const cls: unknown =
      typeof named === "function"
        ? named
        : typeof mod.default === "function"
          ? mod.default
          : typeof mod.default?.[className] === "function"
            ? mod.default[className]
            : undefined;
    if (typeof cls !== "function")
      throw new Error(`${file} exports no class ${className} (nor a default class)`);
    this.routes = collectRoutes(cls as HandlerClass);
    this.instance = new (cls as HandlerClass)(this.settings.userConfig);
    if (this.instance.handles === undefined) this.instance.handles = handles;
  }

  async health(): Promise<{ ready: boolean; reason: string }> {
    if (this.draining) return { ready: false, reason: "draining" };
    if (!this.instance) return { ready: false, reason: "starting" };
    if (typeof this.instance.health !== "function") return { ready: true, reason: "ok" };
    try {
      const ok = await this.instance.health();
      return ok === false
        ? { ready: false, reason: "health() returned false" }
        : { ready: true, reason: "ok" };
    } catch (err) {
      return { ready: false, reason: `health() threw ${describe(err)}` };
    }
  }

  /** Resolves once no handler request is in flight. */
  idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((done) => {
      this.onIdle = done;
    });
  }

  requestDone(): void {
    this.inFlight--;
    if (this.inFlight === 0 && this.onIdle) {
      const done = this.onIdle;
      this.onIdle = undefined;
      done();
    }
  }

  async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = headerValue(req.headers[REQUEST_ID_HEADER]) || randomUUID().replaceAll("-", "");
    res.setHeader(REQUEST_ID_HEADER, requestId);
    if (this.draining) res.setHeader("connection", "close");
    const url = new URL(req.url ?? "/", "http://replica");
    if (url.pathname.startsWith("/-/")) return this.serveInternal(req, res, url.pathname);

    const started = performance.now();
    let counted = false;
    // Aborted when the client goes away mid-request: handle calls and req.signal users stop.
    const cancel = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished && !cancel.signal.aborted) {
        cancel.abort();
        this.log.info("client disconnected: request cancelled", { requestId, path: url.pathname });
      }
      if (counted) this.requestDone();
      this.log.info("request", {
        requestId,
        method: req.method,
        path: url.pathname,
        status: res.statusCode,
        ms: Math.round((performance.now() - started) * 100) / 100,
        ...(res.writableFinished ? {} : { aborted: true }),
      });
    });
    const expected = req.headers[UPSTREAM_REVISION_HEADER];
    if (expected !== undefined && this.settings.revision && expected !== this.settings.revision) {
      // A stale gateway reached an address that now serves another revision (maybe another
      // tenant's): refuse unread and unrun, so the gateway resends it elsewhere.
      this.log.warn("misrouted request refused", {
        requestId,
        path: url.pathname,
        expectedRevision: expected,
      });
      const message = "this replica serves another revision than the one requested";
      return this.sendError(req, res, "MISROUTED", message, undefined, true);
    }
    if (this.draining) return this.sendError(req, res, "DRAINING", "replica is draining", undefined, true);
    if (!this.instance) return this.sendError(req, res, "OVERLOADED", "replica is starting", undefined, true);
    this.inFlight++;
    this.total++;
    counted = true;

    let rawBody: Buffer;
    try {
      rawBody = await readBody(req, this.settings.maxBodyBytes);
    } catch (err) {
      if (err instanceof ClientError) return this.sendError(req, res, err.code, err.message, undefined, true);
      throw err;
    }
    const method = (req.method ?? "GET").toUpperCase();
    const match = matchRoute(this.routes, method, url.pathname);
    if (!match.route) {
      const message = match.allowed.length
        ? `method ${method} is not allowed on ${url.pathname} (allowed: ${[...new Set(match.allowed)].sort().join(", ")})`
        : `no route for ${method} ${url.pathname}`;
      return this.sendError(req, res, "NOT_FOUND", message);
    }
    const route = match.route;
    let request: TesseraRequest;
    try {
      request = buildRequest(req, url, rawBody, match.params, requestId, cancel.signal);
    } catch (err) {
      if (err instanceof ClientError) return this.sendError(req, res, err.code, err.message);
      throw err;
    }
    // The whole call, streaming included, runs in the request's context (id + cancellation).
    await callContextStore().run({ requestId, signal: cancel.signal }, async () => {
      let result: unknown;
      try {
        result = await this.instance![route.methodName](request);
      } catch (err) {
        if (cancel.signal.aborted) return;
        return this.sendHandlerError(req, res, err, requestId);
      }
      await this.sendResult(req, res, route, result, requestId);
    });
  }

  private async serveInternal(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    req.resume();
    res.setHeader("cache-control", "no-store");
    if (path === RUNTIME_PATHS.healthz) return sendJson(res, 200, { ok: true });
    if (path === RUNTIME_PATHS.ready) {
      const h = await this.health();
      return sendJson(res, h.ready ? 200 : 503, h);
    }
    if (path === RUNTIME_PATHS.stats)
      return sendJson(res, 200, { inFlight: this.inFlight, total: this.total, draining: this.draining });
    return this.sendError(req, res, "NOT_FOUND", `no runtime endpoint ${path}`);
  }

  private async sendResult(
    req: IncomingMessage,
    res: ServerResponse,
    route: Route,
    result: unknown,
    requestId: string,
  ): Promise<void> {
    let status = 200;
    let headers: Record<string, string> = {};
    let body = result;
    if (result instanceof Response || isResponseLike(result)) {
      status = result.status;
      headers = { ...result.headers };
      body = result.body;
    }
    if (isStream(body)) return this.sendStream(req, res, route, status, headers, body, requestId);
    const hasType = Object.keys(headers).some((k) => k.toLowerCase() === "content-type");
    let payload: Buffer;
    if (Buffer.isBuffer(body) || body instanceof Uint8Array) {
      payload = Buffer.from(body);
      if (!hasType) headers["content-type"] = "application/octet-stream";
    } else if (typeof body === "string" && hasType) {
      payload = Buffer.from(body);
    } else {
      let json: string | undefined;
      try {
        json = JSON.stringify(body === undefined ? null : body);
      } catch (err) {
        return this.sendHandlerError(req, res, err, requestId);
      }
      payload = Buffer.from(json ?? "null");
      if (!hasType) headers["content-type"] = "application/json";
    }
    if (!this.applyHeaders(req, res, headers, requestId)) return;
    res.statusCode = status;
    res.setHeader("content-length", payload.length);
    res.end(payload);
  }

  private async sendStream(
    req: IncomingMessage,
    res: ServerResponse,
    route: Route,
    status: number,
    headers: Record<string, string>,
    body: AsyncIterable<unknown> | Iterator<unknown>,
    requestId: string,
  ): Promise<void> {
    const sse = route.stream === "sse";
    const iterator: AsyncIterator<unknown> | Iterator<unknown> =
      Symbol.asyncIterator in (body as object)
        ? (body as AsyncIterable<unknown>)[Symbol.asyncIterator]()
        : (body as Iterator<unknown>);
    // Pull the first item before committing to a status: a generator that fails before its first
    // yield (typically validating its input) still gets a proper error response.
    let step: IteratorResult<unknown>;
    try {
      step = await iterator.next();
    } catch (err) {
      return this.sendHandlerError(req, res, err, requestId);
    }
    if (!this.applyHeaders(req, res, headers, requestId)) {
      await iterator.return?.(undefined);
      return;
    }
    if (!res.hasHeader("content-type"))
      res.setHeader("content-type", sse ? "text/event-stream" : "application/octet-stream");
    if (sse && !res.hasHeader("cache-control")) res.setHeader("cache-control", "no-cache");
    res.statusCode = status;
    res.flushHeaders();
    let clientGone = false;
    res.on("close", () => {
      if (!res.writableFinished) clientGone = true;
    });
    try {
      while (!clientGone && !step.done) {
        const chunk = sse ? encodeSse(step.value) : encodeChunk(step.value);
        if (chunk.length > 0 && !res.write(chunk)) await waitDrain(res);
        if (clientGone) break;
        step = await iterator.next();
      }
    } catch (err) {
      this.logHandlerError(err, requestId, req);
      if (!sse) {
        // A chunked body without its terminating chunk tells the client the stream failed.
        res.destroy();
        return;
      }
      res.write(
        `event: error\ndata: ${JSON.stringify({ error: this.errorPayload("HANDLER_ERROR", describe(err), err) })}\n\n`,
      );
    }
    if (clientGone) {
      await iterator.return?.(undefined);
      return;
    }
    res.end();
  }

  /** Sets a handler's response headers; an invalid one turns the reply into a HANDLER_ERROR. */
  private applyHeaders(
    req: IncomingMessage,
    res: ServerResponse,
    headers: Record<string, string>,
    requestId: string,
  ): boolean {
    try {
      for (const [k, v] of Object.entries(headers)) if (!isHopHeader(k)) res.setHeader(k, v);
      return true;
    } catch (err) {
      for (const k of res.getHeaderNames())
        if (k !== REQUEST_ID_HEADER && k !== "connection") res.removeHeader(k);
      this.sendHandlerError(req, res, err, requestId);
      return false;
    }
  }

  private errorPayload(code: ErrorCode, message: string, err?: unknown): Record<string, unknown> {
    const payload: Record<string, unknown> = { code, message };
    if (err !== undefined && this.settings.exposeTracebacks) payload.traceback = stackOf(err);
    return payload;
  }

  private logHandlerError(err: unknown, requestId: string, req: IncomingMessage): void {
    this.log.error("handler error", {
      requestId,
      method: req.method,
      path: req.url,
      error: describe(err),
      traceback: stackOf(err),
    });
  }

  private sendHandlerError(req: IncomingMessage, res: ServerResponse, err: unknown, requestId: string): void {
    if (err instanceof HttpError || isHttpErrorLike(err)) {
      const code = (err.code in ERROR_CODES ? err.code : "BAD_REQUEST") as ErrorCode;
      this.sendError(req, res, code, err.message, err.status);
      return;
    }
    this.logHandlerError(err, requestId, req);
    sendJson(res, 500, { error: this.errorPayload("HANDLER_ERROR", describe(err), err) });
  }

  sendError(
    req: IncomingMessage,
    res: ServerResponse,
    code: ErrorCode,
    message: string,
    status?: number,
    close = false,
  ): void {
    if (close) {
      res.setHeader("connection", "close");
      // Discard whatever body is still arriving so the close does not turn into a reset that
      // loses this response on the client side.
      req.resume();
    }
    sendJson(res, status ?? ERROR_CODES[code], { error: { code, message } });
  }
}

function splitEntry(entry: string): [string, string] {
  const i = entry.lastIndexOf(":");
  if (i <= 0 || i === entry.length - 1)
    throw new Error(`TESSERA_ENTRY must be 'file:Class', got ${JSON.stringify(entry)}`);
  return [entry.slice(0, i), entry.slice(i + 1)];
}

function headerValue(v: string | string[] | undefined): string {
  return Array.isArray(v) ? (v[0] ?? "") : (v ?? "");
}

function isHopHeader(name: string): boolean {
  const k = name.toLowerCase();
  return (
    k === "connection" ||
    k === "keep-alive" ||
    k === "transfer-encoding" ||
    k === "content-length" ||
    k === REQUEST_ID_HEADER
  );
}

function describe(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return `thrown ${typeof err}: ${String(err)}`;
}

function stackOf(err: unknown): string {
  return err instanceof Error && err.stack ? err.stack : describe(err);
}

function isResponseLike(v: unknown): v is Response {
  // A Response from another copy of the api module (e.g. a tenant's own bundled copy).
  return (
    v !== null &&
    typeof v === "object" &&
    v.constructor?.name === "Response" &&
    "status" in v &&
    "headers" in v &&
    "body" in v &&
    typeof (v as { status: unknown }).status === "number"
  );
}

function isHttpErrorLike(v: unknown): v is HttpError {
  if (!(v instanceof Error) || v.name === "TypeError" || typeof (v as HttpError).status !== "number")
    return false;
  // An HttpError (or subclass, such as HandleError) from another copy of the api module.
  for (let p = Object.getPrototypeOf(v); p && p !== Error.prototype; p = Object.getPrototypeOf(p))
    if (p.constructor?.name === "HttpError") return true;
  return false;
}

function isStream(v: unknown): v is AsyncIterable<unknown> | Iterator<unknown> {
  if (
    v === null ||
    typeof v !== "object" ||
    Array.isArray(v) ||
    Buffer.isBuffer(v) ||
    v instanceof Uint8Array
  )
    return false;
  if (Symbol.asyncIterator in v) return true;
  return typeof (v as Iterator<unknown>).next === "function" && Symbol.iterator in v;
}

function encodeChunk(item: unknown): Buffer {
  if (Buffer.isBuffer(item)) return item;
  if (item instanceof Uint8Array) return Buffer.from(item);
  if (typeof item === "string") return Buffer.from(item);
  return Buffer.from(`${JSON.stringify(item ?? null)}\n`);
}

/** One SSE event per item: strings as-is, anything else as JSON; `{data, event?, id?}` names the event. */
function encodeSse(item: unknown): Buffer {
  let event: string | undefined;
  let id: string | undefined;
  let data = item;
  if (item !== null && typeof item === "object" && !Array.isArray(item) && "data" in item) {
    const keys = Object.keys(item);
    if (keys.every((k) => k === "data" || k === "event" || k === "id")) {
      const e = item as { data: unknown; event?: unknown; id?: unknown };
      data = e.data;
      if (e.event !== undefined) event = String(e.event);
      if (e.id !== undefined) id = String(e.id);
    }
  }
  const text = typeof data === "string" ? data : JSON.stringify(data ?? null);
  let out = "";
  if (id !== undefined) out += `id: ${id}\n`;
  if (event !== undefined) out += `event: ${event}\n`;
  for (const line of text.split("\n")) out += `data: ${line}\n`;
  return Buffer.from(`${out}\n`);
}

function waitDrain(res: ServerResponse): Promise<void> {
  return new Promise((done) => {
    const finish = () => {
      res.off("drain", finish);
      res.off("close", finish);
      done();
    };
    res.on("drain", finish);
    res.on("close", finish);
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const payload = Buffer.from(JSON.stringify(body));
  res.statusCode = status;
  res.setHeader("content-type", "application/json");
  res.setHeader("content-length", payload.length);
  res.end(payload);
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > limit)
    return Promise.reject(
      new ClientError(
        "PAYLOAD_TOO_LARGE",
        `request body of ${declared} bytes exceeds the limit of ${limit} bytes`,
      ),
    );
  return new Promise((done, fail) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on("data", (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > limit) {
        failed = true;
        chunks.length = 0;
        fail(new ClientError("PAYLOAD_TOO_LARGE", `request body exceeds the limit of ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (!failed) done(Buffer.concat(chunks));
    });
    req.on("error", (err) => {
      if (!failed) fail(new ClientError("BAD_REQUEST", `request body could not be read: ${err.message}`));
    });
  });
}

function buildRequest(
  req: IncomingMessage,
  url: URL,
  rawBody: Buffer,
  rawParams: Record<string, string>,
  requestId: string,
  signal: AbortSignal,
): TesseraRequest {
  const params: Record<string, string> = {};
  for (const [k, v] of Object.entries(rawParams)) {
    try {
      params[k] = decodeURIComponent(v);
    } catch {
      throw new ClientError("BAD_REQUEST", `path parameter ${k} is not valid percent-encoding`);
    }
  }
  const query: Record<string, string> = {};
  const queryAll: Record<string, string[]> = {};
  for (const [k, v] of url.searchParams) {
    query[k] = v;
    const all = queryAll[k] ?? [];
    all.push(v);
    queryAll[k] = all;
  }
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers))
    if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(", ") : v;
  return {
    method: (req.method ?? "GET").toUpperCase(),
    path: url.pathname,
    body: parseBody(rawBody, headers["content-type"] ?? ""),
    rawBody,
    params,
    query,
    queryAll,
    headers,
    requestId,
    signal,
  };
}

function parseBody(raw: Buffer, contentType: string): unknown {
  if (raw.length === 0) return undefined;
  const type = (contentType.split(";")[0] ?? "").trim().toLowerCase();
  // Anything not declared as text or binary is taken as JSON: `curl -d` and many clients send
  // JSON labelled as a form.
  if (type.startsWith("text/")) return raw.toString("utf8");
  if (BINARY_TYPES.some((t) => type.startsWith(t))) return raw;
  try {
    return JSON.parse(raw.toString("utf8"));
  } catch (err) {
    throw new ClientError("BAD_REQUEST", `request body is not valid JSON: ${(err as Error).message}`);
  }
}

const log = createLog({
  deployment: process.env.TESSERA_DEPLOYMENT ?? "",
  revision: process.env.TESSERA_REVISION ?? "",
  replica: process.env.TESSERA_REPLICA ?? "",
});

async function main(): Promise<void> {
  let settings: Settings;
  try {
    settings = loadSettings(process.env);
  } catch (err) {
    log.error("invalid runtime environment", { error: (err as Error).message });
    process.exit(2);
  }
  const replica = new Replica(settings, log);
  const server = createServer({ noDelay: true, keepAlive: true }, (req, res) => {
    replica.serve(req, res).catch((err) => {
      log.error("runtime error", { error: describe(err), traceback: stackOf(err) });
      if (!res.headersSent) sendJson(res, 500, { error: { code: "INTERNAL", message: "runtime error" } });
      else res.destroy();
    });
  });
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  server.headersTimeout = KEEP_ALIVE_MS + 1000;
  server.on("clientError", (_err, socket) => {
    if (socket.writable)
      socket.end(
        'HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{"error":{"code":"BAD_REQUEST","message":"malformed HTTP request"}}',
      );
    else socket.destroy();
  });

  let stopping = false;
  const drain = async () => {
    if (stopping) return;
    stopping = true;
    replica.draining = true;
    log.info("draining", { inFlight: replica.inFlight, timeoutS: settings.drainTimeoutS });
    const timedOut = await Promise.race([
      replica.idle().then(() => false),
      new Promise<boolean>((done) => setTimeout(() => done(true), settings.drainTimeoutS * 1000).unref()),
    ]);
    if (timedOut) log.warn("drain timeout: exiting with requests in flight", { inFlight: replica.inFlight });
    else log.info("drained");
    log.info("stopped", { total: replica.total });
    server.close();
    server.closeAllConnections();
    process.exit(0);
  };
  process.on("SIGTERM", drain);
  process.on("SIGINT", drain);

  await new Promise<void>((done, fail) => {
    server.once("error", fail);
    server.listen(settings.port, settings.host, () => done());
  }).catch((err) => {
    log.error("cannot listen", { error: describe(err) });
    process.exit(1);
  });
  const address = server.address();
  log.info("listening", {
    host: settings.host,
    port: typeof address === "object" && address ? address.port : settings.port,
    pid: process.pid,
    node: process.version,
  });
  const started = performance.now();
  try {
    await replica.construct();
  } catch (err) {
    log.error("handler construction failed", {
      entry: settings.entry,
      error: describe(err),
      traceback: stackOf(err),
    });
    process.exit(1);
  }
  log.info("constructed", {
    entry: settings.entry,
    routes: replica.routes.map((r) => `${r.method} ${r.path}`),
    ms: Math.round((performance.now() - started) * 100) / 100,
  });
}

process.on("unhandledRejection", (reason) => {
  // A handler's stray promise must not take the replica (and every in-flight request) down.
  log.error("unhandled rejection", { error: describe(reason), traceback: stackOf(reason) });
});

void main();
