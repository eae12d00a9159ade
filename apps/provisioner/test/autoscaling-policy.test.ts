import { describe, expect, it } from "vitest";
import {
  aggregateOngoingSamples,
  decideReplicas,
  type OngoingPoint,
  type PolicyState,
  quotaMaxReplicas,
  resolveScaling,
  type ScalingReason,
} from "../src/autoscaling/index.js";

const base = {
  minReplicas: 1,
  maxReplicas: 10,
  targetOngoingRequests: 2,
  upscaleDelayS: 5,
  downscaleDelayS: 10,
};
type Config = typeof base;

/** A window of `n` evenly spaced points ending at `nowMs` (one point per second). */
function window(load: number | number[], nowMs: number, n = 5): OngoingPoint[] {
  const loads = Array.isArray(load) ? load : Array.from({ length: n }, () => load);
  return loads.map((ongoing, i) => ({ at: nowMs - (loads.length - 1 - i) * 1000, ongoing }));
}

interface Step {
  /** Seconds since the start of the case. */
  t: number;
  load: number | number[];
  expect: number;
  reason?: ScalingReason;
}

interface Case {
  name: string;
  config?: Partial<Config>;
  initial: number;
  quota?: number;
  steps: Step[];
}

/** Runs the policy tick by tick, threading its state and applying its decisions, like the loop. */
function simulate(c: Case) {
  const config = { ...base, ...c.config };
  let current = c.initial;
  let state: PolicyState | undefined;
  const t0 = 1_700_000_000_000;
  return c.steps.map((step) => {
    const now = t0 + step.t * 1000;
    const d = decideReplicas({
      config,
      window: window(step.load, now),
      currentReplicas: current,
      now,
      state,
      quotaMaxReplicas: c.quota,
    });
    current = d.desired;
    state = d.state;
    return { t: step.t, desired: d.desired, reason: d.reason };
  });
}

/** `load` repeated every `every` seconds from `from` to `to` (exclusive), all expecting `expect`. */
function hold(from: number, to: number, load: number | number[], expect: number, every = 1): Step[] {
  const out: Step[] = [];
  for (let t = from; t < to; t += every) out.push({ t, load, expect });
  return out;
}

