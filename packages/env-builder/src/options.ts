import { join } from "node:path";
import type { EnvironmentBuilderOptions } from "./builder.js";

/**
 * Builder options from the process environment:
 * - `TESSERA_DATA_DIR` (default `.tessera`): environments live in `<dir>/envs`
 * - `TESSERA_PYTHON`: base interpreter (default `python3`)
 * - `TESSERA_PIP_ARGS`: extra `pip install` arguments, e.g. `--index-url https://pypi.internal/simple`
 * - `TESSERA_PIP_SYSTEM_SITE_PACKAGES`: `1`/`true` to create venvs with `--system-site-packages`
 * - `TESSERA_MICROMAMBA`: micromamba/conda executable, or `none` to never use conda (default: looked up on PATH)
 * - `TESSERA_NPM`: npm executable; `TESSERA_NPM_ARGS`: extra `npm install` arguments, e.g. `--registry URL`
 * - `TESSERA_ENV_BUILD_TIMEOUT_S`: a build running longer fails (default 1800)
 * - `TESSERA_ENV_MAX_CONCURRENT_BUILDS`: builds this process runs at once (default 2)
 */
export function builderOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): EnvironmentBuilderOptions {
  const dataDir = env.TESSERA_DATA_DIR?.trim() || ".tessera";
  const micromamba = env.TESSERA_MICROMAMBA?.trim();
  const timeoutS = Number(env.TESSERA_ENV_BUILD_TIMEOUT_S);
  const maxBuilds = Number(env.TESSERA_ENV_MAX_CONCURRENT_BUILDS);
  return {
    root: join(dataDir, "envs"),
    python: env.TESSERA_PYTHON?.trim() || undefined,
    pipArgs: splitArguments(env.TESSERA_PIP_ARGS),
    systemSitePackages: /^(1|true|yes)$/i.test(env.TESSERA_PIP_SYSTEM_SITE_PACKAGES?.trim() ?? ""),
    micromamba: micromamba === "none" || micromamba === "false" ? false : micromamba || undefined,
    npm: env.TESSERA_NPM?.trim() || undefined,
    npmArgs: splitArguments(env.TESSERA_NPM_ARGS),
    buildTimeoutMs: Number.isFinite(timeoutS) && timeoutS > 0 ? timeoutS * 1000 : undefined,
    maxConcurrentBuilds: Number.isInteger(maxBuilds) && maxBuilds > 0 ? maxBuilds : undefined,
    env,
  };
}

/**
 * Splits an argument list the way a shell would for the simple cases operators write: whitespace
 * separates, single or double quotes keep spaces inside one argument. No expansion of any kind.
 */
export function splitArguments(text: string | undefined): string[] {
  const args: string[] = [];
  let current = "";
  let quote: string | undefined;
  let started = false;
  for (const char of text ?? "") {
    if (quote) {
      if (char === quote) quote = undefined;
      else current += char;
    } else if (char === "'" || char === '"') {
      quote = char;
      started = true;
    } else if (/\s/.test(char)) {
      if (started) args.push(current);
      current = "";
      started = false;
    } else {
      current += char;
      started = true;
    }
  }
  if (started) args.push(current);
  return args;
}
