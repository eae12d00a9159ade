import { delimiter, dirname } from "node:path";
import { RUNTIME_ENV } from "@tessera/core";
import { ensureRuntimeServer, type NodeBundle } from "./build.js";

export {
  type BuildNodeBundleOptions,
  buildNodeBundle,
  ensureRuntimeServer,
  HANDLER_API_FILE,
  type NodeBundle,
  NodeBundleError,
} from "./build.js";

export interface ReplicaLaunch {
  command: string;
  args: string[];
  env: Record<string, string>;
}

export interface NodeLaunchOptions {
  /** Output of buildNodeBundle for the replica's revision. */
  bundle: NodeBundle;
  /** The RUNTIME_ENV variables (see `runtimeEnv` in @tessera/core); CODE_DIR/ENTRY are set from the bundle. */
  env: Record<string, string>;
  /** Node executable; defaults to the one running this process. */
  node?: string;
  path?: string;
  home?: string;
}

/**
 * How to start one node replica: `node --enable-source-maps <runtime-server.mjs>`. The environment
 * is the contract (TESSERA_CODE_DIR = the bundle dir, TESSERA_ENTRY = `handler.mjs:Class`) plus
 * PATH/HOME, nothing else of the caller's environment.
 */
export async function nodeReplicaCommand(opts: NodeLaunchOptions): Promise<ReplicaLaunch> {
  const server = await ensureRuntimeServer();
  const node = opts.node ?? process.execPath;
  const env: Record<string, string> = {
    ...opts.env,
    [RUNTIME_ENV.CODE_DIR]: opts.bundle.dir,
    [RUNTIME_ENV.ENTRY]: opts.bundle.entry,
    PATH: opts.path ?? [dirname(node), process.env.PATH ?? "/usr/bin:/bin"].join(delimiter),
    HOME: opts.home ?? process.env.HOME ?? opts.bundle.dir,
  };
  return { command: node, args: ["--enable-source-maps", server], env };
}