const cases: Case[] = [
  {
    name: "step up: waits the upscale delay, then goes to ceil(load/target)",
    initial: 1,
    steps: [
      { t: 0, load: 10, expect: 1, reason: "upscale_pending" },
      { t: 3, load: 10, expect: 1, reason: "upscale_pending" },
      { t: 5, load: 10, expect: 5, reason: "upscale" },
      { t: 6, load: 10, expect: 5, reason: "steady" },
    ],
  },
  {
    name: "step down: waits the downscale delay",
    initial: 5,
    steps: [
      { t: 0, load: 2, expect: 5, reason: "downscale_pending" },
      { t: 9, load: 2, expect: 5, reason: "downscale_pending" },
      { t: 10, load: 2, expect: 1, reason: "downscale" },
    ],
  },
  {
    name: "averages over the window: a one-point spike in a window of five is smoothed",
    initial: 1,
    config: { upscaleDelayS: 0 },
    steps: [{ t: 0, load: [0, 0, 0, 0, 10], expect: 1, reason: "steady" }],
  },
  {
    name: "spike shorter than the upscale delay: no change, and the delay restarts",
    initial: 1,
    steps: [
      { t: 0, load: 10, expect: 1 },
      { t: 2, load: 10, expect: 1 },
      { t: 4, load: 1, expect: 1, reason: "steady" },
      { t: 6, load: 10, expect: 1 },
      { t: 10, load: 10, expect: 1 },
      { t: 11, load: 10, expect: 5, reason: "upscale" },
    ],
  },
  {
    name: "dip shorter than the downscale delay: no change",
    initial: 5,
    steps: [
      { t: 0, load: 2, expect: 5 },
      { t: 8, load: 10, expect: 5, reason: "steady" },
      { t: 12, load: 2, expect: 5 },
      { t: 20, load: 2, expect: 5, reason: "downscale_pending" },
      { t: 22, load: 2, expect: 1, reason: "downscale" },
    ],
  },
  {
    name: "flapping load around the current size: never flaps",
    initial: 3,
    steps: Array.from({ length: 40 }, (_, i) => ({ t: i * 2, load: i % 2 === 0 ? 12 : 2, expect: 3 })),
  },
  {
    name: "zero traffic: down to minReplicas, never below",
    initial: 5,
    config: { minReplicas: 2 },
    steps: [
      ...hold(0, 10, 0, 5),
      { t: 10, load: 0, expect: 2, reason: "downscale" },
      ...hold(11, 40, 0, 2, 3),
    ],
  },
  {
    name: "zero traffic with minReplicas 0: to zero after downscaleDelayS",
    initial: 3,
    config: { minReplicas: 0 },
    steps: [
      ...hold(0, 10, 0, 3),
      { t: 10, load: 0, expect: 0, reason: "scale_to_zero" },
      ...hold(11, 20, 0, 0),
    ],
  },
  {
    name: "scale to zero needs zero traffic for the whole delay, not just low traffic",
    initial: 3,
    config: { minReplicas: 0 },
    steps: [
      { t: 0, load: 1, expect: 3 },
      { t: 10, load: 1, expect: 1, reason: "downscale" },
      { t: 12, load: 0, expect: 1, reason: "downscale_pending" },
      { t: 21, load: 0, expect: 1, reason: "downscale_pending" },
      { t: 22, load: 0, expect: 0, reason: "scale_to_zero" },
    ],
  },
  {
    name: "long low traffic then zero: holds one replica until zero traffic lasted the delay",
    initial: 4,
    config: { minReplicas: 0 },
    steps: [
      { t: 0, load: 0.5, expect: 4 },
      { t: 8, load: 0, expect: 4 },
      { t: 10, load: 0, expect: 1, reason: "downscale" },
      { t: 17, load: 0, expect: 1 },
      { t: 18, load: 0, expect: 0, reason: "scale_to_zero" },
    ],
  },
  {
    name: "an empty window counts as zero traffic",
    initial: 2,
    config: { minReplicas: 0 },
    steps: [
      { t: 0, load: [], expect: 2 },
      { t: 10, load: [], expect: 0, reason: "scale_to_zero" },
    ],
  },
  {
    name: "wake from zero: any traffic gives one replica at once",
    initial: 0,
    config: { minReplicas: 0 },
    steps: [
      { t: 0, load: 0, expect: 0, reason: "steady" },
      { t: 1, load: [0, 0, 0, 0, 1], expect: 1, reason: "cold_start" },
    ],
  },
  {
    name: "wake from zero under heavy load goes straight to the load's size",
    initial: 0,
    config: { minReplicas: 0 },
    steps: [{ t: 0, load: 9, expect: 5, reason: "cold_start" }],
  },
  {
    name: "max bound",
    initial: 2,
    config: { upscaleDelayS: 0 },
    steps: [{ t: 0, load: 100, expect: 10, reason: "upscale" }],
  },
  {
    name: "quota bound caps an upscale below maxReplicas",
    initial: 1,
    quota: 3,
    config: { upscaleDelayS: 1 },
    steps: [
      { t: 0, load: 20, expect: 1 },
      { t: 1, load: 20, expect: 3, reason: "upscale" },
      { t: 2, load: 20, expect: 3, reason: "steady" },
    ],
  },
  {
    name: "quota below current (quota shrank): down to the quota at once",
    initial: 5,
    quota: 3,
    steps: [{ t: 0, load: 10, expect: 3, reason: "quota" }],
  },
  {
    name: "quota of zero keeps a cold deployment at zero",
    initial: 0,
    quota: 0,
    config: { minReplicas: 0 },
    steps: [{ t: 0, load: 5, expect: 0, reason: "quota" }],
  },
  {
    name: "config bounds moved: applied at once",
    initial: 12,
    steps: [{ t: 0, load: 30, expect: 10, reason: "bounds" }],
  },
  {
    name: "minReplicas raised above current: applied at once",
    initial: 0,
    config: { minReplicas: 2 },
    steps: [{ t: 0, load: 0, expect: 2, reason: "bounds" }],
  },
  {
    name: "fractional target without float overshoot",
    initial: 1,
    config: { targetOngoingRequests: 0.1, upscaleDelayS: 0 },
    steps: [{ t: 0, load: 0.3, expect: 3, reason: "upscale" }],
  },
  {
    name: "upscale goes to the desired value at decision time (Ray Serve), not the one at the start",
    initial: 1,
    steps: [
      { t: 0, load: 4, expect: 1 },
      { t: 3, load: 8, expect: 1 },
      { t: 5, load: 14, expect: 7, reason: "upscale" },
    ],
  },
];

describe("decideReplicas", () => {
  it.each(cases)("$name", (c) => {
    const got = simulate(c);
    c.steps.forEach((step, i) => {
      const g = got[i]!;
      expect({ t: g.t, desired: g.desired }, `t=${step.t}s`).toEqual({ t: step.t, desired: step.expect });
      if (step.reason) expect(g.reason, `reason at t=${step.t}s`).toBe(step.reason);
    });
  });

  it("is pure: the same input gives the same output and the input state is not mutated", () => {
    const state: PolicyState = { upSince: 1000, downSince: null, zeroSince: null };
    const frozen = Object.freeze({ ...state });
    const input = { config: base, window: window(10, 7000), currentReplicas: 1, now: 7000, state: frozen };
    expect(decideReplicas(input)).toEqual(decideReplicas(input));
    expect(frozen).toEqual(state);
  });

  it("reports the average and the unclamped desired value", () => {
    const d = decideReplicas({ config: base, window: window([1, 3], 0), currentReplicas: 1, now: 0 });
    expect(d.avgOngoing).toBe(2);
    expect(d.rawDesired).toBe(1);
  });
});

