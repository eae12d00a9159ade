import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, symlink, writeFile } from "node:fs/promises";
import { builtinModules } from "node:module";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build, type Plugin } from "esbuild";

const SRC_DIR = dirname(fileURLToPath(import.meta.url));
const PACKAGE_DIR = resolve(SRC_DIR, "..");
/** The module handler code gets for `import ... from "tessera"`. */
export const HANDLER_API_FILE = join(SRC_DIR, "api.ts");
const SERVER_ENTRY = join(SRC_DIR, "server", "main.ts");
const CORE_SRC_DIR = resolve(PACKAGE_DIR, "..", "core", "src");
const BUILTINS = new Set(builtinModules);
// Lets bundled code `require()` an external package from an ESM bundle.
const REQUIRE_SHIM =
  "import { createRequire as __tesseraCreateRequire } from 'node:module'; const require = __tesseraCreateRequire(import.meta.url);";

export interface NodeBundle {
  /** Directory holding the bundle: the replica's TESSERA_CODE_DIR. */
  dir: string;
  /** Absolute path of the bundled handler module. */
  file: string;
  /** `handler.mjs:Class`: the replica's TESSERA_ENTRY. */
  entry: string;
}

export interface BuildNodeBundleOptions {
  /** The unpacked code bundle of the revision. */
  codeDir: string;
  /** `file.ts:Class` relative to codeDir (as in the deployment config). */
  entry: string;
  /** Where to write the bundle (one directory per revision). */
  outDir: string;
  /**
   * The deployment environment's `node_modules` directory. It is symlinked as `outDir/node_modules`
   * so Node's resolution (ESM ignores NODE_PATH) finds npm dependencies from the bundle. Defaults
   * to `codeDir/node_modules` when that exists.
   */
  nodeModulesDir?: string;
}

export class NodeBundleError extends Error {
  constructor(
    message: string,
    readonly errors: string[] = [],
  ) {
    super(message);
    this.name = "NodeBundleError";
  }
}

function externalPackages(): Plugin {
  return {
    name: "tessera-externals",
    setup(b) {
      // Bare specifiers only: relative and absolute imports are the tenant's own code, bundled.
      b.onResolve({ filter: /^[^./]/ }, (args) => {
        if (args.path === "tessera") return { path: HANDLER_API_FILE };
        if (args.path.startsWith("node:") || BUILTINS.has(args.path.split("/")[0]!))
          return { external: true };
        return { external: true };
      });
    },
  };
}

/** Parses `file:Class`, refusing files outside codeDir. */
export function parseNodeEntry(codeDir: string, entry: string): { file: string; className: string } {
  const i = entry.lastIndexOf(":");
  if (i <= 0 || i === entry.length - 1)
    throw new NodeBundleError(`entry must be 'file.ts:Class', got ${JSON.stringify(entry)}`);
  const rel = entry.slice(0, i);
  const className = entry.slice(i + 1);
  const file = resolve(codeDir, rel);
  const inside = relative(resolve(codeDir), file);
  if (inside.startsWith("..") || isAbsolute(inside))
    throw new NodeBundleError(`entry file ${rel} lies outside the code directory`);
  return { file, className };
}

/**
 * Bundles a revision's TypeScript/JavaScript handler into one ESM file with esbuild, once per
 * revision (the driver calls this before starting replicas). `tessera` resolves to the handler
 * API; every other package import stays external and resolves at run time from the environment's
 * node_modules, linked next to the bundle.
 */
