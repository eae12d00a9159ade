/**
 * Dataframe-style row operations, the seed example of a Tessera TypeScript deployment.
 * Rows are JSON objects; no dependencies.
 */
import { HttpError, route, type TesseraRequest } from "tessera";

type Row = Record<string, unknown>;

function rowsOf(body: unknown): Row[] {
  const rows = (body as { rows?: unknown } | undefined)?.rows;
  if (!Array.isArray(rows))
    throw new HttpError(400, "body must be an object with a 'rows' list", "VALIDATION_FAILED");
  if (!rows.every((r) => r !== null && typeof r === "object" && !Array.isArray(r)))
    throw new HttpError(400, "every row must be an object", "VALIDATION_FAILED");
  return rows as Row[];
}

function stableKey(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value ?? null);
  if (Array.isArray(value)) return `[${value.map(stableKey).join(",")}]`;
  const entries = Object.entries(value as Row).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableKey(v)}`).join(",")}}`;
}

/** Total order over JSON values: numbers, then strings, then everything else, missing/null last. */
function compareValues(a: unknown, b: unknown): number {
  const rank = (v: unknown) =>
    v === null || v === undefined ? 3 : typeof v === "number" ? 0 : typeof v === "string" ? 1 : 2;
  const ra = rank(a);
  const rb = rank(b);
  if (ra !== rb) return ra - rb;
  if (ra === 0) return (a as number) - (b as number);
  const sa = ra === 1 ? (a as string) : stableKey(a);
  const sb = rb === 1 ? (b as string) : stableKey(b);
  return sa < sb ? -1 : sa > sb ? 1 : 0;
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

export class Dataframe {
  private healthy = true;

  constructor(private readonly config: Record<string, unknown>) {}

  /** Rows without duplicates on `columns` (default: all columns); the first occurrence wins. */
  @route.post("/deduplicate")
  deduplicate({ body }: TesseraRequest) {
    const rows = rowsOf(body);
    const columns: unknown = body.columns;
    if (columns !== undefined && (!Array.isArray(columns) || !columns.every((c) => typeof c === "string")))
      throw new HttpError(400, "'columns' must be a list of column names", "VALIDATION_FAILED");
    const seen = new Set<string>();
    const kept = rows.filter((row) => {
      const subset = columns
        ? Object.fromEntries((columns as string[]).map((c) => [c, row[c] ?? null]))
        : row;
      const key = stableKey(subset);
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
    return { rows: kept, removed: rows.length - kept.length };
  }

  @route.post("/sort")
  sort({ body }: TesseraRequest) {
    const rows = rowsOf(body);
    const by: unknown = body.by;
    const columns = typeof by === "string" ? [by] : by;
    if (!Array.isArray(columns) || columns.length === 0 || !columns.every((c) => typeof c === "string"))
      throw new HttpError(400, "'by' must be a column name or a non-empty list of them", "VALIDATION_FAILED");
    const sign = body.descending ? -1 : 1;
    const ordered = [...rows].sort((a, b) => {
      for (const c of columns as string[]) {
        const d = compareValues(a[c], b[c]);
        if (d !== 0) return sign * d;
      }
      return 0;
    });
    return { rows: ordered };
  }

  @route.get("/info")
  info() {
    return {
      runtime: "node",
      deployment: process.env.TESSERA_DEPLOYMENT,
      revision: process.env.TESSERA_REVISION,
      replica: process.env.TESSERA_REPLICA,
      application: process.env.TESSERA_APPLICATION,
      config: this.config,
    };
  }

  /** Each row as one server-sent event (optionally `?delay_ms=` apart), then a summary event. */
  @route.post("/rows/stream", { stream: "sse" })
  async *streamRows({ body, query }: TesseraRequest) {
    const rows = rowsOf(body);
    const delayMs = Number(query.delay_ms ?? 0);
    if (!Number.isFinite(delayMs) || delayMs < 0)
      throw new HttpError(400, "delay_ms must be a non-negative number", "VALIDATION_FAILED");
    for (const [i, row] of rows.entries()) {
      if (i > 0 && delayMs > 0) await sleep(delayMs);
      yield row;
    }
    yield { event: "done", data: { count: rows.length } };
  }

  /** Test hook: `{"healthy": false}` makes health() fail so the platform replaces this replica. */
  @route.post("/admin/health")
  setHealth({ body }: TesseraRequest) {
    if (typeof body?.healthy !== "boolean")
      throw new HttpError(400, 'body must be {"healthy": true|false}', "VALIDATION_FAILED");
    this.healthy = body.healthy;
    return { healthy: this.healthy };
  }

  health() {
    return this.healthy;
  }
}
