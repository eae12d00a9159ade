import { closeSync, fstatSync, ftruncateSync, openSync, readSync } from "node:fs";

export type ReplicaLogStream = "stdout" | "stderr";

/** One line a replica wrote, as the driver hands it to `onLog` (the provisioner stores them in `replica_logs`). */
export interface ReplicaLogLine {
  clusterId: string;
  replicaId: string;
  deploymentId: string;
  line: string;
  stream: ReplicaLogStream;
}

export type ReplicaLogLevel = "debug" | "info" | "warn" | "error";

export interface ParsedReplicaLogLine {
  level: ReplicaLogLevel;
  message: string;
  at: Date;
  /** Everything else the line carried (request id, status, replica identity...). */
  fields: Record<string, unknown>;
}

const LEVELS: Record<string, ReplicaLogLevel> = {
  debug: "debug",
  trace: "debug",
  info: "info",
  warn: "warn",
  warning: "warn",
  error: "error",
  fatal: "error",
  critical: "error",
};

/**
 * Reads one line of a replica's output. The runtimes write JSON lines `{ts, level, msg, ...}`;
 * anything else (a crash before the logger exists, tenant `print`s) is kept verbatim, as `info`
 * on stdout and `error` on stderr, timed by `receivedAt`.
 */
export function parseReplicaLogLine(
  line: string,
  stream: ReplicaLogStream = "stdout",
  receivedAt: Date = new Date(),
): ParsedReplicaLogLine {
  const plain: ParsedReplicaLogLine = {
    level: stream === "stderr" ? "error" : "info",
    message: line,
    at: receivedAt,
    fields: {},
  };
  if (!line.startsWith("{")) return plain;
  let record: unknown;
  try {
    record = JSON.parse(line);
  } catch {
    return plain;
  }
  if (!record || typeof record !== "object" || Array.isArray(record)) return plain;
  const { ts, level, msg, ...fields } = record as Record<string, unknown>;
  const at = typeof ts === "string" || typeof ts === "number" ? new Date(ts) : receivedAt;
  return {
    level: (typeof level === "string" && LEVELS[level.toLowerCase()]) || plain.level,
    message: typeof msg === "string" ? msg : msg === undefined ? "" : JSON.stringify(msg),
    at: Number.isNaN(at.getTime()) ? receivedAt : at,
    fields,
  };
}

/** Longer lines are cut (a runaway line never holds the driver's memory). */
const MAX_LINE_CHARS = 16 * 1024;
const READ_CHUNK = 64 * 1024;
/** A log file larger than this is truncated once read (the lines already went to `onLog`). */
const MAX_FILE_BYTES = 8 * 1024 * 1024;

/**
 * Follows one replica output file. Replicas write to files, not pipes, so they outlive the
 * driver (a pipe would break, and the runtime with it, when the provisioner restarts) and a new
 * driver picks up where the old one stopped (`offset`).
 */
export class LogFileFollower {
  private partial = "";
  private fd: number | null = null;

  constructor(
    readonly path: string,
    readonly stream: ReplicaLogStream,
    public offset: number,
  ) {}

  /** Where a later follower should resume: before the incomplete line held in memory. */
  get resumeOffset(): number {
    return Math.max(0, this.offset - Buffer.byteLength(this.partial));
  }

  /** Reads what was appended since the last call and returns the complete lines. */
  poll(): string[] {
    // Opened once and kept: polling several times a second must not cost an open per replica.
    if (this.fd === null) {
      try {
        this.fd = openSync(this.path, "r+");
      } catch {
        return [];
      }
    }
    const fd = this.fd;
    const lines: string[] = [];
    const size = fstatSync(fd).size;
    if (size === this.offset) return lines;
    // Truncated by someone else: start over from the top.
    if (size < this.offset) this.offset = 0;
    const buf = Buffer.alloc(Math.min(READ_CHUNK, size - this.offset));
    while (this.offset < size) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, size - this.offset), this.offset);
      if (n <= 0) break;
      this.offset += n;
      this.take(buf.toString("utf8", 0, n), lines);
    }
    // The replica appends (O_APPEND), so after truncation its next write lands at offset 0.
    if (this.offset > MAX_FILE_BYTES) {
      ftruncateSync(fd, 0);
      this.offset = 0;
    }
    return lines;
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  private take(text: string, out: string[]): void {
    const parts = (this.partial + text).split("\n");
    this.partial = parts.pop() ?? "";
    if (this.partial.length > MAX_LINE_CHARS) {
      parts.push(this.partial);
      this.partial = "";
    }
    for (const raw of parts) {
      const line = (raw.endsWith("\r") ? raw.slice(0, -1) : raw).slice(0, MAX_LINE_CHARS);
      if (line === "") continue;
      out.push(line);
    }
  }
}
