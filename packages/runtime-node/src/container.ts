/**
 * Entry point of the node runtime container image (Kubernetes driver). The pod receives the
 * revision's TypeScript sources read-only (a ConfigMap at TESSERA_CODE_DIR) and its environment
 * at TESSERA_ENV_DIR; this bundles the handler into a writable directory once, at pod start, then
 * runs the replica server with exactly the contract environment, as the local driver does.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { RUNTIME_ENV } from "@tessera/core";
import { buildNodeBundle, NodeBundleError } from "./build.js";
import { nodeReplicaCommand } from "./index.js";

const codeDir = process.env[RUNTIME_ENV.CODE_DIR];
const entry = process.env[RUNTIME_ENV.ENTRY];
if (!codeDir || !entry) {
  console.error(
    JSON.stringify({ level: "error", msg: `${RUNTIME_ENV.CODE_DIR} and ${RUNTIME_ENV.ENTRY} are required` }),
  );
  process.exit(2);
}
const envDir = process.env.TESSERA_ENV_DIR;
const nodeModulesDir =
  envDir && existsSync(join(envDir, "node_modules")) ? join(envDir, "node_modules") : undefined;
const contractEnv = Object.fromEntries(
  Object.values(RUNTIME_ENV)
    .filter((name) => process.env[name] !== undefined)
    .map((name) => [name, process.env[name] as string]),
);

try {
  const bundle = await buildNodeBundle({
    codeDir,
    entry,
    outDir: join(process.env.TMPDIR ?? "/tmp", "tessera-build"),
    nodeModulesDir,
  });
  const launch = await nodeReplicaCommand({ bundle, env: contractEnv, home: process.env.HOME });
  const child = spawn(launch.command, launch.args, { env: launch.env, stdio: "inherit" });
  for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => child.kill(sig));
  child.on("exit", (code, signal) => process.exit(code ?? (signal ? 143 : 1)));
} catch (err) {
  console.error(
    JSON.stringify({ level: "error", msg: err instanceof NodeBundleError ? err.message : String(err) }),
  );
  process.exit(1);
}
