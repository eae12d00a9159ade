/**
 * The deploy form's environment: what the user typed (a package per line, or a pasted
 * requirements.txt / package.json / conda environment.yml) turned into the API's environment
 * spec. Validation of the packages themselves stays with the API, which answers field errors.
 */

export type EnvKind = "none" | "pip" | "npm" | "conda";

export type EnvironmentSpecInput =
  | { kind: "none" }
  | { kind: "pip"; requirements: string[]; python?: string }
  | { kind: "npm"; dependencies: Record<string, string> }
  | { kind: "conda"; channels: string[]; dependencies: (string | { pip: string[] })[] };

export class EnvTextError extends Error {}

/** Non-empty lines without `#` comments (pip's and YAML's comment syntax). */
function meaningfulLines(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((l) => l.replace(/(^|\s)#.*$/, "").trimEnd())
    .filter((l) => l.trim() !== "");
}

/** requirements.txt: one requirement per line; pip options (`-r`, `--index-url`) are refused. */
export function parsePipRequirements(text: string): string[] {
  return meaningfulLines(text).map((l) => {
    const req = l.trim();
    if (req.startsWith("-")) throw new EnvTextError(`pip options are not supported here: ${req}`);
    return req;
  });
}

/**
 * npm dependencies: a package.json (its `dependencies`), a plain `{name: range}` object, or one
 * `name@range` per line (`name` alone means `*`).
 */
export function parseNpmDependencies(text: string): Record<string, string> {
  const trimmed = text.trim();
  if (trimmed === "") return {};
  if (trimmed.startsWith("{")) {
    let json: unknown;
    try {
      json = JSON.parse(trimmed);
    } catch (err) {
      throw new EnvTextError(`not valid JSON: ${(err as Error).message}`);
    }
    const obj = json as Record<string, unknown>;
    const deps = (
      typeof obj.dependencies === "object" && obj.dependencies !== null ? obj.dependencies : obj
    ) as Record<string, unknown>;
    const out: Record<string, string> = {};
    for (const [name, range] of Object.entries(deps)) {
      if (typeof range !== "string") throw new EnvTextError(`the version of ${name} must be a string`);
      out[name] = range;
    }
    return out;
  }
  const out: Record<string, string> = {};
  for (const line of meaningfulLines(text)) {
    const l = line.trim();
    // The version separator is the last '@' that is not the scope's leading one.
    const at = l.lastIndexOf("@");
    if (at > 0) out[l.slice(0, at)] = l.slice(at + 1) || "*";
    else out[l] = "*";
  }
  return out;
}

/**
 * A conda environment: JSON (Ray's runtime_env `conda` dict) or the environment.yml subset people
 * paste: `channels:` and `dependencies:` lists, with a nested `- pip:` list. `name:` is ignored.
 */
export function parseCondaEnvironment(text: string): {
  channels: string[];
  dependencies: (string | { pip: string[] })[];
} {
  const trimmed = text.trim();
  if (trimmed.startsWith("{")) {
    let json: { channels?: unknown; dependencies?: unknown };
    try {
      json = JSON.parse(trimmed);
    } catch (err) {
      throw new EnvTextError(`not valid JSON: ${(err as Error).message}`);
    }
    return {
      channels: Array.isArray(json.channels) ? (json.channels as string[]) : [],
      dependencies: Array.isArray(json.dependencies)
        ? (json.dependencies as (string | { pip: string[] })[])
        : [],
    };
  }
  const channels: string[] = [];
  const dependencies: (string | { pip: string[] })[] = [];
  let section: "channels" | "dependencies" | "other" | null = null;
  let pip: string[] | null = null;
  let pipIndent = -1;
  for (const raw of meaningfulLines(text)) {
    const indent = raw.length - raw.trimStart().length;
    const line = raw.trim();
    const key = /^([A-Za-z_]+):\s*(.*)$/.exec(line);
    if (indent === 0 && key) {
      section = key[1] === "channels" || key[1] === "dependencies" ? key[1] : "other";
      pip = null;
      if (key[2] && section !== "other")
        throw new EnvTextError(`write ${key[1]} as a list, one '- item' per line`);
      continue;
    }
    const item = /^-\s*(.*)$/.exec(line);
    if (!item) throw new EnvTextError(`cannot read this line: ${line}`);
    const value = item[1]!.trim().replace(/^["']|["']$/g, "");
    if (pip && indent > pipIndent) {
      pip.push(value);
      continue;
    }
    pip = null;
    if (section === "channels") channels.push(value);
    else if (section === "dependencies") {
      if (value === "pip:") {
        pip = [];
        pipIndent = indent;
        dependencies.push({ pip });
      } else dependencies.push(value);
    } else if (section === null) throw new EnvTextError("start with 'channels:' or 'dependencies:'");
  }
  return { channels, dependencies };
}

/** The spec the API expects for a kind and the text typed for it. */
export function environmentFromText(kind: EnvKind, text: string, python?: string): EnvironmentSpecInput {
  switch (kind) {
    case "none":
      return { kind: "none" };
    case "pip":
      return { kind: "pip", requirements: parsePipRequirements(text), ...(python ? { python } : {}) };
    case "npm":
      return { kind: "npm", dependencies: parseNpmDependencies(text) };
    case "conda":
      return { kind: "conda", ...parseCondaEnvironment(text) };
  }
}
