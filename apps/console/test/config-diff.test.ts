import { describe, expect, it } from "vitest";
import { configDiff } from "../src/lib/config-diff.js";

describe("configDiff", () => {
  it("lists changed, added and removed leaves by path", () => {
    const before = {
      runtime: "node",
      resources: { cpus: 0.5, memoryMb: 256 },
      numReplicas: 1,
      environment: { kind: "none" },
    };
    const after = {
      runtime: "node",
      resources: { cpus: 1, memoryMb: 256 },
      autoscaling: { minReplicas: 0, maxReplicas: 4 },
      environment: { kind: "npm", dependencies: ["zod"] },
    };
    expect(configDiff(before, after)).toEqual([
      { path: "autoscaling.maxReplicas", before: undefined, after: "4" },
      { path: "autoscaling.minReplicas", before: undefined, after: "0" },
      { path: "environment.dependencies", before: undefined, after: '["zod"]' },
      { path: "environment.kind", before: '"none"', after: '"npm"' },
      { path: "numReplicas", before: "1", after: undefined },
      { path: "resources.cpus", before: "0.5", after: "1" },
    ]);
  });

  it("is empty for equal configs", () => {
    expect(configDiff({ a: { b: [1, 2] } }, { a: { b: [1, 2] } })).toEqual([]);
  });
});
