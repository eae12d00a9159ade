import { randomUUID } from "node:crypto";
import { createServer, request as httpRequest, type IncomingMessage, type Server } from "node:http";
import {
  ERROR_CODES,
  type ErrorCode,
  errorBody,
  HANDLE_PATH_PREFIX,
  REQUEST_ID_HEADER,
  verifyHandleToken,
} from "@tessera/core";

/** One application the ingress knows: its scope and its deployments' replica URLs. */
export interface IngressApplication {
  orgId: string;
  orgSlug: string;
  applicationId: string;
  appName: string;
  deployments: Record<string, string>;
}

export interface IngressHit {
  deployment: string;
  path: string;
  requestId: string;
  status: number;
}

/**
 * A test stand-in for the gateway's handle ingress, checking tokens the way the gateway must:
 * `{METHOD} /-/handles/{org}/{app}/{deployment}/{route...}` with `authorization: Bearer <handle
 * token>`; the token's org and application must be the ones in the path. It proxies to the
 * deployment's replica without buffering, keeps (or assigns) `x-request-id`, and aborts the
 * upstream request when its client goes away.
 */
export class HandleIngress {
  readonly hits: IngressHit[] = [];
  private server: Server | undefined;
  url = "";

  constructor(
    private readonly secret: string,
    private readonly apps: IngressApplication[],
  ) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const fail = (code: ErrorCode, message: string) => {
        res.writeHead(ERROR_CODES[code], { "content-type": "application/json" });
        res.end(JSON.stringify(errorBody(code, message)));
      };
      const url = new URL(req.url ?? "/", "http://ingress");
      if (!url.pathname.startsWith(HANDLE_PATH_PREFIX)) return fail("NOT_FOUND", "not a handle path");
      const [orgSlug, appName, deployment, ...rest] = url.pathname
        .slice(HANDLE_PATH_PREFIX.length)
        .split("/");
      const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1] ?? "";
      const scope = verifyHandleToken(this.secret, bearer);
      if (!scope) return fail("UNAUTHENTICATED", "missing or invalid handle token");
      const app = this.apps.find((a) => a.orgSlug === orgSlug && a.appName === appName);
      if (!app || app.orgId !== scope.orgId || app.applicationId !== scope.applicationId)
        return fail("FORBIDDEN", "the handle token does not grant this application");
      const target = deployment ? app.deployments[deployment] : undefined;
      if (!deployment || !target) return fail("NOT_FOUND", `no deployment ${deployment} in ${appName}`);
      const requestId = (req.headers[REQUEST_ID_HEADER] as string | undefined) || randomUUID();
      this.proxy(req, res, `${target}/${rest.join("/")}${url.search}`, requestId, (status) =>
        this.hits.push({ deployment, path: `/${rest.join("/")}`, requestId, status }),
      );
    });
    await new Promise<void>((done) => this.server!.listen(0, "127.0.0.1", done));
    const address = this.server.address();
    this.url = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
    return this;
  }

  private proxy(
    req: IncomingMessage,
    res: import("node:http").ServerResponse,
    target: string,
    requestId: string,
    record: (status: number) => void,
  ): void {
    const headers = { ...req.headers, [REQUEST_ID_HEADER]: requestId };
    delete headers.authorization;
    delete headers.host;
    const upstream = httpRequest(target, { method: req.method, headers, agent: false }, (up) => {
      record(up.statusCode ?? 0);
      res.writeHead(up.statusCode ?? 502, up.headers);
      res.flushHeaders();
      up.pipe(res);
    });
    upstream.on("error", () => {
      if (!res.headersSent) {
        res.writeHead(502, { "content-type": "application/json" });
        res.end(JSON.stringify(errorBody("UPSTREAM_ERROR", "replica unreachable")));
      } else res.destroy();
    });
    // The caller hung up (its own request was cancelled): cancel the callee's request too.
    res.on("close", () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  }

  addApplication(app: IngressApplication): void {
    this.apps.push(app);
  }

  handleUrl(orgSlug: string, appName: string): string {
    return `${this.url}${HANDLE_PATH_PREFIX}${orgSlug}/${appName}`;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((done) => (this.server ? this.server.close(() => done()) : done()));
  }
}
