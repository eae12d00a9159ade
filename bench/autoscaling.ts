/**
 * Autoscaling and rollout benchmark on the whole stack in one process (tRPC API, BullMQ,
 * provisioner with the local driver, gateway), the way the end-to-end test runs it:
 * - cold start from zero through the gateway, TS and Python, against a warm request;
 * - time for a step load (concurrency 1 -> 4, targetOngoingRequests 1) to reach 4 replicas;
 * - requests failed during a rollout under continuous load, and during a broken revision's
 *   rollback.
 * Knob: BENCH_COLD_SAMPLES (3). Measurements only: nothing here asserts a timing.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  continuousLoad,
  deploy,
  type LocalStack,
  readyReplicaCount,
  send,
  startLocalStack,
  type Tenant,
  waitFailed,
  waitLive,
} from "../apps/provisioner/test/support/local-stack.js";
import { waitFor } from "../apps/provisioner/test/support/platform.js";

const ROOT = join(import.meta.dirname, "..");
const COLD_SAMPLES = Number(process.env.BENCH_COLD_SAMPLES ?? 3);
const ROWS = [
  { id: 2, name: "b" },
  { id: 1, name: "a" },
  { id: 2, name: "b" },
];

interface Runtime {
  name: "python" | "ts";
  config: { runtime: string; entry: string };
  file: string;
  code: string;
  /** The same handler answering `/info` with `edition: 2`: a visible new revision. */
  nextEdition: string;
  /** Code that fails at import: a revision that never becomes healthy. */
  broken: string;
}

function runtimes(): Runtime[] {
  const python = readFileSync(join(ROOT, "examples", "python-dataframe", "handler.py"), "utf8");
  const ts = readFileSync(join(ROOT, "examples", "ts-dataframe", "handler.ts"), "utf8");
  const edition2 = (code: string, marker: string, replacement: string) => {
    if (!code.includes(marker)) throw new Error(`example changed: "${marker}" not found`);
    return code.replace(marker, replacement);
  };
  return [
    {
      name: "ts",
      config: { runtime: "node", entry: "handler.ts:Dataframe" },
      file: "handler.ts",
      code: ts,
      nextEdition: edition2(ts, 'runtime: "node",', 'runtime: "node", edition: 2,'),
      broken: 'throw new Error("this revision cannot even load");\n',
    },
    {
      name: "python",
      config: { runtime: "python", entry: "handler:Dataframe" },
      file: "handler.py",
      code: python,
      nextEdition: edition2(python, '"runtime": "python",', '"runtime": "python", "edition": 2,'),
      broken: "raise RuntimeError('this revision cannot even import')\n",
    },
  ];
}

export interface ColdStartFigures {
  runtime: string;
  warmMs: number[];
  coldMs: number[];
  /** From the last request until the scale-to-zero decision, per sample. */
  idleToZeroMs: number[];
  /** Requests that did not answer 200, with what they answered. */
  failures: string[];
}
export interface StepLoadFigures {
  runtime: string;
  target: number;
  /** From the step until the target count of replicas was ready. */
  toTargetMs: number;
  /** From the step until the first scale-up decision was recorded. */
  firstDecisionMs: number;
  sent: number;
  failed: number;
}
export interface RolloutFigures {
  case: string;
  durationMs: number;
  sent: number;
  failed: number;
  outcome: string;
  /** What the failed requests answered. */
  failures: string[];
}
export interface AutoscalingFigures {
  coldStarts: ColdStartFigures[];
  stepLoad: StepLoadFigures[];
  rollouts: RolloutFigures[];
}

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const started = performance.now();
  const value = await fn();
  return { ms: performance.now() - started, value };
}

/** No replica of the deployment left, not even one still draining: the next request is cold. */
async function noReplicasLeft(stack: LocalStack, t: Tenant, deploymentId: string): Promise<boolean> {
  if ((await readyReplicaCount(stack, deploymentId)) !== 0) return false;
  const left = (await stack.driver()?.listReplicas(t.clusterId)) ?? [];
  return !left.some((r) => r.deploymentId === deploymentId && r.phase !== "stopped" && r.phase !== "failed");
}

