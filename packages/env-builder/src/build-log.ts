import { closeSync, openSync, readSync, statSync, writeSync } from "node:fs";
import { StringDecoder } from "node:string_decoder";

const TAIL_LINES = 40;
const MAX_LINE_CHARS = 4000;

export type LogListener = (line: string) => void;

/**
 * The log of one build: every line goes to the log file (kept after a failure), to the live
 * listeners, and into a short tail used for error messages.
 */
export class BuildLog {
  private readonly fd: number;
  private readonly tail: string[] = [];
  private closed = false;

  constructor(
    readonly file: string,
    private readonly listeners: Iterable<LogListener>,
  ) {
    this.fd = openSync(file, "w");
  }

  line(text: string): void {
    const line = text.length > MAX_LINE_CHARS ? `${text.slice(0, MAX_LINE_CHARS)}…` : text;
    if (!this.closed) writeSync(this.fd, `${line}\n`);
    this.tail.push(line);
    if (this.tail.length > TAIL_LINES) this.tail.shift();
    emit(this.listeners, line);
  }

  lastLines(): string[] {
    return [...this.tail];
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}

export function emit(listeners: Iterable<LogListener>, line: string): void {
  for (const listener of listeners) {
    try {
      listener(line);
    } catch {
      // A failing log consumer must not fail the build it is watching.
    }
  }
}

/**
 * Splits a byte stream into lines. Progress bars rewrite a line with bare `\r`; each rewrite is
 * a line of its own so the log shows progress instead of one huge line at the end.
 */
export class LineSplitter {
  private pending = "";
  constructor(private readonly emit: (line: string) => void) {}

  push(chunk: string): void {
    const parts = (this.pending + chunk).split(/\r\n|\n|\r/);
    this.pending = parts.pop() ?? "";
    for (const part of parts) if (part.length > 0) this.emit(part);
    if (this.pending.length > MAX_LINE_CHARS) {
      this.emit(this.pending);
      this.pending = "";
    }
  }

  flush(): void {
    if (this.pending.length > 0) this.emit(this.pending);
    this.pending = "";
  }
}

/**
 * Follows a log file written by another process (a build this process is waiting for), passing
 * new lines to `emit` each time `poll` is called. A file that shrank was restarted: read it again.
 */
export class LogFollower {
  private offset = 0;
  private readonly splitter: LineSplitter;
  private readonly decoder = new StringDecoder("utf8");

  constructor(
    private readonly file: string,
    emit: (line: string) => void,
  ) {
    this.splitter = new LineSplitter(emit);
  }

  poll(): void {
    let size: number;
    try {
      size = statSync(this.file).size;
    } catch {
      return;
    }
    if (size < this.offset) {
      this.offset = 0;
      this.decoder.end();
    }
    if (size === this.offset) return;
    const fd = openSync(this.file, "r");
    try {
      const buffer = Buffer.alloc(size - this.offset);
      const read = readSync(fd, buffer, 0, buffer.length, this.offset);
      this.offset += read;
      this.splitter.push(this.decoder.write(buffer.subarray(0, read)));
    } finally {
      closeSync(fd);
    }
  }
}
