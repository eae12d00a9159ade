import { afterAll, describe, expect, it } from "vitest";
import { reachesRuntimeEndpoint, splitTarget } from "../src/gateway.js";
import { DeploymentLane, pick, ReplicaSlot } from "../src/router.js";
import { type DeploymentRoute, isParked, limitsOf } from "../src/routing-table.js";

const route: DeploymentRoute = {
  id: "d",
  orgId: "o",
  applicationId: "a",
  name: "d",
  liveRevisionId: null,
  limits: limitsOf({ maxOngoingRequests: 3 }),
  parked: false,
  replicas: [],
};
const lane = new DeploymentLane(route);
const slots = ["a", "b", "c", "d"].map(
  (id, i) => new ReplicaSlot(id, `http://127.0.0.1:${1000 + i}`, lane, 1),
);
afterAll(() => Promise.all(slots.map((s) => s.pool.close())));

function withLoad(loads: number[]): ReplicaSlot[] {
  slots.forEach((s, i) => {
    s.inFlight = loads[i]!;
    s.avoidUntil = 0;
    s.draining = false;
  });
  return slots.slice(0, loads.length);
}

describe("power of two choices", () => {
  it("never picks a replica at maxOngoingRequests, a draining or an excluded one", () => {
    for (let i = 0; i < 200; i++) {
      const replicas = withLoad([3, 3, 1, 2]);
      replicas[2]!.draining = true;
      const picked = pick(replicas, new Set([replicas[1]!]), Date.now());
      expect(picked?.id).toBe("d");
    }
    expect(pick(withLoad([3, 3]), undefined, Date.now())).toBeUndefined();
  });

  it("prefers the less loaded of the two it samples", () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 2000; i++) {
      const id = pick(withLoad([0, 2, 2, 2]), undefined, Date.now())!.id;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    // "a" wins whenever it is one of the two sampled: half of all pairs; ties split the rest.
    expect(counts.get("a")!).toBeGreaterThan(800);
    expect(counts.size).toBe(4);
  });

  it("passes over a replica that refused a connection while another has room", () => {
    const now = Date.now();
    for (let i = 0; i < 100; i++) {
      const replicas = withLoad([0, 2]);
      replicas[0]!.avoidUntil = now + 1000;
      expect(pick(replicas, undefined, now)!.id).toBe("b");
    }
    const alone = withLoad([0]);
    alone[0]!.avoidUntil = now + 1000;
    expect(pick(alone, undefined, now)!.id).toBe("a");
  });
});

describe("request targets", () => {
  it("splits /v1/{org}/{app}/{route} and keeps the query", () => {
    expect(splitTarget("/v1/acme/shop/items/7?q=1", 4, 2)).toEqual({
      parts: ["acme", "shop"],
      rest: "/items/7?q=1",
    });
    expect(splitTarget("/v1/acme/shop", 4, 2)).toEqual({ parts: ["acme", "shop"], rest: "/" });
    expect(splitTarget("/v1/acme/shop?x=1", 4, 2)).toEqual({ parts: ["acme", "shop"], rest: "/?x=1" });
    expect(splitTarget("/v1/acme", 4, 2)).toBeNull();
    expect(splitTarget("/v1//shop/x", 4, 2)).toBeNull();
    expect(splitTarget("/v1/a%ZZ/shop/x", 4, 2)).toBeNull();
  });
});

describe("runtime endpoints stay private", () => {
  it("spots /-/ however the path is spelled", () => {
    for (const path of [
      "/-/stats",
      "/-",
      "//-/stats",
      "/%2D/stats",
      "/%2d/call/x?y=1",
      "/a/../-/stats",
      "/./-/stats",
      "/%2e%2e/-/stats",
      "/x/%2E%2E/-/ready",
      "/\\-/stats",
      "/%ZZ",
    ])
      expect(reachesRuntimeEndpoint(path), path).toBe(true);
    for (const path of ["/", "/items/7?q=-/x", "/a-b/c", "/deduplicate", "/x/-y", "/v1.2/x"])
      expect(reachesRuntimeEndpoint(path), path).toBe(false);
  });
});

describe("deployment state", () => {
  it("treats numReplicas 0 as parked and an autoscaled deployment at zero as asleep", () => {
    expect(isParked("ready", { numReplicas: 0 }, null)).toBe(true);
    expect(isParked("parked", {}, null)).toBe(true);
    expect(isParked("ready", { autoscaling: { minReplicas: 0, maxReplicas: 2 } }, null)).toBe(false);
    expect(isParked("ready", {}, { numReplicas: 0 })).toBe(true);
    expect(isParked("ready", { numReplicas: 2 }, { numReplicas: 0 })).toBe(false);
  });

  it("reads limits from the revision config with the schema's defaults", () => {
    expect(limitsOf(null)).toEqual({
      maxOngoingRequests: 8,
      maxQueuedRequests: 100,
      requestTimeoutMs: 60_000,
      maxBodyBytes: 10 * 1024 * 1024,
    });
    expect(limitsOf({ requestTimeoutS: 2.5, maxOngoingRequests: "x" })).toMatchObject({
      requestTimeoutMs: 2500,
      maxOngoingRequests: 8,
    });
  });
});
