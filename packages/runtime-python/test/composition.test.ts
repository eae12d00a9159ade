import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { pythonReplicaCommand } from "../src/index.js";
import { compositionEnv, compositionSuite } from "./support/composition-suite.js";

const PYTHON = execFileSync(process.env.TESSERA_TEST_PYTHON ?? "python3", [
  "-c",
  "import sys; print(sys.executable)",
])
  .toString()
  .trim();

compositionSuite({
  name: "python",
  launch: async (cls, opts) =>
    pythonReplicaCommand({
      python: PYTHON,
      env: compositionEnv(cls, join(import.meta.dirname, "fixtures"), `composition:${cls}`, opts),
    }),
});
