import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import {
  DEFAULT_REDIS_PREFIX,
  errorBody,
  HANDLE_PATH_PREFIX,
  PROBE_PATH_PREFIX,
  REQUEST_ID_HEADER,
  REVISION_HEADER,
  RUNTIME_PATHS,
  redisKeys,
  TesseraError,
  verifyHandleToken,
  verifyProbeToken,
} from "@tessera/core";
import type { Database } from "@tessera/db";
import { Redis } from "ioredis";
import { ApiKeyVerifier, bearerToken } from "./auth.js";
import { LoadReporter } from "./load-reporter.js";
import { jsonLog, type Log } from "./log.js";
import { GatewayMetrics } from "./metrics.js";
import { subscribeNotices } from "./notices.js";
import { ReplicaProxy } from "./proxy.js";
import { chooseServingRevision } from "./revision-choice.js";
import { Router } from "./router.js";
import { applicationKey, type DeploymentRoute, RoutingTable } from "./routing-table.js";
import { UsageRecorder } from "./usage-recorder.js";

export interface RequestAdmission {
  admit(
    orgId: string,
  ):
    | { ok: true }
    | { ok: false; code: "RATE_LIMITED" | "PAYMENT_REQUIRED"; message: string; retryAfterS?: number };
  /** Called by the gateway's close(), while its Redis client is still connected. */
  close?(): Promise<void>;
}

/** The gateway's Redis client and key prefix, for an admission that counts across gateways. */
export interface SharedRedis {
  redis: Redis;
  prefix: string;
}

export interface GatewayOptions {
  db: Database;
  redisUrl: string;
  redisPrefix?: string;
  port?: number;
  host?: string;
  /**
   * Secret that signs handle tokens and the platform probe token (`TESSERA_HANDLE_SECRET`); without
   * it handle calls and probes are refused.
   */
  handleSecret?: string;
  /** How long a request for a scaled-to-zero deployment is held while it wakes (default 60 s). */
  coldStartTimeoutS?: number;
  /** When set, `/metrics` requires `Authorization: Bearer <metricsToken>`. */
  metricsToken?: string;
  /** Full routing table reload period (default 10 s); pub/sub notices trigger reloads in between. */
  routingRefreshMs?: number;
  /** How often ongoing requests are reported to Redis for the autoscaler (default 1 s). */
  loadReportMs?: number;
  /** Usage events flush period (default 1 s). */
  usageFlushMs?: number;
  /** Deadline of every Postgres call (default 10 s): a hung database must stall nothing. */
  dbTimeoutMs?: number;
  /**
   * Plan enforcement for `/v1` requests (`OrgAdmission` of @tessera/billing): a refused request is
   * answered RATE_LIMITED / PAYMENT_REQUIRED and never metered. Absent: every plan is unlimited.
   * A function gets the gateway's Redis client and prefix, so the admission can count per-minute
   * rates across all gateways (`shared` of `OrgAdmission`); an instance counts on its own.
   */
  admission?: RequestAdmission | ((shared: SharedRedis) => RequestAdmission);
  log?: Log;
}

export interface Gateway {
  url: string;
  port: number;
  /** Identifies this gateway's samples in the autoscaler's window. */
  id: string;
  /** Reload the routing table now; resolves true when it is current. */
  refresh(): Promise<boolean>;
  /** Stop accepting requests, finish those in flight, flush usage, close connections. */
  close(): Promise<void>;
  /** Internals exposed for operators' checks and tests. */
  readonly table: RoutingTable;
  readonly router: Router;
  readonly usage: UsageRecorder;
  readonly keys: ApiKeyVerifier;
}

const REQUEST_ID_RE = /^[A-Za-z0-9._-]{1,128}$/;
/** How long close() lets requests in flight finish before cutting them. */
const SHUTDOWN_GRACE_MS = 10_000;

