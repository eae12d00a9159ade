import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Router } from "./router.js";

/**
 * Prometheus metrics on a registry of its own (several gateways in one process, as in tests,
 * never share counters). In-flight gauges are read from the router at scrape time, so the hot
 * path only pays for one counter and one histogram update.
 */
export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<"deployment" | "status">;
  private readonly latency: Histogram<"deployment">;
  /** Uptime probes apart from tenants' requests, so probes never inflate a tenant's request rate. */
  private readonly probes: Counter<"deployment" | "status">;
  private readonly probeLatency: Histogram<"deployment">;
  /**
   * Label children per deployment (and status): prom-client hashes the label object on every
   * `inc(labels)`, which is per-request garbage; a child is looked up once.
   */
  private readonly children = new Map<
    string,
    {
      latency: ReturnType<Histogram<"deployment">["labels"]>;
      byStatus: Map<number, ReturnType<Counter<"deployment" | "status">["labels"]>>;
    }
  >();

  constructor(router: Router) {
    this.requests = new Counter({
      name: "tessera_gateway_requests_total",
      help: "Requests answered by the gateway, by deployment id and HTTP status",
      labelNames: ["deployment", "status"],
      registers: [this.registry],
    });
    this.latency = new Histogram({
      name: "tessera_gateway_request_duration_seconds",
      help: "Time from request arrival to the end of the response, by deployment id",
      labelNames: ["deployment"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [this.registry],
    });
    this.probes = new Counter({
      name: "tessera_gateway_probes_total",
      help: "Uptime probes answered by the gateway's probe ingress, by deployment id and HTTP status",
      labelNames: ["deployment", "status"],
      registers: [this.registry],
    });
    this.probeLatency = new Histogram({
      name: "tessera_gateway_probe_duration_seconds",
      help: "Time to answer an uptime probe, by deployment id",
      labelNames: ["deployment"],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers: [this.registry],
    });
    new Gauge({
      name: "tessera_gateway_in_flight_requests",
      help: "Requests sent to a replica and not yet answered, by deployment id",
      labelNames: ["deployment"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [id, lane] of router.lanes) this.set({ deployment: id }, lane.inFlight);
      },
    });
    new Gauge({
      name: "tessera_gateway_queued_requests",
      help: "Requests waiting for a replica (all busy, or held while the deployment wakes), by deployment id",
      labelNames: ["deployment"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [id, lane] of router.lanes) this.set({ deployment: id }, lane.waiters.length);
      },
    });
    new Gauge({
      name: "tessera_gateway_replica_in_flight_requests",
      help: "Requests in flight per replica",
      labelNames: ["deployment", "replica"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [id, lane] of router.lanes)
          for (const slot of lane.replicas) this.set({ deployment: id, replica: slot.id }, slot.inFlight);
      },
    });
  }

  requestFinished(deploymentId: string, status: number, seconds: number): void {
    let children = this.children.get(deploymentId);
    if (!children) {
      children = { latency: this.latency.labels(deploymentId), byStatus: new Map() };
      this.children.set(deploymentId, children);
    }
    let counter = children.byStatus.get(status);
    if (!counter) {
      counter = this.requests.labels(deploymentId, String(status));
      children.byStatus.set(status, counter);
    }
    counter.inc();
    children.latency.observe(seconds);
  }

  /** Probes are rare (one per deployment and round): plain label lookups are cheap enough. */
  probeFinished(deploymentId: string, status: number, seconds: number): void {
    this.probes.labels(deploymentId, String(status)).inc();
    this.probeLatency.labels(deploymentId).observe(seconds);
  }
}
