/**
 * Gateway overhead benchmark: the same replica (the ts-dataframe example on the node runtime)
 * measured directly, through the Tessera gateway (its own process, as deployed) and, when nginx is
 * installed, through nginx proxy_pass with upstream keep-alive. Prints requests/s, p50 and p99 and
 * the ratio to the direct numbers. Knobs: BENCH_DURATION_S (10), BENCH_CONNECTIONS (32).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import autocannon from "autocannon";
import { startNodeReplica } from "../apps/gateway/test/support/echo-replicas.js";
import { World } from "../apps/gateway/test/support/world.js";
import { createTestDatabase, testRedisPrefix } from "../packages/db/src/testing.js";
import { buildNodeBundle } from "../packages/runtime-node/src/index.js";

const ROOT = join(import.meta.dirname, "..");
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const BODY = JSON.stringify({
  rows: [
    { id: 1, name: "a" },
    { id: 1, name: "a" },
    { id: 2, name: "b" },
  ],
});

export interface BenchRow {
  target: string;
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  /** CPU microseconds the proxy (gateway or nginx) spent per request; null for direct. */
  proxyCpuUs: number | null;
  replicaCpuUs: number;
}

/** CPU time (user + system, ms) used so far by a process and its direct children, from /proc. */
function cpuMs(pid: number): number {
  const ticks = (p: number) => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      return Number(fields[11]) + Number(fields[12]); // utime, stime
    } catch {
      return 0;
    }
  };
  let children: number[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    // no children file on this kernel: the process alone
  }
  return ((ticks(pid) + children.reduce((sum, c) => sum + ticks(c), 0)) * 1000) / 100; // USER_HZ = 100 on Linux
}

/**
 * Measures one target. `proxyPid` (the gateway or nginx) and `replicaPid` are sampled for CPU
 * time, giving CPU per request: unlike requests/s, that figure holds on a machine shared with
 * other work.
 */
async function measure(
  target: string,
  url: string,
  pids: { proxy?: number; replica: number },
  headers: Record<string, string> = {},
): Promise<BenchRow> {
  const options = {
    url,
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: BODY,
    connections: CONNECTIONS,
  };
  await autocannon({ ...options, duration: 1 }); // warm up pools and JIT
  const before = { proxy: pids.proxy ? cpuMs(pids.proxy) : 0, replica: cpuMs(pids.replica) };
  const result = await autocannon({ ...options, duration: DURATION_S });
  const requests = Math.max(1, result.requests.total);
  return {
    target,
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.timeouts + result.non2xx,
    proxyCpuUs: pids.proxy ? ((cpuMs(pids.proxy) - before.proxy) * 1000) / requests : null,
    replicaCpuUs: ((cpuMs(pids.replica) - before.replica) * 1000) / requests,
  };
}

function waitForLogLine(
  proc: ChildProcess,
  match: (line: Record<string, unknown>) => boolean,
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const lines: string[] = [];
    const onLine = (line: string) => {
      lines.push(line);
      try {
        const record = JSON.parse(line) as Record<string, unknown>;
        if (match(record)) resolve(record);
      } catch {
        // not a JSON log line
      }
    };
    createInterface({ input: proc.stdout! }).on("line", onLine);
    createInterface({ input: proc.stderr! }).on("line", onLine);
    proc.once("exit", (code) => reject(new Error(`process exited (${code}):\n${lines.join("\n")}`)));
  });
}

function hasNginx(): string | null {
  for (const candidate of ["nginx", "/usr/sbin/nginx"]) {
    try {
      execFileSync(candidate, ["-v"], { stdio: "ignore" });
      return candidate;
    } catch {
      // not installed here
    }
  }
  return null;
}

async function startNginx(
  binary: string,
  work: string,
  replicaPort: number,
): Promise<{ url: string; pid: number; stop(): void }> {
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const conf = join(work, "nginx.conf");
  writeFileSync(
    conf,
    `worker_processes 1;
daemon off;
pid ${join(work, "nginx.pid")};
error_log ${join(work, "nginx-error.log")};
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${work}; proxy_temp_path ${work}; fastcgi_temp_path ${work};
  uwsgi_temp_path ${work}; scgi_temp_path ${work};
  upstream replica { server 127.0.0.1:${replicaPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://replica;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`,
  );
  const proc = spawn(binary, ["-c", conf, "-p", work], { stdio: "ignore" });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await fetch(`${url}/-/healthz`);
      break;
    } catch {
      if (Date.now() > deadline) throw new Error("nginx did not start");
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { url, pid: proc.pid!, stop: () => proc.kill("SIGTERM") };
}