function requestIdOf(req: IncomingMessage): string {
  const incoming = req.headers[REQUEST_ID_HEADER];
  return typeof incoming === "string" && REQUEST_ID_RE.test(incoming)
    ? incoming
    : randomUUID().replaceAll("-", "");
}

function sendError(res: ServerResponse, err: unknown, log: Log): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const error =
    err instanceof TesseraError
      ? err
      : new TesseraError("INTERNAL", "the gateway failed to handle the request");
  if (!(err instanceof TesseraError))
    log("error", "request failed", { err: String((err as Error)?.stack ?? err) });
  const payload = JSON.stringify(errorBody(error.code, error.message, error.details));
  if (error.code === "PAYLOAD_TOO_LARGE") res.setHeader("connection", "close");
  res.writeHead(error.httpStatus, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(payload),
  });
  res.end(payload);
}

/** Splits `{a}/{b}/.../rest?query` into `count` decoded segments and the rest (always starting with `/`). */
export function splitTarget(
  url: string,
  offset: number,
  count: number,
): { parts: string[]; rest: string } | null {
  const parts: string[] = [];
  let at = offset;
  for (let i = 0; i < count; i++) {
    let end = at;
    while (end < url.length && url[end] !== "/" && url[end] !== "?") end++;
    if (end === at) return null;
    let part = url.slice(at, end);
    if (part.includes("%")) {
      try {
        part = decodeURIComponent(part);
      } catch {
        return null;
      }
    }
    parts.push(part);
    at = end;
    if (i < count - 1) {
      if (url[at] !== "/") return null;
      at++;
    }
  }
  const rest = url.slice(at);
  return { parts, rest: rest === "" ? "/" : rest[0] === "?" ? `/${rest}` : rest };
}

const RUNTIME_PREFIX_RE = /^\/+-(\/|$)/;

/**
 * `/-/...` are the runtimes' own endpoints (stats, handle method calls): never public. Checked
 * the way either runtime could read the path: dot segments and backslashes resolved (node's URL
 * parser), percent-escapes decoded (python's unquote).
 */
export function reachesRuntimeEndpoint(rest: string): boolean {
  const query = rest.indexOf("?");
  const raw = query < 0 ? rest : rest.slice(0, query);
  if (!/[-%.\\]/.test(raw)) return false;
  const resolved = new URL(raw, "http://replica").pathname;
  let decoded: string;
  try {
    decoded = decodeURIComponent(resolved);
  } catch {
    return true; // undecodable escapes: refuse rather than guess how a runtime reads them
  }
  // Backslashes read as slashes too: no runtime does today, but a path like that has no business here.
  return [raw, resolved, decoded].some((p) => RUNTIME_PREFIX_RE.test(p.replaceAll("\\", "/")));
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > limit) return Promise.reject(tooLarge(limit));
  if (declared === undefined && req.headers["transfer-encoding"] === undefined)
    return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.off("data", onData);
        req.resume(); // discard the rest so the 413 reaches the client
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    req.on("data", onData);
    req.on("end", () => resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size)));
    req.on("error", reject);
  });
}

function tooLarge(limit: number): TesseraError {
  return new TesseraError(
    "PAYLOAD_TOO_LARGE",
    `the request body exceeds the deployment's limit of ${limit} bytes`,
  );
}

