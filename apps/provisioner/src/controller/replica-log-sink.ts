import { parseReplicaLogLine, type ReplicaLogLine } from "@tessera/cluster";
import { type Database, replicaLogs, replicas } from "@tessera/db";
import { inArray } from "drizzle-orm";
import type { Log } from "./log.js";

/**
 * Stores what replicas write in `replica_logs` for the console: lines are buffered briefly and
 * inserted in batches (a chatty replica must not cost one insert per line), each attributed to
 * the replica's organisation, which is looked up once per replica.
 */
export class ReplicaLogSink {
  private buffer: { line: ReplicaLogLine; receivedAt: Date }[] = [];
  private readonly orgOf = new Map<string, string>();
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly db: Database,
    private readonly log: Log,
    private readonly options: { flushMs?: number; maxBuffered?: number } = {},
  ) {}

  /** The driver's `onLog`. */
  readonly write = (line: ReplicaLogLine): void => {
    if (this.buffer.length >= (this.options.maxBuffered ?? 10_000)) return; // the database is behind: shed
    this.buffer.push({ line, receivedAt: new Date() });
    this.timer ??= setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, this.options.flushMs ?? 200);
  };

  flush(): Promise<void> {
    const batch = this.buffer;
    this.buffer = [];
    this.flushing = this.flushing.then(() => this.insert(batch));
    return this.flushing;
  }

  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.flush();
  }

  private async insert(batch: { line: ReplicaLogLine; receivedAt: Date }[]): Promise<void> {
    if (batch.length === 0) return;
    try {
      const unknown = [...new Set(batch.map((b) => b.line.replicaId))].filter((id) => !this.orgOf.has(id));
      if (unknown.length > 0) {
        const rows = await this.db
          .select({ id: replicas.id, orgId: replicas.orgId })
          .from(replicas)
          .where(inArray(replicas.id, unknown));
        for (const r of rows) this.orgOf.set(r.id, r.orgId);
      }
      const values = batch.flatMap(({ line, receivedAt }) => {
        const orgId = this.orgOf.get(line.replicaId);
        // A replica no row knows of (an orphan being stopped) has no tenant to show its lines to.
        if (!orgId) return [];
        const parsed = parseReplicaLogLine(line.line, line.stream, receivedAt);
        return [
          {
            orgId,
            deploymentId: line.deploymentId,
            replicaId: line.replicaId,
            level: parsed.level,
            message: parsed.message.slice(0, 16_384),
            fields: Object.keys(parsed.fields).length > 0 ? parsed.fields : null,
            at: parsed.at,
          },
        ];
      });
      if (values.length > 0) await this.db.insert(replicaLogs).values(values);
    } catch (err) {
      this.log("warn", "replica log lines lost", { count: batch.length, err: String(err) });
    }
  }
}