export async function benchGateway(): Promise<BenchRow[]> {
  const work = mkdtempSync(join(tmpdir(), "tessera-bench-"));
  const tdb = await createTestDatabase("bench");
  const prefix = testRedisPrefix("bench");
  const cleanup: (() => Promise<void> | void)[] = [
    () => tdb.drop(),
    () => rmSync(work, { recursive: true, force: true }),
  ];
  try {
    const bundle = await buildNodeBundle({
      codeDir: join(ROOT, "examples", "ts-dataframe"),
      entry: "handler.ts:Dataframe",
      outDir: join(work, "bundle"),
    });
    const replica = await startNodeReplica(bundle, "bench-1");
    cleanup.unshift(() => replica.stop());

    const world = new World(tdb.db);
    const org = await world.org("bench");
    const app = await world.application(org, "df");
    // Room for every benchmark connection: the gateway must not queue what the direct run does not.
    const dep = await world.deployment(org, app, "df", { config: { maxOngoingRequests: 1000 } });
    await world.replica(dep, replica.url);

    const gatewayProc = spawn(
      process.execPath,
      [
        ...(process.env.BENCH_GATEWAY_NODE_ARGS?.split(" ").filter(Boolean) ?? []),
        "--import",
        "tsx",
        join(ROOT, "apps", "gateway", "src", "main.ts"),
      ],
      {
        cwd: join(ROOT, "apps", "gateway"),
        env: {
          ...process.env,
          DATABASE_URL: tdb.url,
          REDIS_PREFIX: prefix,
          GATEWAY_PORT: "0",
          NODE_ENV: "production",
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    const gatewayExited = new Promise((r) => gatewayProc.once("exit", r));
    // SIGTERM flushes usage events: the database must still be there until the process is gone.
    cleanup.unshift(async () => {
      gatewayProc.kill("SIGTERM");
      await gatewayExited;
    });
    const listening = await waitForLogLine(gatewayProc, (r) => r.msg === "gateway listening");
    const gatewayUrl = String(listening.url);

    const rows: BenchRow[] = [];
    const replicaPid = replica.proc.pid!;
    rows.push(await measure("direct", `${replica.url}/deduplicate`, { replica: replicaPid }));
    rows.push(
      await measure(
        "gateway",
        `${gatewayUrl}/v1/bench/df/deduplicate`,
        { proxy: gatewayProc.pid!, replica: replicaPid },
        { authorization: `Bearer ${org.key}` },
      ),
    );
    const nginx = hasNginx();
    if (nginx) {
      const proxy = await startNginx(nginx, work, replica.port);
      cleanup.unshift(() => proxy.stop());
      rows.push(
        await measure("nginx", `${proxy.url}/deduplicate`, { proxy: proxy.pid, replica: replicaPid }),
      );
    }
    return rows;
  } finally {
    for (const step of cleanup) await step();
  }
}

export function printBenchRows(title: string, rows: BenchRow[]): void {
  const direct = rows.find((r) => r.target === "direct");
  console.log(`\n${title} (${CONNECTIONS} connections, ${DURATION_S} s each)`);
  console.log(
    "target     req/s     p50 ms   p99 ms   req/s vs direct   errors   proxy CPU/req   replica CPU/req",
  );
  for (const r of rows) {
    const ratio = direct ? `${((r.rps / direct.rps) * 100).toFixed(0)}%` : "-";
    const proxyCpu = r.proxyCpuUs === null ? "-" : `${r.proxyCpuUs.toFixed(0)} µs`;
    console.log(
      `${r.target.padEnd(9)}${r.rps.toFixed(0).padStart(7)}${r.p50.toFixed(1).padStart(10)}${r.p99.toFixed(1).padStart(9)}${ratio.padStart(18)}${String(r.errors).padStart(9)}${proxyCpu.padStart(16)}${`${r.replicaCpuUs.toFixed(0)} µs`.padStart(18)}`,
    );
  }
}