export async function createGateway(options: GatewayOptions): Promise<Gateway> {
  const log = options.log ?? jsonLog;
  const prefix = options.redisPrefix ?? DEFAULT_REDIS_PREFIX;
  const keys = redisKeys(prefix);
  const id = `gw-${randomUUID().slice(0, 8)}`;
  // Commands fail fast while Redis is down (no offline queue): load reports and wakes are
  // best-effort, and nothing may pile up in memory.
  const redis = new Redis(options.redisUrl, {
    disableClientInfo: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
  });
  let redisWarned = false;
  redis.on("error", (err) => {
    if (!redisWarned)
      log("warn", "redis unavailable; serving with the last known state", { err: String(err) });
    redisWarned = true;
  });
  redis.on("ready", () => {
    redisWarned = false;
  });

  const table = new RoutingTable(options.db, {
    refreshIntervalMs: options.routingRefreshMs,
    dbTimeoutMs: options.dbTimeoutMs,
    log,
  });
  const router = new Router({
    coldStartTimeoutMs: (options.coldStartTimeoutS ?? 60) * 1000,
    onWake: (deploymentId) => {
      redis.publish(keys.wake, deploymentId).catch((err) => {
        log("warn", "could not publish a wake-up", { deploymentId, err: String(err) });
      });
    },
    onStarved: () => void table.refresh(),
    onMisrouted: () => void table.refresh(),
  });
  table.onChange((snapshot) => router.update(snapshot));
  const apiKeys = new ApiKeyVerifier(options.db, { log, dbTimeoutMs: options.dbTimeoutMs });
  const usage = new UsageRecorder(options.db, {
    log,
    flushIntervalMs: options.usageFlushMs,
    dbTimeoutMs: options.dbTimeoutMs,
  });
  const metrics = new GatewayMetrics(router);
  const proxy = new ReplicaProxy(router);
  const reporter = new LoadReporter(redis, prefix, id, router, log, options.loadReportMs);
  const admission =
    typeof options.admission === "function" ? options.admission({ redis, prefix }) : options.admission;
  const notices = subscribeNotices(
    options.redisUrl,
    prefix,
    {
      routingChanged: () => void table.refresh(),
      apiKeysChanged: (keyPrefix) => apiKeys.invalidate(keyPrefix.trim() || "*"),
      resubscribed: () => {
        apiKeys.invalidate("*");
        void table.refresh();
      },
    },
    log,
  );

  let active = 0;
  let onIdle: (() => void) | null = null;

  async function serveDeployment(
    req: IncomingMessage,
    res: ServerResponse,
    route: DeploymentRoute,
    path: string,
    requestId: string,
    revisionId: string | undefined,
  ): Promise<{ bytesIn: number; bytesOut: number; replicaId: string | null }> {
    const lane = router.lane(route);
    const body = await readBody(req, route.limits.maxBodyBytes);
    const abort = new AbortController();
    res.once("close", () => {
      if (!res.writableFinished) abort.abort();
    });
    const result = await proxy.forward({ req, res, lane, path, body, requestId, abort, revisionId });
    return { bytesIn: body?.length ?? 0, ...result };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? "/";
    const isPublic = url.startsWith("/v1/");
    if (url.startsWith(PROBE_PATH_PREFIX)) return serveProbe(req, res, url);
    if (!isPublic && !url.startsWith(HANDLE_PATH_PREFIX)) return serveOperator(req, res, url);

    const started = performance.now();
    const requestId = requestIdOf(req);
    res.setHeader(REQUEST_ID_HEADER, requestId);
    let orgId: string | null = null;
    let route: DeploymentRoute | null = null;
    let bytesIn = 0;
    let bytesOut = 0;
    let replicaId: string | null = null;
    let revisionId: string | undefined;
    try {
      const token = bearerToken(req.headers.authorization);
      if (!token) throw new TesseraError("UNAUTHENTICATED", "missing Authorization: Bearer <API key>");
      let path: string;
      if (isPublic) {
        const target = splitTarget(url, 4, 2);
        if (!target) throw new TesseraError("NOT_FOUND", "use /v1/{org}/{app}/{route}");
        const [org, appName] = target.parts as [string, string];
        const identity = await apiKeys.verify(token);
        if (!identity) throw new TesseraError("UNAUTHENTICATED", "invalid or revoked API key");
        // Compared before any lookup: another organisation's names are neither served nor confirmed.
        if (identity.orgSlug !== org)
          throw new TesseraError("FORBIDDEN", `this API key belongs to another organisation than ${org}`);
        const admitted = admission?.admit(identity.orgId) ?? { ok: true };
        if (!admitted.ok) {
          if (admitted.retryAfterS !== undefined) res.setHeader("retry-after", String(admitted.retryAfterS));
          throw new TesseraError(admitted.code, admitted.message);
        }
        orgId = identity.orgId;
        const app = table.snapshot.applications.get(applicationKey(org, appName));
        if (!app || app.orgId !== identity.orgId)
          throw new TesseraError("NOT_FOUND", `no application ${appName} in ${org}`);
        if (!app.ingress)
          throw new TesseraError(
            "NOT_FOUND",
            `application ${appName} has no ingress deployment to serve requests`,
          );
        if (reachesRuntimeEndpoint(target.rest))
          throw new TesseraError("NOT_FOUND", `no route ${target.rest.split("?", 1)[0]}`);
        route = app.ingress;
        path = target.rest;
      } else {
        const target = splitTarget(url, HANDLE_PATH_PREFIX.length, 3);
        if (!target)
          throw new TesseraError("NOT_FOUND", `use ${HANDLE_PATH_PREFIX}{org}/{app}/{deployment}/{route}`);
        const [org, appName, deploymentName] = target.parts as [string, string, string];
        const claims = options.handleSecret ? verifyHandleToken(options.handleSecret, token) : null;
        if (!claims) throw new TesseraError("UNAUTHENTICATED", "invalid handle token");
        const app = table.snapshot.applications.get(applicationKey(org, appName));
        if (app && (app.orgId !== claims.orgId || app.id !== claims.applicationId))
          throw new TesseraError("FORBIDDEN", `this handle token does not grant access to ${org}/${appName}`);
        orgId = claims.orgId;
        route = app?.deployments.get(deploymentName) ?? null;
        if (!route)
          throw new TesseraError("NOT_FOUND", `no deployment ${deploymentName} in ${org}/${appName}`);
        path = target.rest;
      }
      const choice = chooseServingRevision(route, req.headers[REVISION_HEADER]);
      if (choice) {
        revisionId = choice.revisionId;
        res.setHeader(REVISION_HEADER, String(choice.version));
      }
      const served = await serveDeployment(req, res, route, path, requestId, choice?.revisionId);
      bytesIn = served.bytesIn;
      bytesOut = served.bytesOut;
      replicaId = served.replicaId;
    } catch (err) {
      if (!res.destroyed) sendError(res, err, log);
    } finally {
      const status = res.headersSent && !(res.destroyed && !res.writableFinished) ? res.statusCode : 499;
      const latencyMs = performance.now() - started;
      // Requests refused before a deployment was known (401, 403, 404) count under "none".
      metrics.requestFinished(route?.id ?? "none", status, latencyMs / 1000);
      if (orgId)
        usage.record({
          id: randomUUID(),
          orgId,
          deploymentId: route?.id ?? null,
          revisionId: revisionId ?? route?.liveRevisionId ?? null,
          status,
          latencyMs,
          bytesIn,
          bytesOut,
          at: new Date(),
          meta: { requestId, ...(replicaId ? { replicaId } : {}), ...(isPublic ? {} : { via: "handle" }) },
        });
    }
  }

  /**
   * The uptime prober's ingress: the deployment's readiness route through the normal router (P2C,
   * queue, timeouts), authenticated by the platform probe token. A deployment scaled to zero is not
   * woken (the router answers "asleep"). Probes are platform traffic: never metered as usage, never
   * subject to plan admission, counted apart from tenants' requests in the metrics.
   */
  async function serveProbe(req: IncomingMessage, res: ServerResponse, url: string): Promise<void> {
    req.resume();
    const started = performance.now();
    const requestId = requestIdOf(req);
    res.setHeader(REQUEST_ID_HEADER, requestId);
    let route: DeploymentRoute | null = null;
    try {
      if (req.method !== "GET" && req.method !== "HEAD")
        throw new TesseraError("BAD_REQUEST", "probes are GET requests");
      const token = bearerToken(req.headers.authorization);
      if (!token || !options.handleSecret || !verifyProbeToken(options.handleSecret, token))
        throw new TesseraError("UNAUTHENTICATED", "invalid probe token");
      const target = splitTarget(url, PROBE_PATH_PREFIX.length, 3);
      if (target?.rest.split("?", 1)[0] !== "/")
        throw new TesseraError("NOT_FOUND", `use ${PROBE_PATH_PREFIX}{org}/{app}/{deployment}`);
      const [org, appName, deploymentName] = target.parts as [string, string, string];
      route =
        table.snapshot.applications.get(applicationKey(org, appName))?.deployments.get(deploymentName) ??
        null;
      if (!route) throw new TesseraError("NOT_FOUND", `no deployment ${deploymentName} in ${org}/${appName}`);
      const abort = new AbortController();
      res.once("close", () => {
        if (!res.writableFinished) abort.abort();
      });
      const lane = router.lane(route);
      await proxy.forward({
        req,
        res,
        lane,
        path: RUNTIME_PATHS.ready,
        body: undefined,
        requestId,
        abort,
        probe: true,
      });
    } catch (err) {
      if (!res.destroyed) sendError(res, err, log);
    } finally {
      const status = res.headersSent && !(res.destroyed && !res.writableFinished) ? res.statusCode : 499;
      metrics.probeFinished(route?.id ?? "none", status, (performance.now() - started) / 1000);
    }
  }

  async function serveOperator(req: IncomingMessage, res: ServerResponse, url: string): Promise<void> {
    req.resume();
    const path = url.split("?", 1)[0];
    if (path === "/healthz") {
      const loaded = table.snapshot.loadedAt > 0;
      const payload = JSON.stringify({
        ok: loaded,
        gateway: id,
        routingLoadedAt: loaded ? new Date(table.snapshot.loadedAt).toISOString() : null,
        routingError: table.lastError,
        redis: redis.status,
        usageBuffered: usage.buffered,
      });
      res.writeHead(loaded ? 200 : 503, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(payload);
      return;
    }
    if (path === "/metrics") {
      if (options.metricsToken && bearerToken(req.headers.authorization) !== options.metricsToken)
        return sendError(
          res,
          new TesseraError("UNAUTHENTICATED", "metrics need the operator's bearer token"),
          log,
        );
      const text = await metrics.registry.metrics();
      res.writeHead(200, { "content-type": metrics.registry.contentType });
      res.end(text);
      return;
    }
    sendError(
      res,
      new TesseraError("NOT_FOUND", `no route ${path}; requests go to /v1/{org}/{app}/...`),
      log,
    );
  }

  const server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
    active++;
    handle(req, res)
      .catch((err) => sendError(res, err, log))
      .finally(() => {
        active--;
        if (active === 0) onIdle?.();
      });
  });
  server.on("clientError", (_err, socket) => {
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
    else socket.destroy();
  });

  await table.start();
  await Promise.race([notices.ready.catch(() => {}), new Promise((r) => setTimeout(r, 2_000).unref())]);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  log("info", "gateway listening", { url, gateway: id });

  let closing: Promise<void> | null = null;
  return {
    url,
    port: address.port,
    id,
    table,
    router,
    usage,
    keys: apiKeys,
    refresh: () => table.refresh(),
    close() {
      closing ??= (async () => {
        table.stop();
        reporter.stop();
        const stopped = new Promise<void>((r) => server.close(() => r()));
        server.closeIdleConnections();
        if (active > 0)
          await Promise.race([
            new Promise<void>((r) => {
              onIdle = r;
            }),
            new Promise((r) => setTimeout(r, SHUTDOWN_GRACE_MS)),
          ]);
        server.closeAllConnections();
        await stopped;
        // The last samples say 0 so the autoscaler does not count this gateway's requests on.
        await reporter.report();
        await Promise.all([
          usage.close(),
          apiKeys.close(),
          router.close(),
          notices.close(),
          admission?.close?.(),
        ]);
        redis.disconnect();
        log("info", "gateway stopped", { gateway: id });
      })();
      return closing;
    },
  };
}
