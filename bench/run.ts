/**
 * `pnpm bench [name...]`: runs the named benchmarks (all when none is named) and prints their
 * figures. Benchmarks are measurements, never tests: nothing here asserts a timing.
 */
import { benchAutoscaling, printAutoscalingFigures } from "./autoscaling.js";
import { benchGateway, printBenchRows } from "./gateway.js";

const BENCHMARKS: Record<string, () => Promise<void>> = {
  gateway: async () => printBenchRows("gateway overhead: ts-dataframe /deduplicate", await benchGateway()),
  autoscaling: async () => printAutoscalingFigures(await benchAutoscaling()),
};

const wanted = process.argv.slice(2);
const unknown = wanted.filter((name) => !(name in BENCHMARKS));
if (unknown.length > 0) {
  console.error(`unknown benchmark(s): ${unknown.join(", ")}; known: ${Object.keys(BENCHMARKS).join(", ")}`);
  process.exit(2);
}
for (const name of wanted.length > 0 ? wanted : Object.keys(BENCHMARKS)) await BENCHMARKS[name]!();
process.exit(0);
