// A second process asking for the same environment: reads builder options and the request as
// JSON from argv, says "armed", waits for "go" on stdin (so every contender starts together),
// then prints the ensure result (or the error code) as one JSON line.
import { EnvironmentBuilder, EnvironmentError } from "../../src/index.js";

const [optionsJson, requestJson] = process.argv.slice(2);
const builder = new EnvironmentBuilder(JSON.parse(optionsJson ?? "{}"));
process.stdout.write("armed\n");
process.stdin.once("data", async () => {
  try {
    const result = await builder.ensure(JSON.parse(requestJson ?? "{}"));
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } catch (error) {
    process.stdout.write(
      `${JSON.stringify({ error: error instanceof EnvironmentError ? error.code : String(error) })}\n`,
    );
  }
  process.exit(0);
});
