import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runtimeEnv } from "@tessera/core";
import { buildNodeBundle, type NodeBundle, nodeReplicaCommand } from "@tessera/runtime-node";
import {
  startReplica,
  type TestReplica,
} from "../../../../packages/runtime-python/test/support/replica-harness.js";

export {
  StreamReader,
  send,
  type TestReplica,
  waitFor,
} from "../../../../packages/runtime-python/test/support/replica-harness.js";

/**
 * Starts one real node-runtime replica of a bundle and waits until it is ready. Without a
 * `revision` the replica accepts requests meant for any revision: tests share one replica among
 * deployments whose revision ids the database makes up later. With one, it refuses (MISROUTED)
 * requests the gateway means for another revision.
 */
export async function startNodeReplica(
  bundle: NodeBundle,
  name: string,
  userConfig: Record<string, unknown> = {},
  revision = "",
): Promise<TestReplica> {
  const launch = await nodeReplicaCommand({
    bundle,
    env: runtimeEnv({
      port: 0,
      codeDir: bundle.dir,
      entry: bundle.entry,
      userConfig,
      deployment: "echo",
      revision,
      replica: name,
      application: "app",
      maxBodyBytes: 50 * 1024 * 1024,
      exposeTracebacks: true,
      drainTimeoutS: 30,
    }),
  });
  const replica = await startReplica(launch);
  if (!replica.port) throw new Error(`replica ${name} did not start:\n${replica.rawLines.join("\n")}`);
  return replica;
}

/**
 * Real node-runtime replicas serving test/fixtures/echo.ts. The bundle is built once per test file;
 * `open(gate)` releases requests waiting on that gate in every replica.
 */
export class EchoReplicas {
  readonly work = mkdtempSync(join(tmpdir(), "tessera-gateway-test-"));
  readonly gateDir = join(this.work, "gates");
  private bundle: Promise<NodeBundle> | undefined;
  private readonly started: TestReplica[] = [];

  constructor() {
    mkdirSync(this.gateDir);
  }

  /** `revision`: see startNodeReplica. */
  async start(name: string, revision?: string): Promise<TestReplica> {
    this.bundle ??= buildNodeBundle({
      codeDir: join(import.meta.dirname, "..", "fixtures"),
      entry: "echo.ts:Echo",
      outDir: join(this.work, "bundle"),
    });
    const replica = await startNodeReplica(await this.bundle, name, { gateDir: this.gateDir }, revision);
    this.started.push(replica);
    return replica;
  }

  open(gate: string): void {
    writeFileSync(join(this.gateDir, gate), "");
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.started.map((r) => r.stop()));
    rmSync(this.work, { recursive: true, force: true });
  }
}
