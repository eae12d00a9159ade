import { type ClusterDriver, createDriver, type ReplicaLogLine } from "@tessera/cluster";
import { redisKeys } from "@tessera/core";
import type { Database } from "@tessera/db";
import { BullJobQueue, createControlWorker, createRedisNotifier } from "@tessera/jobs";
import { Redis } from "ioredis";
import { type AutoscalerHandle, startAutoscaler } from "./autoscaling/index.js";
import { type ClusterRow, Controller, controlJobHandler, type HandleSettings } from "./controller/index.js";
import { componentLog, type Log } from "./controller/log.js";
import { ReplicaLogSink } from "./controller/replica-log-sink.js";

export interface ProvisionerOptions {
  db: Database;
  redisUrl: string;
  /** `REDIS_PREFIX`: shared with the API, gateways and consoles of the same platform. */
  redisPrefix?: string;
  /** `TESSERA_DATA_DIR`: where the local driver keeps clusters, environments and code. */
  dataDir?: string;
  /** Handle URL/token for composition (TESSERA_GATEWAY_URL, TESSERA_HANDLE_SECRET). */
  handles?: HandleSettings;
  /**
   * Overrides how a cluster's driver is made (tests, embedding); `hooks.onLog` stores replica
   * output in `replica_logs`. Called once per cluster; return a shared instance where one driver
   * serves several clusters.
   */
  driverFor?: (cluster: ClusterRow, hooks: DriverLogHooks) => ClusterDriver;
  /** Full reconcile period. Default 3000 ms. */
  reconcileIntervalMs?: number;
  /** Autoscaler period. Default 1000 ms. */
  autoscalerIntervalMs?: number;
  /** Claim on a running job; a dead provisioner's jobs move to another after about this. Default 30 s. */
  jobLockMs?: number;
  jobRetryBackoffMs?: number;
  /** Upper bound on the drain of a stopping replica. Default 30 s. */
  maxDrainS?: number;
  /** How long a draining replica runs on so gateways stop routing to it first. Default 2000 ms. */
  routingGraceMs?: number;
  deployTimeoutMs?: number;
  log?: Log;
}

export interface DriverLogHooks {
  onLog: (line: ReplicaLogLine) => void;
}

export interface Provisioner {
  controller: Controller;
  /** Stores replica output (the drivers' `onLog`). */
  replicaLogs: ReplicaLogSink;
  queue: BullJobQueue;
  autoscaler: AutoscalerHandle;
  /** Resolves once the worker takes jobs and the wake subscription is live. */
  ready: Promise<void>;
  /**
   * Stops taking jobs, the reconcile loop and the autoscaler; replicas keep running for the next
   * provisioner to adopt. `force` abandons running jobs (they are re-run elsewhere).
   */
  close(opts?: { force?: boolean }): Promise<void>;
}

/**
 * Drivers as cluster rows ask for them. Local clusters sharing a data dir share one LocalDriver
 * (it supervises every replica under that dir and adopts them after a restart); replica output
 * goes to `onLog`.
 */
export function defaultDriverFactory(opts: {
  dataDir?: string;
  onLog?: (line: ReplicaLogLine) => void;
}): (cluster: ClusterRow) => ClusterDriver {
  const local = new Map<string, ClusterDriver>();
  return (cluster) => {
    if (cluster.driver !== "local")
      return createDriver({ id: cluster.id, driver: cluster.driver, driverConfig: cluster.driverConfig });
    const driverConfig = { ...(opts.dataDir ? { dataDir: opts.dataDir } : {}), ...cluster.driverConfig };
    const key = JSON.stringify(driverConfig);
    let driver = local.get(key);
    if (!driver) {
      driver = createDriver({ driver: "local", driverConfig }, { local: { onLog: opts.onLog } });
      local.set(key, driver);
    }
    return driver;
  };
}

/** Worker + controller loop + autoscaler, all on one Redis and one database. */
export function startProvisioner(options: ProvisionerOptions): Provisioner {
  const { db } = options;
  const prefix = options.redisPrefix ?? redisKeys().prefix;
  const log = options.log ?? componentLog("provisioner");
  const redis = new Redis(options.redisUrl, { maxRetriesPerRequest: null });
  redis.on("error", (err) => log("warn", "redis error", { err: String(err) }));
  const notify = createRedisNotifier(redis, prefix);
  const queue = new BullJobQueue({ db, redis, prefix, backoffMs: options.jobRetryBackoffMs });
  const replicaLogs = new ReplicaLogSink(db, log);
  const controller = new Controller({
    db,
    notify,
    redis,
    prefix,
    driverFor: options.driverFor
      ? (cluster) => options.driverFor!(cluster, { onLog: replicaLogs.write })
      : defaultDriverFactory({ dataDir: options.dataDir, onLog: replicaLogs.write }),
    handles: options.handles,
    intervalMs: options.reconcileIntervalMs,
    maxDrainS: options.maxDrainS,
    routingGraceMs: options.routingGraceMs,
    log: options.log,
  });
  const worker = createControlWorker({
    db,
    redis,
    prefix,
    handler: controlJobHandler(controller, db, { deployTimeoutMs: options.deployTimeoutMs }),
    lockDurationMs: options.jobLockMs,
    stalledIntervalMs: options.jobLockMs,
    log: options.log,
  });
  const autoscaler = startAutoscaler({
    db,
    redis,
    prefix,
    queue,
    intervalMs: options.autoscalerIntervalMs,
    log: options.log,
  });
  controller.start();
  const ready = Promise.all([worker.ready, autoscaler.ready]).then(() => undefined);

  let closing: Promise<void> | null = null;
  return {
    controller,
    replicaLogs,
    queue,
    autoscaler,
    ready,
    close(opts = {}) {
      closing ??= (async () => {
        await worker.close({ force: opts.force });
        await autoscaler.stop();
        await controller.close();
        await replicaLogs.close();
        await queue.close();
        await redis.quit().catch(() => redis.disconnect());
      })();
      return closing;
    },
  };
}