describe("aggregateOngoingSamples", () => {
  const opts = { now: 10_000, lookbackMs: 1000, bucketMs: 250, staleMs: 600 };
  it.each([
    { name: "no samples: a window of zeros", members: [], expect: [0, 0, 0, 0] },
    {
      name: "sums the latest sample per gateway per bucket",
      members: ["g1:9200:1", "g1:9240:3", "g2:9100:4", "g1:9500:2", "g2:9700:1", "g1:9990:5"],
      // bucket ends 9250, 9500, 9750, 10000: g1 3,2,2,5; g2 4,4,1,1
      expect: [7, 6, 3, 6],
    },
    {
      name: "a gateway's value stops counting once stale",
      members: ["g1:9000:4"],
      // 9250-9000=250 <600: counts; 9500: 500 counts; 9750: 750 stale; 10000 stale
      expect: [4, 4, 0, 0],
    },
    {
      name: "gateway ids containing ':' and malformed members",
      members: ["host:4000:9900:2", "garbage", "g:x:1", "g:9900:-3"],
      expect: [0, 0, 0, 2],
    },
    {
      name: "a sample from a clock slightly ahead counts now",
      members: ["g1:10050:3"],
      expect: [0, 0, 0, 3],
    },
  ])("$name", ({ members, expect: values }) => {
    const w = aggregateOngoingSamples(members, opts);
    expect(w.points.map((p) => p.ongoing)).toEqual(values);
    expect(w.points.map((p) => p.at)).toEqual([9250, 9500, 9750, 10_000]);
  });

  it("counts malformed members instead of throwing", () => {
    expect(aggregateOngoingSamples(["garbage", "g:x:1", "g:9900:-3", "g:9900:1"], opts)).toMatchObject({
      malformed: 3,
      gateways: 1,
    });
  });
});

describe("quotaMaxReplicas", () => {
  const quota = { cpus: 8, memoryMb: 8192, gpus: 1, maxReplicas: 10 };
  const small = { cpus: 1, memoryMb: 512, gpus: 0 };
  it.each([
    { name: "empty cluster: the tightest resource wins", own: small, others: [], expect: 8 },
    { name: "replica count limit", own: { cpus: 0.5, memoryMb: 256, gpus: 0 }, others: [], expect: 10 },
    {
      name: "others' targets use the room",
      own: small,
      others: [{ targetReplicas: 3, resources: small }],
      expect: 5,
    },
    { name: "fractional GPUs", own: { cpus: 0.5, memoryMb: 256, gpus: 0.3 }, others: [], expect: 3 },
    {
      name: "fractional GPUs with others (0.1 + 0.3*3 = 1.0 exactly)",
      own: { cpus: 0.5, memoryMb: 256, gpus: 0.3 },
      others: [{ targetReplicas: 1, resources: { cpus: 0.5, memoryMb: 256, gpus: 0.1 } }],
      expect: 3,
    },
    {
      name: "over quota: zero, never negative",
      own: small,
      others: [{ targetReplicas: 12, resources: small }],
      expect: 0,
    },
  ])("$name", ({ own, others, expect: n }) => {
    expect(quotaMaxReplicas(quota, own, others)).toBe(n);
  });
});

describe("resolveScaling", () => {
  const auto = { minReplicas: 0, maxReplicas: 4 };
  it.each([
    { name: "row scaling wins", scaling: { numReplicas: 2 }, rev: { autoscaling: auto }, mode: "fixed" },
    {
      name: "empty row scaling falls back to the revision",
      scaling: {},
      rev: { autoscaling: auto },
      mode: "autoscaling",
    },
    { name: "neither: one fixed replica", scaling: {}, rev: {}, mode: "fixed" },
    { name: "no revision", scaling: {}, rev: null, mode: "fixed" },
    {
      name: "invalid row scaling",
      scaling: { autoscaling: { minReplicas: 5, maxReplicas: 1 } },
      rev: {},
      mode: "invalid",
    },
    { name: "both set", scaling: { numReplicas: 1, autoscaling: auto }, rev: {}, mode: "invalid" },
  ])("$name", ({ scaling, rev, mode }) => {
    expect(resolveScaling(scaling, rev).mode).toBe(mode);
  });

  it("fills Ray Serve-like defaults", () => {
    const s = resolveScaling({ autoscaling: auto }, null);
    expect(s).toEqual({
      mode: "autoscaling",
      config: {
        minReplicas: 0,
        maxReplicas: 4,
        targetOngoingRequests: 2,
        upscaleDelayS: 30,
        downscaleDelayS: 600,
      },
    });
  });
});
