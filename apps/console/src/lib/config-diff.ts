/** One leaf that differs between two configs; `undefined` on a side means absent there. */
export interface ConfigChange {
  path: string;
  before?: string;
  after?: string;
}

function flatten(value: unknown, prefix: string, out: Map<string, string>): void {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length === 0) out.set(prefix, "{}");
    for (const [k, v] of entries) flatten(v, prefix ? `${prefix}.${k}` : k, out);
    return;
  }
  out.set(prefix, JSON.stringify(value));
}

/** Leaf-by-leaf differences between two revision configs, sorted by path. */
export function configDiff(before: unknown, after: unknown): ConfigChange[] {
  const a = new Map<string, string>();
  const b = new Map<string, string>();
  flatten(before, "", a);
  flatten(after, "", b);
  const paths = [...new Set([...a.keys(), ...b.keys()])].sort();
  return paths
    .filter((p) => a.get(p) !== b.get(p))
    .map((path) => ({ path, before: a.get(path), after: b.get(path) }));
}
