import { recordUsageEvents } from "@tessera/billing/service";
import type { ClusterDriver, EnvironmentHandle } from "@tessera/cluster";
import { type EnvironmentSpec, environmentSpec, type RuntimeKind } from "@tessera/core";
import { clusters, type Database, environmentLogs, environments } from "@tessera/db";
import { eq } from "drizzle-orm";
import type { Log } from "./log.js";

export type EnvironmentBuildState =
  | { state: "building" }
  | { state: "ready"; handle: EnvironmentHandle }
  | { state: "failed"; reason: string; failedAt: number };

/** Who a build is metered to (`build_seconds`): the revision whose rollout needed it. */
export interface BuildCharge {
  orgId: string;
  deploymentId: string;
  revisionId: string;
}

interface Build {
  status: EnvironmentBuildState;
  done: Promise<void>;
}

/**
 * Environment builds of this provisioner, one per cluster and hash, running in the background so a
 * reconcile pass never blocks on a long build. The `environments` row mirrors the outcome and the
 * build log is appended to `environment_logs` line by line as the driver reports it.
 */
export class EnvironmentBuilds {
  private readonly builds = new Map<string, Build>();

  constructor(
    private readonly db: Database,
    private readonly log: Log,
    /** Called when a build finishes either way, so waiting rollouts move on at once. */
    private readonly onSettled: (hash: string) => void,
  ) {}

  /**
   * The build's state, starting it when none is known here. A failed build is retried only for
   * work that started after it failed (`notBefore`, epoch ms), so one revision sees one failure.
   */
  ensure(
    driver: ClusterDriver,
    clusterId: string,
    hash: string,
    notBefore: number,
    chargeTo?: BuildCharge,
  ): EnvironmentBuildState {
    const key = `${clusterId}:${hash}`;
    const known = this.builds.get(key);
    if (known && !(known.status.state === "failed" && known.status.failedAt < notBefore)) return known.status;
    const build: Build = { status: { state: "building" }, done: Promise.resolve() };
    build.done = this.run(driver, clusterId, hash, chargeTo).then(
      (handle) => {
        build.status = { state: "ready", handle };
      },
      (err: unknown) => {
        build.status = {
          state: "failed",
          reason: err instanceof Error ? err.message : String(err),
          failedAt: Date.now(),
        };
      },
    );
    build.done.finally(() => this.onSettled(hash));
    this.builds.set(key, build);
    return build.status;
  }

  /** The outcome of a build once it finished (starting it when needed). */
  async finished(driver: ClusterDriver, clusterId: string, hash: string): Promise<EnvironmentBuildState> {
    this.ensure(driver, clusterId, hash, Date.now());
    const build = this.builds.get(`${clusterId}:${hash}`)!;
    await build.done;
    return build.status;
  }

  /** Resolves when every build started so far has finished. */
  async settled(): Promise<void> {
    await Promise.all([...this.builds.values()].map((b) => b.done));
  }

  /**
   * Build time is charged to the organisation whose cluster asked for the environment, and to the
   * deployment and revision whose rollout needed it when known.
   */
  private async meterBuild(
    clusterId: string,
    hash: string,
    buildMs: number,
    chargeTo: BuildCharge | undefined,
  ): Promise<void> {
    try {
      const [cluster] = await this.db
        .select({ orgId: clusters.orgId })
        .from(clusters)
        .where(eq(clusters.id, clusterId));
      if (!cluster) return;
      const at = new Date();
      await recordUsageEvents(this.db, [
        {
          id: `build:${clusterId}:${hash}:${at.getTime()}`,
          orgId: cluster.orgId,
          deploymentId: chargeTo?.deploymentId ?? null,
          revisionId: chargeTo?.revisionId ?? null,
          kind: "build_seconds",
          quantity: buildMs / 1000,
          at,
          meta: { envHash: hash },
        },
      ]);
    } catch (err) {
      this.log("warn", "build time not metered", { hash, clusterId, err: String(err) });
    }
  }

  private async run(
    driver: ClusterDriver,
    clusterId: string,
    hash: string,
    chargeTo: BuildCharge | undefined,
  ): Promise<EnvironmentHandle> {
    const [row] = await this.db.select().from(environments).where(eq(environments.hash, hash));
    if (!row) throw new Error(`environment ${hash} is not recorded`);
    const spec = environmentSpec.safeParse(row.spec);
    if (!spec.success) throw new Error(`environment ${hash} has an invalid spec`);
    await this.db
      .update(environments)
      .set({ state: "building", startedAt: new Date(), finishedAt: null, failureReason: null })
      .where(eq(environments.hash, hash));
    const lines = new LineWriter(this.db, hash, this.log);
    try {
      const handle = await driver.ensureEnvironment(
        { clusterId, hash, runtime: row.runtime as RuntimeKind, spec: spec.data as EnvironmentSpec },
        (line) => lines.write(line),
      );
      await lines.flush();
      await this.db
        .update(environments)
        .set({ state: "ready", path: handle.location, finishedAt: new Date() })
        .where(eq(environments.hash, hash));
      if (handle.buildMs !== undefined) await this.meterBuild(clusterId, hash, handle.buildMs, chargeTo);
      return handle;
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      lines.write(`build failed: ${reason}`);
      await lines.flush();
      await this.db
        .update(environments)
        .set({ state: "failed", failureReason: reason.slice(0, 4000), finishedAt: new Date() })
        .where(eq(environments.hash, hash));
      this.log("warn", "environment build failed", { hash, clusterId, reason });
      throw err;
    }
  }
}

/** Appends build log lines in order, each as soon as the previous insert finished. */
class LineWriter {
  private chain: Promise<void> = Promise.resolve();
  constructor(
    private readonly db: Database,
    private readonly hash: string,
    private readonly log: Log,
  ) {}
  write(line: string): void {
    const text = line.replace(/\r?\n$/, "").slice(0, 10_000);
    this.chain = this.chain.then(() =>
      this.db
        .insert(environmentLogs)
        .values({ envHash: this.hash, line: text })
        .then(
          () => {},
          (err) => this.log("warn", "environment log line lost", { hash: this.hash, err: String(err) }),
        ),
    );
  }
  flush(): Promise<void> {
    return this.chain;
  }
}
