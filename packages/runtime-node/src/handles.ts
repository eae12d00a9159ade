/**
 * Handles: call another deployment of the same application through the gateway's handle ingress.
 *
 *   const clean = await this.handles.get("preprocessor").call("/clean", { text });
 *   for await (const token of this.handles.get("model").stream("/generate", { prompt })) yield token;
 *
 * Calls go to `TESSERA_HANDLE_URL/{deployment}/{route}` with `TESSERA_HANDLE_TOKEN` as bearer, so
 * the gateway routes them like any request and only to deployments of this application. The id
 * of the request being served travels along as `x-request-id`, and a client that disconnects
 * aborts the calls its request made.
 */
// Relative import on purpose: handler bundles keep bare package names external, and this module
// must work inside them.
import { REQUEST_ID_HEADER, RUNTIME_ENV } from "../../core/src/runtime-contract.js";
import { currentCall } from "./call-context.js";
import { HttpError } from "./http-error.js";

const DEPLOYMENT_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

/**
 * A handle call failed: the callee answered an error, or could not be reached. `upstreamStatus`
 * and `upstreamCode` are what the callee (or the gateway) answered. Uncaught in a handler it
 * answers the client with 502 UPSTREAM_ERROR.
 */
export class HandleError extends HttpError {
  static override readonly kind: string = "HandleError";
  constructor(
    message: string,
    readonly deployment: string,
    readonly upstreamStatus?: number,
    readonly upstreamCode?: string,
    readonly requestId?: string,
    status = 502,
    code = "UPSTREAM_ERROR",
  ) {
    super(status, message, code);
    this.name = "HandleError";
  }
}

export class HandleTimeout extends HandleError {
  static override readonly kind: string = "HandleTimeout";
  constructor(message: string, deployment: string, requestId?: string) {
    super(message, deployment, undefined, undefined, requestId, 504, "TIMEOUT");
    this.name = "HandleTimeout";
  }
}

/** The request this call belonged to was cancelled (its client disconnected). */
export class HandleCancelled extends HandleError {
  static override readonly kind: string = "HandleCancelled";
  constructor(deployment: string, requestId?: string) {
    super("the request was cancelled", deployment, undefined, undefined, requestId);
    this.name = "HandleCancelled";
  }
}

type QueryValue = string | number | boolean;

export interface CallOptions {
  /** Defaults to POST with a body, GET without. */
  method?: string;
  headers?: Record<string, string>;
  query?: Record<string, QueryValue | QueryValue[]>;
  /** For `call`: the whole call; for `stream`: until the response starts. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

function encodeBody(body: unknown): { payload?: string | Uint8Array; type?: string } {
  if (body === undefined) return {};
  if (body instanceof Uint8Array) return { payload: body, type: "application/octet-stream" };
  if (typeof body === "string") return { payload: body, type: "text/plain; charset=utf-8" };
  return { payload: JSON.stringify(body), type: "application/json" };
}

async function decodeBody(res: globalThis.Response): Promise<unknown> {
  const type = (res.headers.get("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
  if (type === "application/json" || type.endsWith("+json")) {
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }
  if (type.startsWith("text/")) return res.text();
  return Buffer.from(await res.arrayBuffer());
}

function errorFrom(deployment: string, status: number, text: string, requestId?: string): HandleError {
  let code: string | undefined;
  let message = text.slice(0, 500);
  try {
    const err = JSON.parse(text).error;
    if (err && typeof err === "object") {
      code = typeof err.code === "string" ? err.code : undefined;
      message = typeof err.message === "string" ? err.message : message;
    }
  } catch {
    // not a JSON error body: keep the text
  }
  const summary = `${deployment} answered ${status}${code ? ` ${code}` : ""}: ${message}`;
  if (code === "TIMEOUT" || status === 504) return new HandleTimeout(summary, deployment, requestId);
  return new HandleError(summary, deployment, status, code, requestId);
}

interface SseEvent {
  event?: string;
  id?: string;
  data: string;
}

async function* sseEvents(body: AsyncIterable<Uint8Array>): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true }).replaceAll("\r\n", "\n");
    let end = buffer.indexOf("\n\n");
    while (end >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      end = buffer.indexOf("\n\n");
      const event: SseEvent = { data: "" };
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (name === "data") data.push(value);
        else if (name === "event") event.event = value;
        else if (name === "id") event.id = value;
      }
      event.data = data.join("\n");
      if (data.length > 0 || event.event !== undefined || event.id !== undefined) yield event;
    }
  }
}

/** Calls to one deployment of this application. */
export class DeploymentHandle {
  constructor(
    private readonly handles: Handles,
    readonly name: string,
  ) {
    if (!DEPLOYMENT_NAME.test(name)) throw new TypeError(`not a deployment name: ${JSON.stringify(name)}`);
  }

