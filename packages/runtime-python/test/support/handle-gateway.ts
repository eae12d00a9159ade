import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { send, type TestReplica } from "./replica-harness.js";

/**
 * The gateway's handle endpoint reduced to what a replica relies on: a bearer token, routing
 * `{HANDLE_URL}/{deployment}/{route}` to a replica of that deployment, the request id passed on,
 * status and body passed back. Records every routed call as `{deployment}{route}`.
 */
export class HandleGateway {
  readonly calls: string[] = [];
  readonly replicas = new Map<string, TestReplica>();
  private server: Server;
  private port = 0;

  constructor(
    readonly token: string,
    private readonly prefix = "/-/handles/org/app",
  ) {
    this.server = createServer((req, res) => {
      const url = req.url ?? "";
      const m = url.startsWith(`${this.prefix}/`)
        ? /^([^/]+)(\/.*)$/.exec(url.slice(this.prefix.length + 1))
        : null;
      if (req.headers.authorization !== `Bearer ${this.token}`) return void res.writeHead(401).end();
      const target = m ? this.replicas.get(m[1]!) : undefined;
      if (!m || !target) return void res.writeHead(404).end();
      this.calls.push(`${m[1]}${m[2]}`);
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", async () => {
        const reply = await send(target.url, m[2]!, {
          method: req.method,
          raw: Buffer.concat(chunks),
          headers: {
            "content-type": "application/json",
            "x-request-id": String(req.headers["x-request-id"]),
          },
        });
        res.writeHead(reply.status, { "content-type": "application/json" }).end(reply.text);
      });
    });
  }

  async listen(): Promise<{ url: string; token: string }> {
    await new Promise<void>((done) => this.server.listen(0, "127.0.0.1", done));
    this.port = (this.server.address() as AddressInfo).port;
    return { url: `http://127.0.0.1:${this.port}${this.prefix}`, token: this.token };
  }

  close(): Promise<void> {
    return new Promise((done) => this.server.close(() => done()));
  }
}
