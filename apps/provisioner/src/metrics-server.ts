import { createServer, type Server } from "node:http";
import { collectDefaultMetrics, Registry } from "prom-client";

/**
 * The provisioner's Prometheus endpoint (`METRICS_PORT`): process metrics plus whatever the
 * billing jobs register (job runs, meter events, probe outcomes, queue depths, open incidents).
 * `/healthz` answers while the process runs (the Kubernetes liveness probe).
 */
export async function startMetricsServer(
  port: number,
  host = "0.0.0.0",
): Promise<{ registry: Registry; server: Server; close(): Promise<void> }> {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "tessera_provisioner_" });
  const server = createServer((req, res) => {
    if (req.url === "/metrics") {
      registry
        .metrics()
        .then((body) => {
          res.writeHead(200, { "content-type": registry.contentType });
          res.end(body);
        })
        .catch((err) => {
          res.writeHead(500, { "content-type": "text/plain" });
          res.end(String(err));
        });
      return;
    }
    if (req.url === "/healthz") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end('{"ok":true}');
      return;
    }
    res.writeHead(404, { "content-type": "application/json" });
    res.end('{"error":{"code":"NOT_FOUND","message":"try /metrics"}}');
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return {
    registry,
    server,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
