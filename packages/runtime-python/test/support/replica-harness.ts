import { type ChildProcess, spawn } from "node:child_process";
import { type Agent, request as httpRequest, type IncomingMessage } from "node:http";
import { createInterface } from "node:readline";

export interface ReplicaLaunch {
  command: string;
  args: string[];
  env: Record<string, string>;
}

export type LogRecord = Record<string, unknown> & { msg?: string; level?: string };

/** A replica process started by a test, with its parsed JSON log. */
export class TestReplica {
  readonly logs: LogRecord[] = [];
  readonly rawLines: string[] = [];
  readonly exited: Promise<number | null>;
  exitCode: number | null | undefined;
  port = 0;

  constructor(readonly proc: ChildProcess) {
    const collect = (line: string) => {
      this.rawLines.push(line);
      try {
        const rec = JSON.parse(line) as LogRecord;
        if (rec && typeof rec === "object") this.logs.push(rec);
      } catch {
        // stderr output and handler prints are not JSON; kept in rawLines.
      }
    };
    createInterface({ input: proc.stdout! }).on("line", collect);
    createInterface({ input: proc.stderr! }).on("line", collect);
    this.exited = new Promise((done) => {
      proc.on("exit", (code) => {
        this.exitCode = code;
        done(code);
      });
    });
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async waitLog(predicate: (r: LogRecord) => boolean, what: string, timeoutMs = 20_000): Promise<LogRecord> {
    return waitFor(
      () => this.logs.find(predicate),
      `${what}\n--- replica output ---\n${this.rawLines.join("\n")}`,
      timeoutMs,
    );
  }

  async stop(): Promise<void> {
    if (this.exitCode === undefined) {
      this.proc.kill("SIGKILL");
      await this.exited;
    }
  }
}

/** Polls `probe` until it returns a value (not undefined/false) or the deadline passes. */
export async function waitFor<T>(
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  what: string,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Spawns a replica with exactly the launch environment and waits until it listens (and, unless told, is ready). */
export async function startReplica(
  launch: ReplicaLaunch,
  opts: { waitReady?: boolean } = {},
): Promise<TestReplica> {
  const proc = spawn(launch.command, launch.args, { env: launch.env, stdio: ["ignore", "pipe", "pipe"] });
  const replica = new TestReplica(proc);
  const listening = replica.waitLog((r) => r.msg === "listening", "the replica to listen");
  const outcome = await Promise.race([listening, replica.exited.then((code) => ({ exited: code }))]);
  if ("exited" in outcome) return replica;
  replica.port = Number(outcome.port);
  if (opts.waitReady !== false) {
    await waitFor(
      async () =>
        (await send(replica.url, "/-/ready").catch(() => undefined))?.status === 200 ||
        replica.exitCode !== undefined,
      `the replica to be ready\n${replica.rawLines.join("\n")}`,
    );
  }
  return replica;
}

export interface Reply {
  status: number;
  headers: IncomingMessage["headers"];
  text: string;
  json(): any;
  reusedSocket: boolean;
}

export interface SendOptions {
  method?: string;
  body?: unknown;
  /** Sent as-is instead of JSON-encoding `body`. */
  raw?: string | Buffer;
  headers?: Record<string, string>;
  agent?: Agent;
  /** Send the body with transfer-encoding: chunked, in pieces of this size. */
  chunked?: number;
}

export function send(base: string, path: string, opts: SendOptions = {}): Promise<Reply> {
  const payload =
    opts.raw !== undefined
      ? Buffer.from(opts.raw)
      : opts.body === undefined
        ? undefined
        : Buffer.from(JSON.stringify(opts.body));
  return new Promise((done, fail) => {
    const req = httpRequest(
      `${base}${path}`,
      {
        method: opts.method ?? (payload ? "POST" : "GET"),
        agent: opts.agent ?? false,
        headers: {
          ...(payload && !opts.raw ? { "content-type": "application/json" } : {}),
          ...(payload && !opts.chunked ? { "content-length": String(payload.length) } : {}),
          ...opts.headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", fail);
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          done({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text,
            json: () => JSON.parse(text),
            reusedSocket: req.reusedSocket,
          });
        });
      },
    );
    req.on("error", fail);
    if (payload && opts.chunked) {
      for (let i = 0; i < payload.length; i += opts.chunked) req.write(payload.subarray(i, i + opts.chunked));
      req.end();
    } else req.end(payload);
  });
}

/** An in-progress streamed response, read chunk by chunk. */
export class StreamReader {
  private buffered = "";
  private ended = false;
  private failed: Error | undefined;
  private wake: (() => void) | undefined;

  constructor(readonly res: IncomingMessage) {
    res.setEncoding("utf8");
    res.on("data", (c: string) => {
      this.buffered += c;
      this.wake?.();
    });
    res.on("end", () => {
      this.ended = true;
      this.wake?.();
    });
    res.on("error", (err) => {
      this.failed = err;
      this.wake?.();
    });
    res.on("aborted", () => {
      this.failed = new Error("response aborted");
      this.wake?.();
    });
  }

  get isEnded(): boolean {
    return this.ended;
  }

  /** Resolves once the received text contains `needle`; returns everything received so far. */
  async until(needle: string, timeoutMs = 20_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!this.buffered.includes(needle)) {
      if (this.failed) throw this.failed;
      if (this.ended)
        throw new Error(
          `stream ended without ${JSON.stringify(needle)}; got ${JSON.stringify(this.buffered)}`,
        );
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(
          `timed out waiting for ${JSON.stringify(needle)}; got ${JSON.stringify(this.buffered)}`,
        );
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.wake = () => {
          clearTimeout(t);
          r();
        };
      });
    }
    return this.buffered;
  }

  async end(timeoutMs = 20_000): Promise<string> {
    await waitFor(() => this.ended || this.failed !== undefined, "the stream to end", timeoutMs);
    if (this.failed) throw this.failed;
    return this.buffered;
  }
}

export function openStream(
  base: string,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<StreamReader> {
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((done, fail) => {
    const req = httpRequest(
      `${base}${path}`,
      {
        method: "POST",
        agent: false,
        headers: { "content-type": "application/json", "content-length": String(payload.length), ...headers },
      },
      (res) => done(new StreamReader(res)),
    );
    req.on("error", fail);
    req.end(payload);
  });
}