/** A scale-to-zero deployment of one runtime, measured warm once and cold once per sample. */
class ColdStartSubject {
  readonly figures: ColdStartFigures;
  private lastRequestAt = 0;

  private constructor(
    private readonly stack: LocalStack,
    private readonly t: Tenant,
    private readonly rt: Runtime,
    private readonly deploymentId: string,
  ) {
    this.figures = { runtime: rt.name, warmMs: [], coldMs: [], idleToZeroMs: [], failures: [] };
  }

  static async deploy(stack: LocalStack, t: Tenant, rt: Runtime): Promise<ColdStartSubject> {
    const r = await deploy(
      t,
      `cold-${rt.name}`,
      "dataframe",
      {
        ...rt.config,
        autoscaling: {
          minReplicas: 0,
          maxReplicas: 1,
          initialReplicas: 1,
          targetOngoingRequests: 1,
          upscaleDelayS: 0,
          downscaleDelayS: 1,
        },
      },
      { [rt.file]: rt.code },
    );
    await waitLive(t, r.deployment.id, r.revision.id);
    return new ColdStartSubject(stack, t, rt, r.deployment.id);
  }

  /** One timed request; a failure is counted in the figures (with its reason), never retried. */
  private async call(kind: "warm" | "cold" | null): Promise<boolean> {
    const { ms, value } = await timed(() =>
      send(this.t, `cold-${this.rt.name}`, "/deduplicate", { rows: ROWS }),
    );
    this.lastRequestAt = Date.now();
    if (value.status === 200) {
      if (kind === "warm") this.figures.warmMs.push(ms);
      if (kind === "cold") this.figures.coldMs.push(ms);
      return true;
    }
    this.figures.failures.push(
      `${kind ?? "warm-up"} request: HTTP ${value.status} ${JSON.stringify(value.body)}; ${await this.lastDecision()}`,
    );
    return false;
  }

  /** The scaling decision last recorded before now, to tell what a failed request ran into. */
  private async lastDecision(): Promise<string> {
    const [e] = await this.t.api.deployments.scalingEvents({
      orgId: this.t.orgId,
      deploymentId: this.deploymentId,
      limit: 1,
    });
    if (!e) return "no scaling decision yet";
    const ago = Date.now() - new Date(e.at).getTime();
    return `last scaling decision ${e.fromReplicas} -> ${e.toReplicas} (${e.reason}) ${ago} ms before`;
  }

  /** The baseline: the same request on the same path, with a replica already running and warmed. */
  async measureWarm() {
    await waitFor("first answer", () => this.call(null), 60_000);
    // Long enough for the autoscaler to have seen this traffic (1 s report, 1 s tick).
    const warmUpUntil = Date.now() + 3000;
    while (Date.now() < warmUpUntil) await this.call(null);
    for (let i = 0; i < 10; i++) await this.call("warm");
  }

  async waitForZero() {
    const idleSince = this.lastRequestAt;
    await waitFor("scaled to zero", () => noReplicasLeft(this.stack, this.t, this.deploymentId), 120_000);
    const events = await this.t.api.deployments.scalingEvents({
      orgId: this.t.orgId,
      deploymentId: this.deploymentId,
    });
    const toZero = events.find((e) => e.toReplicas === 0 && new Date(e.at).getTime() >= idleSince);
    if (toZero) this.figures.idleToZeroMs.push(new Date(toZero.at).getTime() - idleSince);
  }

  async measureCold() {
    await this.call("cold");
  }
}

