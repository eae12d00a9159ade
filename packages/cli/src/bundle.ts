import { readdir, readFile, stat } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import type { CodeBundle } from "@tessera/core";
import { CliError } from "./client.js";

/** Never part of a code bundle: environments are built by the platform from the spec. */
const SKIPPED = new Set([
  ".git",
  "node_modules",
  "__pycache__",
  ".venv",
  "venv",
  ".tessera",
  ".next",
  "dist",
]);
const MAX_FILES = 500;
const MAX_BYTES = 8 * 1024 * 1024;

/**
 * Reads a handler directory into the API's code bundle. Text stays utf8; if any file is not
 * valid UTF-8 the whole bundle is sent base64 (the bundle has one encoding).
 */
export async function bundleDirectory(dir: string): Promise<CodeBundle> {
  const raw = new Map<string, Buffer>();
  let total = 0;
  async function walk(d: string): Promise<void> {
    for (const entry of await readdir(d, { withFileTypes: true })) {
      if (SKIPPED.has(entry.name)) continue;
      const full = join(d, entry.name);
      if (entry.isDirectory()) await walk(full);
      else if (entry.isFile()) {
        const data = await readFile(full);
        total += data.length;
        if (raw.size >= MAX_FILES) throw new CliError(`${dir} has more than ${MAX_FILES} files`);
        if (total > MAX_BYTES) throw new CliError(`${dir} is larger than ${MAX_BYTES / 1024 / 1024} MiB`);
        raw.set(relative(dir, full).split(sep).join("/"), data);
      }
    }
  }
  if (!(await stat(dir).catch(() => null))?.isDirectory()) throw new CliError(`${dir} is not a directory`);
  await walk(dir);
  if (raw.size === 0) throw new CliError(`${dir} has no files to deploy`);
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const isText = [...raw.values()].every((b) => {
    try {
      decoder.decode(b);
      return true;
    } catch {
      return false;
    }
  });
  const files: Record<string, string> = {};
  for (const [path, data] of raw) files[path] = isText ? data.toString("utf8") : data.toString("base64");
  return { files, encoding: isText ? "utf8" : "base64" };
}