export async function buildNodeBundle(opts: BuildNodeBundleOptions): Promise<NodeBundle> {
  const { file, className } = parseNodeEntry(opts.codeDir, opts.entry);
  if (!existsSync(file))
    throw new NodeBundleError(`entry file ${relative(opts.codeDir, file)} does not exist`);
  await mkdir(opts.outDir, { recursive: true });
  const outFile = join(opts.outDir, "handler.mjs");
  let outputs: { path: string; contents: Uint8Array }[];
  try {
    const result = await build({
      entryPoints: [file],
      outfile: outFile,
      write: false,
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      sourcemap: true,
      logLevel: "silent",
      banner: { js: REQUIRE_SHIM },
      plugins: [externalPackages()],
      absWorkingDir: resolve(opts.codeDir),
    });
    outputs = result.outputFiles;
  } catch (err) {
    const errors = (
      (err as { errors?: { text: string; location?: { file: string; line: number } | null }[] }).errors ?? []
    ).map((e) => (e.location ? `${e.location.file}:${e.location.line}: ${e.text}` : e.text));
    throw new NodeBundleError(
      `could not bundle ${opts.entry}: ${errors[0] ?? (err as Error).message}`,
      errors,
    );
  }
  // Write-then-rename everywhere: two builders of the same revision (a retried job) never leave a
  // replica reading a half-written bundle.
  const suffix = `.${process.pid}.${Date.now()}.tmp`;
  for (const o of outputs) {
    await writeFile(`${o.path}${suffix}`, o.contents);
    await rename(`${o.path}${suffix}`, o.path);
  }
  const modules =
    opts.nodeModulesDir ??
    (existsSync(join(opts.codeDir, "node_modules")) ? join(opts.codeDir, "node_modules") : undefined);
  const link = join(opts.outDir, "node_modules");
  if (modules) {
    await symlink(resolve(modules), `${link}${suffix}`, "dir");
    await rename(`${link}${suffix}`, link);
  } else await rm(link, { recursive: true, force: true });
  return { dir: resolve(opts.outDir), file: outFile, entry: `handler.mjs:${className}` };
}

async function sourceDigest(): Promise<string> {
  const hash = createHash("sha256");
  for (const dir of [SRC_DIR, join(SRC_DIR, "server"), CORE_SRC_DIR]) {
    for (const name of (await readdir(dir)).sort()) {
      if (!name.endsWith(".ts")) continue;
      const path = join(dir, name);
      if (!(await stat(path)).isFile()) continue;
      hash.update(path).update(await readFile(path));
    }
  }
  return hash.digest("hex").slice(0, 16);
}

/**
 * The server needs only core's error codes and runtime contract; the full core index would drag
 * zod (and 700 KB) into every replica start.
 */
function coreContractsOnly(): Plugin {
  return {
    name: "tessera-core-contracts",
    setup(b) {
      b.onResolve({ filter: /^@tessera\/core$/ }, () => ({
        path: "core-contracts",
        namespace: "tessera-core",
      }));
      b.onLoad({ filter: /.*/, namespace: "tessera-core" }, () => ({
        contents: ["errors.ts", "runtime-contract.ts"]
          .map((f) => `export * from ${JSON.stringify(join(CORE_SRC_DIR, f))};`)
          .join("\n"),
        loader: "ts",
        resolveDir: CORE_SRC_DIR,
      }));
    },
  };
}

let serverBundle: Promise<string> | undefined;

/**
 * The runtime server bundled into one ESM file under dist/, rebuilt only when its sources change,
 * so a replica starts with plain `node` (no TypeScript loader at start).
 */
export function ensureRuntimeServer(): Promise<string> {
  serverBundle ??= (async () => {
    const out = join(PACKAGE_DIR, "dist", `runtime-server-${await sourceDigest()}.mjs`);
    if (existsSync(out)) return out;
    await mkdir(dirname(out), { recursive: true });
    // Build to a private name then rename: concurrent builders never expose a half-written file.
    const tmp = `${out}.${process.pid}.${Date.now()}.tmp.mjs`;
    await build({
      entryPoints: [SERVER_ENTRY],
      outfile: tmp,
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      logLevel: "silent",
      banner: { js: REQUIRE_SHIM },
      plugins: [coreContractsOnly()],
    });
    await rename(tmp, out);
    return out;
  })().catch((err) => {
    serverBundle = undefined;
    throw err;
  });
  return serverBundle;
}
