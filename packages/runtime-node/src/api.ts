/**
 * What handler code imports as `import { route, Response } from "tessera"`. buildNodeBundle
 * resolves the bare name `tessera` to this file.
 *
 * Route metadata lives on the method functions under a global symbol, not in a module-level
 * registry, so the handler bundle and the runtime server (two separate bundles, each with its own
 * copy of this module) agree on it.
 */
export { BatchError, type BatchOptions, batch, batched } from "./batching.js";
export { currentRequestId } from "./call-context.js";
export {
  type CallOptions,
  DeploymentHandle,
  HandleCancelled,
  HandleError,
  Handles,
  HandleTimeout,
  handles,
} from "./handles.js";
export { HttpError } from "./http-error.js";

export const ROUTES_KEY: unique symbol = Symbol.for("tessera.routes") as never;

export type StreamMode = "sse" | "chunked";

export interface RouteOptions {
  /** `sse`: each yielded item becomes one `data:` event; default/`chunked`: raw chunks. */
  stream?: StreamMode;
}

export interface RouteSpec {
  method: string;
  path: string;
  stream?: StreamMode;
}

export interface TesseraRequest<B = any> {
  method: string;
  path: string;
  /** Parsed JSON body (text for text/* bodies, a Buffer for binary ones), undefined when empty. */
  body: B;
  rawBody: Buffer;
  /** Path parameters, e.g. `{ item_id: "42" }` for `/items/{item_id}`. */
  params: Record<string, string>;
  /** Query parameters (last value wins); every value in `queryAll`. */
  query: Record<string, string>;
  queryAll: Record<string, string[]>;
  /** Lower-cased header names. */
  headers: Record<string, string>;
  requestId: string;
  /** Aborted when the client disconnects: pass it on to work that should stop with the request. */
  signal: AbortSignal;
}

/** A reply with a chosen status/headers; `body` may be JSON-able, a string, a Buffer or an (async) iterable to stream. */
export class Response {
  readonly status: number;
  readonly body: unknown;
  readonly headers: Record<string, string>;
  constructor(status = 200, body: unknown = null, headers: Record<string, string> = {}) {
    if (!Number.isInteger(status) || status < 100 || status > 599)
      throw new RangeError(`status must be an integer between 100 and 599, got ${status}`);
    this.status = status;
    this.body = body;
    this.headers = { ...headers };
  }
}

function attach(fn: unknown, spec: RouteSpec): void {
  if (typeof fn !== "function")
    throw new TypeError(`@route.${spec.method.toLowerCase()}(${spec.path}) must decorate a method`);
  const specs: RouteSpec[] = (fn as any)[ROUTES_KEY] ?? [];
  (fn as any)[ROUTES_KEY] = [...specs, spec];
}

function validatePath(path: string): void {
  if (!path.startsWith("/"))
    throw new TypeError(`route path must start with '/', got ${JSON.stringify(path)}`);
  if (path.startsWith("/-/"))
    throw new TypeError(`paths under /-/ are reserved for the runtime, got ${path}`);
}

type MethodDecorator = (value: any, context: any, descriptor?: PropertyDescriptor) => any;

function decorator(method: string, path: string, options: RouteOptions = {}): MethodDecorator {
  validatePath(path);
  const spec: RouteSpec = { method, path, ...(options.stream ? { stream: options.stream } : {}) };
  // Supports both TC39 decorators (value, context) and TypeScript's experimentalDecorators
  // (target, key, descriptor), whichever the tenant's tsconfig selects.
  return (value, context, descriptor) => {
    if (descriptor && typeof descriptor.value === "function") {
      attach(descriptor.value, spec);
      return descriptor;
    }
    if (context && typeof context === "object" && context.kind !== "method")
      throw new TypeError(`@route decorators apply to methods, not ${context.kind}s`);
    attach(value, spec);
    return value;
  };
}

export const route = {
  get: (path: string, options?: RouteOptions) => decorator("GET", path, options),
  post: (path: string, options?: RouteOptions) => decorator("POST", path, options),
  put: (path: string, options?: RouteOptions) => decorator("PUT", path, options),
  patch: (path: string, options?: RouteOptions) => decorator("PATCH", path, options),
  delete: (path: string, options?: RouteOptions) => decorator("DELETE", path, options),
};

export function routesOf(fn: unknown): RouteSpec[] {
  return typeof fn === "function" ? ((fn as any)[ROUTES_KEY] ?? []) : [];
}
