import { delimiter, dirname } from "node:path";
import { RUNTIME_ENV } from "@tessera/core";
import { PYTHON_RUNTIME_DIR } from "./paths.js";

export { PYTHON_RUNTIME_DIR } from "./paths.js";
export * from "./ray-serve.js";

export interface ReplicaLaunch {
  command: string;
  args: string[];
  env: Record<string, string>;
}

export interface PythonLaunchOptions {
  /** The python executable of the deployment's environment (e.g. `<venv>/bin/python`). */
  python: string;
  /** The RUNTIME_ENV variables (see `runtimeEnv` in @tessera/core). */
  env: Record<string, string>;
  /** PATH for the replica; defaults to the python executable's directory then this process's PATH. */
  path?: string;
  home?: string;
}

/**
 * How to start one python replica: `python -u -m tessera.runtime` with PYTHONPATH = the runtime
 * package + the code dir. The environment is the contract plus PATH/HOME and python's own switches,
 * nothing else of the caller's environment.
 */
export function pythonReplicaCommand(opts: PythonLaunchOptions): ReplicaLaunch {
  const codeDir = opts.env[RUNTIME_ENV.CODE_DIR];
  if (!codeDir) throw new Error(`${RUNTIME_ENV.CODE_DIR} is required in env`);
  if (!opts.env[RUNTIME_ENV.ENTRY]) throw new Error(`${RUNTIME_ENV.ENTRY} is required in env`);
  const path =
    opts.path ??
    [opts.python.includes("/") ? dirname(opts.python) : "", process.env.PATH ?? "/usr/bin:/bin"]
      .filter(Boolean)
      .join(delimiter);
  const env: Record<string, string> = {
    ...opts.env,
    PATH: path,
    HOME: opts.home ?? process.env.HOME ?? codeDir,
    PYTHONPATH: [PYTHON_RUNTIME_DIR, codeDir].join(delimiter),
    PYTHONUNBUFFERED: "1",
    PYTHONDONTWRITEBYTECODE: "1",
  };
  return { command: opts.python, args: ["-u", "-m", "tessera.runtime"], env };
}
