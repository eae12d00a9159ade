import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { runtimeEnv } from "@tessera/core";

export interface ReplicaLaunch {
  command: string;
  args: string[];
  env: Record<string, string>;
}

export interface RunningReplica {
  url: string;
  stop(): Promise<void>;
}

/**
 * Starts a replica runtime process and resolves once it listens (its JSON log says on which
 * port) and answers `/-/ready`; rejects with the replica's output if it exits or never gets there.
 */
export async function startReplica(launch: ReplicaLaunch, timeoutMs = 30_000): Promise<RunningReplica> {
  const child = spawn(launch.command, launch.args, { env: launch.env, stdio: ["ignore", "pipe", "pipe"] });
  const output: string[] = [];
  let port: number | undefined;
  const onLine = (line: string) => {
    output.push(line);
    try {
      const record = JSON.parse(line) as { msg?: string; port?: number };
      if (record.msg === "listening" && record.port) port = record.port;
    } catch {
      // Not a log record.
    }
  };
  createInterface({ input: child.stdout }).on("line", onLine);
  createInterface({ input: child.stderr }).on("line", onLine);
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await exited;
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`replica exited before it was ready:\n${output.join("\n")}`);
    if (port !== undefined) {
      const url = `http://127.0.0.1:${port}`;
      const ready = await fetch(`${url}/-/ready`).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ready) return { url, stop };
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`replica not ready in time:\n${output.join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The runtime contract for the `n`th probe replica of an isolation test. */
export function probeContract(n: number, codeDir: string, entry: string): Record<string, string> {
  return runtimeEnv({
    port: 0,
    codeDir,
    entry,
    userConfig: {},
    deployment: `probe-${n}`,
    revision: "rev-1",
    replica: `replica-${n}`,
    application: "isolation",
    maxBodyBytes: 1024 * 1024,
    exposeTracebacks: false,
    drainTimeoutS: 5,
  });
}

/** Asks each probe replica which `tessprobe` it loaded (`GET /version`), then stops them all. */
export async function versionsServedBy(
  replicas: Promise<RunningReplica>[],
): Promise<{ version: string; file: string }[]> {
  const started = await Promise.allSettled(replicas);
  try {
    const running = started.map((s) => {
      if (s.status === "rejected") throw s.reason;
      return s.value;
    });
    return await Promise.all(
      running.map(
        async (r) => (await (await fetch(`${r.url}/version`)).json()) as { version: string; file: string },
      ),
    );
  } finally {
    await Promise.all(started.map((s) => (s.status === "fulfilled" ? s.value.stop() : undefined)));
  }
}