async function stepLoad(stack: LocalStack, t: Tenant, rt: Runtime): Promise<StepLoadFigures> {
  const app = `step-${rt.name}`;
  const target = 4;
  const r = await deploy(
    t,
    app,
    "dataframe",
    {
      ...rt.config,
      autoscaling: {
        minReplicas: 1,
        maxReplicas: target,
        targetOngoingRequests: 1,
        upscaleDelayS: 0,
        downscaleDelayS: 60,
      },
    },
    { [rt.file]: rt.code },
  );
  await waitLive(t, r.deployment.id, r.revision.id);
  // Slow streamed requests (6 rows 200 ms apart) keep each worker's request ongoing.
  const call = () => send(t, app, "/rows/stream?delay_ms=200", { rows: ROWS.concat(ROWS) });
  await waitFor("first answer", async () => (await call()).status === 200, 60_000);
  const base = continuousLoad(call, 1);
  await waitFor("steady load at concurrency 1", () => base.sent >= 2, 60_000);
  const stepAt = Date.now();
  const step = continuousLoad(call, target - 1);
  const { ms: toTargetMs } = await timed(() =>
    waitFor(
      `${target} ready replicas`,
      async () => (await readyReplicaCount(stack, r.deployment.id)) >= target,
      120_000,
    ),
  );
  const [a, b] = await Promise.all([base.stop(), step.stop()]);
  const decisions = await t.api.deployments.scalingEvents({ orgId: t.orgId, deploymentId: r.deployment.id });
  const firstUp = decisions
    .filter((e) => e.toReplicas > e.fromReplicas && new Date(e.at).getTime() >= stepAt)
    .map((e) => new Date(e.at).getTime())
    .sort((x, y) => x - y)[0];
  // Its replicas would only take CPU from what follows.
  await t.api.deployments.delete({ orgId: t.orgId, deploymentId: r.deployment.id });
  await waitFor("step deployment stopped", () => noReplicasLeft(stack, t, r.deployment.id), 60_000);
  return {
    runtime: rt.name,
    target,
    toTargetMs,
    firstDecisionMs: firstUp === undefined ? Number.NaN : firstUp - stepAt,
    sent: a.sent + b.sent,
    failed: a.failures.length + b.failures.length,
  };
}

async function rollouts(stack: LocalStack, t: Tenant, rt: Runtime): Promise<RolloutFigures[]> {
  const app = `roll-${rt.name}`;
  const config = { ...rt.config, numReplicas: 2 };
  const first = await deploy(t, app, "dataframe", config, { [rt.file]: rt.code });
  await waitLive(t, first.deployment.id, first.revision.id);
  await waitFor("first answer", async () => (await send(t, app, "/info")).status === 200, 60_000);
  let failures: string[] = [];
  const call = async () => {
    const res = await send(t, app, "/deduplicate", { rows: ROWS });
    if (res.status !== 200) failures.push(`HTTP ${res.status} ${JSON.stringify(res.body)}`);
    return res;
  };

  const load = continuousLoad(call, 2);
  const rollout = await timed(async () => {
    const r = await deploy(t, app, "dataframe", config, { [rt.file]: rt.nextEdition });
    await waitLive(t, r.deployment.id, r.revision.id);
    await waitFor("new code answers", async () => (await send(t, app, "/info")).body.edition === 2, 60_000);
  });
  const rolled = await load.stop();
  const rolloutFailures = failures;
  failures = [];

  const brokenLoad = continuousLoad(call, 2);
  const rollback = await timed(async () => {
    const r = await deploy(t, app, "dataframe", config, { [rt.file]: rt.broken });
    return waitFailed(t, r.deployment.id, r.revision.id);
  });
  const broken = await brokenLoad.stop();
  const stillServing = (await send(t, app, "/info")).body.edition === 2;
  await t.api.deployments.delete({ orgId: t.orgId, deploymentId: first.deployment.id });
  await waitFor("rollout deployment stopped", () => noReplicasLeft(stack, t, first.deployment.id), 60_000);
  return [
    {
      case: `${rt.name} rollout, 2 replicas`,
      durationMs: rollout.ms,
      sent: rolled.sent,
      failed: rolled.failures.length,
      outcome: "new revision live",
      failures: rolloutFailures,
    },
    {
      case: `${rt.name} broken revision`,
      durationMs: rollback.ms,
      sent: broken.sent,
      failed: broken.failures.length,
      outcome: `${rollback.value.state}${stillServing ? ", old revision serving" : ", OLD REVISION NOT SERVING"}`,
      failures,
    },
  ];
}