  private async open(
    route: string,
    body: unknown,
    opts: CallOptions,
    accept: string | undefined,
    timeoutSignal: AbortSignal | undefined,
  ): Promise<{ res: globalThis.Response; requestId?: string; signal: AbortSignal }> {
    if (typeof route !== "string" || !route.startsWith("/"))
      throw new TypeError(`a handle route must be a path starting with '/', got ${JSON.stringify(route)}`);
    const { url: base, token } = this.handles.config(this.name);
    const url = new URL(`${base}/${this.name}${encodeURI(route)}`);
    for (const [k, v] of Object.entries(opts.query ?? {}))
      for (const item of Array.isArray(v) ? v : [v]) url.searchParams.append(k, String(item));
    const call = currentCall();
    const requestId = call?.requestId;
    const { payload, type } = encodeBody(body);
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(opts.headers ?? {})) headers[k.toLowerCase()] = v;
    headers.authorization = `Bearer ${token}`;
    if (type && !headers["content-type"]) headers["content-type"] = type;
    if (accept && !headers.accept) headers.accept = accept;
    if (requestId) headers[REQUEST_ID_HEADER] = requestId;
    const signals = [call?.signal, opts.signal, timeoutSignal].filter((s): s is AbortSignal => !!s);
    const signal = signals.length === 1 ? signals[0]! : AbortSignal.any(signals);
    let res: globalThis.Response;
    try {
      res = await fetch(url, {
        method: (opts.method ?? (body === undefined ? "GET" : "POST")).toUpperCase(),
        headers,
        body: payload,
        signal,
      });
    } catch (err) {
      throw this.failure(err, call?.signal, timeoutSignal, opts, requestId, "cannot reach");
    }
    if (res.status >= 400) {
      const text = await res.text().catch(() => "");
      throw errorFrom(this.name, res.status, text, res.headers.get(REQUEST_ID_HEADER) ?? requestId);
    }
    return { res, requestId, signal };
  }

  /** Maps an abort or network failure to the typed error that explains it. */
  private failure(
    err: unknown,
    requestSignal: AbortSignal | undefined,
    timeoutSignal: AbortSignal | undefined,
    opts: CallOptions,
    requestId: string | undefined,
    what: string,
  ): HandleError {
    if (err instanceof HandleError) return err;
    if (requestSignal?.aborted) return new HandleCancelled(this.name, requestId);
    if (timeoutSignal?.aborted)
      return new HandleTimeout(
        `${this.name} did not answer within ${opts.timeoutMs} ms`,
        this.name,
        requestId,
      );
    const reason =
      err instanceof Error ? ((err.cause as Error | undefined)?.message ?? err.message) : String(err);
    return new HandleError(
      `${what} ${this.name} through the gateway: ${reason}`,
      this.name,
      undefined,
      undefined,
      requestId,
    );
  }

  /**
   * Calls `route` and resolves with the decoded answer: JSON as values, text as a string,
   * anything else as a Buffer.
   */
  async call<T = any>(route: string, body?: unknown, opts: CallOptions = {}): Promise<T> {
    const timeout = opts.timeoutMs !== undefined ? AbortSignal.timeout(opts.timeoutMs) : undefined;
    const { res, requestId } = await this.open(route, body, opts, undefined, timeout);
    try {
      return (await decodeBody(res)) as T;
    } catch (err) {
      throw this.failure(err, currentCall()?.signal, timeout, opts, requestId, "lost the answer of");
    }
  }

  /**
   * Calls a streaming route. SSE responses yield each event's data as a string (a named event as
   * `{event, data, id}`, which a handler can yield again unchanged; an `error` event throws a
   * HandleError); other responses yield Buffers as they arrive. Breaking out of the loop closes
   * the connection, which cancels the callee.
   */
  async *stream(route: string, body?: unknown, opts: CallOptions = {}): AsyncGenerator<unknown> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new AbortController();
    if (opts.timeoutMs !== undefined) timer = setTimeout(() => timeout.abort(), opts.timeoutMs);
    let opened: Awaited<ReturnType<DeploymentHandle["open"]>>;
    try {
      opened = await this.open(route, body, opts, "text/event-stream, */*", timeout.signal);
    } finally {
      clearTimeout(timer);
    }
    const { res, requestId } = opened;
    const chunks = res.body as unknown as AsyncIterable<Uint8Array> | null;
    if (!chunks) return;
    try {
      if ((res.headers.get("content-type") ?? "").startsWith("text/event-stream")) {
        for await (const event of sseEvents(chunks)) {
          if (event.event === "error") throw errorFrom(this.name, 500, event.data, requestId);
          yield event.event === undefined && event.id === undefined ? event.data : event;
        }
      } else {
        for await (const chunk of chunks) yield Buffer.from(chunk);
      }
    } catch (err) {
      throw this.failure(err, currentCall()?.signal, undefined, opts, requestId, "lost the stream of");
    } finally {
      // Leaving early: cancel the body so the connection closes and the callee stops.
      await res.body?.cancel().catch(() => {});
    }
  }
}

/** Handles to this application's deployments: `handles.get("preprocessor")`. */
export class Handles {
  constructor(
    private readonly url?: string,
    private readonly token?: string,
  ) {}

  static fromEnv(env: NodeJS.ProcessEnv = process.env): Handles {
    return new Handles(env[RUNTIME_ENV.HANDLE_URL] || undefined, env[RUNTIME_ENV.HANDLE_TOKEN] || undefined);
  }

  config(deployment: string): { url: string; token: string } {
    if (!this.url || !this.token)
      throw new HandleError(
        `handles are not available: ${RUNTIME_ENV.HANDLE_URL} is not set (is this replica part of an application?)`,
        deployment,
        undefined,
        undefined,
        undefined,
        500,
        "INTERNAL",
      );
    return { url: this.url.replace(/\/+$/, ""), token: this.token };
  }

  get(deployment: string): DeploymentHandle {
    return new DeploymentHandle(this, deployment);
  }
}

/** The handles of this replica's application, from its environment. */
export const handles: Handles = Handles.fromEnv();
