/**
 * Run a node handler locally, outside the platform, exactly as a replica runs it:
 *   tsx packages/runtime-node/src/dev.ts <codeDir> <file.ts:Class> [port] [userConfigJson]
 * The bundle goes to <codeDir>/.tessera/build; SIGINT/SIGTERM drain the replica.
 */
import { spawn } from "node:child_process";
import { join, resolve } from "node:path";
import { runtimeEnv } from "@tessera/core";
import { buildNodeBundle, NodeBundleError } from "./build.js";
import { nodeReplicaCommand } from "./index.js";

const [codeDirArg, entry, portArg = "8000", configArg = "{}"] = process.argv.slice(2);
if (!codeDirArg || !entry) {
  console.error("usage: dev.ts <codeDir> <file.ts:Class> [port] [userConfigJson]");
  process.exit(64);
}
const codeDir = resolve(codeDirArg);
try {
  const bundle = await buildNodeBundle({ codeDir, entry, outDir: join(codeDir, ".tessera", "build") });
  const launch = await nodeReplicaCommand({
    bundle,
    env: runtimeEnv({
      port: Number(portArg),
      codeDir: bundle.dir,
      entry: bundle.entry,
      userConfig: JSON.parse(configArg),
      deployment: "local",
      revision: "dev",
      replica: "dev-0",
      application: "local",
      maxBodyBytes: 10 * 1024 * 1024,
      exposeTracebacks: true,
      drainTimeoutS: 30,
    }),
  });
  const child = spawn(launch.command, launch.args, { env: launch.env, stdio: "inherit" });
  for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => child.kill("SIGTERM"));
  child.on("exit", (code) => process.exit(code ?? 1));
} catch (err) {
  console.error(err instanceof NodeBundleError ? err.message : err);
  process.exit(1);
}