export async function benchAutoscaling(): Promise<AutoscalingFigures> {
  // The loops that feed the autoscaler run at their production periods (gateway load report and
  // autoscaler tick, 1 s each), not the faster ones the tests use.
  const stack = await startLocalStack("bench-autoscaling", {
    provisioner: { autoscalerIntervalMs: undefined },
    gateway: { loadReportMs: undefined },
  });
  const progress = (msg: string) =>
    console.error(`[autoscaling ${new Date().toISOString().slice(11, 19)}] ${msg}`);
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= stack.close();
    return closing;
  };
  // Replicas run in their own process groups: an interrupted run must still stop them.
  const interrupted = async (signal: NodeJS.Signals) => {
    progress(`${signal}: stopping everything this benchmark started`);
    await close().catch((err) => console.error(err));
    process.exit(130);
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
  try {
    const t = await stack.tenant("bench@autoscaling.example");
    const figures: AutoscalingFigures = { coldStarts: [], stepLoad: [], rollouts: [] };
    const all = runtimes();
    progress("deploying the scale-to-zero deployments");
    const subjects: ColdStartSubject[] = [];
    for (const rt of all) {
      const subject = await ColdStartSubject.deploy(stack, t, rt);
      // Right after deploy: with no traffic seen yet, the autoscaler soon takes it to zero.
      await subject.measureWarm();
      subjects.push(subject);
    }
    // Scaling to zero takes a look-back period (30 s) without traffic: the other measurements run
    // in that idle time, one per cold-start sample, each finished before the cold requests go out.
    const sections = all.flatMap((rt) => [
      async () => {
        progress(`${rt.name}: step load`);
        figures.stepLoad.push(await stepLoad(stack, t, rt));
      },
      async () => {
        progress(`${rt.name}: rollouts under load`);
        figures.rollouts.push(...(await rollouts(stack, t, rt)));
      },
    ]);
    for (let i = 0; i < COLD_SAMPLES; i++) {
      await sections.shift()?.();
      progress(`cold start sample ${i + 1}: waiting for zero replicas`);
      for (const s of subjects) await s.waitForZero();
      for (const s of subjects) await s.measureCold();
    }
    for (const section of sections) await section();
    figures.coldStarts = subjects.map((s) => s.figures);
    return figures;
  } finally {
    process.off("SIGINT", interrupted);
    process.off("SIGTERM", interrupted);
    await close();
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};
const ms = (x: number) => (Number.isFinite(x) ? `${Math.round(x)} ms` : "-");

function table(header: string[], rows: string[][]) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("   ");
  console.log(line(header));
  for (const r of rows) console.log(line(r));
}

export function printAutoscalingFigures(f: AutoscalingFigures): void {
  console.log(`\ncold start from zero through the gateway (${COLD_SAMPLES} samples, 10 warm requests)`);
  table(
    [
      "runtime",
      "warm median",
      "cold median",
      "cold min",
      "cold max",
      "cold / warm",
      "idle -> zero",
      "failed",
    ],
    f.coldStarts.map((c) => [
      c.runtime,
      ms(median(c.warmMs)),
      ms(median(c.coldMs)),
      ms(Math.min(...c.coldMs)),
      ms(Math.max(...c.coldMs)),
      `${(median(c.coldMs) / median(c.warmMs)).toFixed(0)}x`,
      c.idleToZeroMs.length ? c.idleToZeroMs.map((x) => `${(x / 1000).toFixed(1)} s`).join(", ") : "-",
      String(c.failures.length),
    ]),
  );
  for (const c of f.coldStarts) for (const failure of c.failures) console.log(`  ${c.runtime} ${failure}`);
  console.log("\nstep load 1 -> 4 concurrent slow requests (targetOngoingRequests 1, maxReplicas 4)");
  table(
    ["runtime", "first scale-up", "4 replicas ready", "vs one cold start", "failed / sent"],
    f.stepLoad.map((s) => {
      const cold = f.coldStarts.find((c) => c.runtime === s.runtime);
      return [
        s.runtime,
        ms(s.firstDecisionMs),
        ms(s.toTargetMs),
        cold ? `${(s.toTargetMs / median(cold.coldMs)).toFixed(1)}x` : "-",
        `${s.failed} / ${s.sent}`,
      ];
    }),
  );
  console.log("\nrequests failed during rollouts under continuous load (2 workers)");
  table(
    ["case", "duration", "failed / sent", "outcome"],
    f.rollouts.map((r) => [r.case, ms(r.durationMs), `${r.failed} / ${r.sent}`, r.outcome]),
  );
  for (const r of f.rollouts) for (const failure of r.failures) console.log(`  ${r.case}: ${failure}`);
}
