import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { runtimeEnv } from "@tessera/core";
import { pythonReplicaCommand } from "../src/index.js";
import { compositionSuite } from "./support/composition-suite.js";

const PYTHON = execFileSync(process.env.TESSERA_TEST_PYTHON ?? "python3", [
  "-c",
  "import sys; print(sys.executable)",
])
  .toString()
  .trim();

compositionSuite({
  name: "python",
  launch: async (cls, { userConfig, env }) =>
    pythonReplicaCommand({
      python: PYTHON,
      env: {
        ...runtimeEnv({
          port: 0,
          codeDir: join(import.meta.dirname, "fixtures"),
          entry: `composition:${cls}`,
          userConfig,
          deployment: cls.toLowerCase(),
          revision: "rev-1",
          replica: `${cls.toLowerCase()}-1`,
          application: "shop",
          maxBodyBytes: 1024 * 1024,
          exposeTracebacks: false,
          drainTimeoutS: 5,
        }),
        ...env,
      },
    }),
});
