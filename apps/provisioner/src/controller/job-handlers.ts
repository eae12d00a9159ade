import type { ControlJob } from "@tessera/core";
import { clusters, type Database, deployments, replicas, revisions } from "@tessera/db";
import { type ControlJobContext, type ControlJobHandler, permanentFailure } from "@tessera/jobs";
import { and, eq, inArray, isNotNull, ne } from "drizzle-orm";
import type { Controller } from "./controller.js";
import { ACTIVE_REPLICA_STATES } from "./replica-rows.js";

export interface JobHandlerOptions {
  /** How long a deployRevision job follows its rollout before giving up (the loop carries on). */
  deployTimeoutMs?: number;
  /** How long delete jobs wait for replicas to stop. */
  stopTimeoutMs?: number;
}

/**
 * Control jobs only nudge the controller and follow the outcome: every decision is the
 * controller's, taken from the state in Postgres, so a retried or duplicated job converges on the
 * same result instead of acting twice.
 */
export function controlJobHandler(
  controller: Controller,
  db: Database,
  options: JobHandlerOptions = {},
): ControlJobHandler {
  const deployTimeoutMs = options.deployTimeoutMs ?? 30 * 60_000;
  const stopTimeoutMs = options.stopTimeoutMs ?? 5 * 60_000;

  // A stopping provisioner drops the jobs it follows; their claims lapse and another provisioner
  // re-runs them against whatever state the work reached.
  function stopIfClosing(): void {
    if (controller.isClosed)
      throw new Error("the provisioner is stopping; the job will be resumed elsewhere");
  }

  async function followRevision(revisionId: string, ctx: ControlJobContext): Promise<void> {
    const deadline = Date.now() + deployTimeoutMs;
    let reported = "";
    for (;;) {
      stopIfClosing();
      const [rev] = await db
        .select({
          state: revisions.state,
          version: revisions.version,
          reason: revisions.failureReason,
          deploymentId: revisions.deploymentId,
        })
        .from(revisions)
        .where(eq(revisions.id, revisionId));
      if (!rev) throw permanentFailure(`revision ${revisionId} not found`);
      const [where] = await db
        .select({ cluster: clusters.state, clusterReason: clusters.stateReason })
        .from(deployments)
        .innerJoin(clusters, eq(clusters.id, deployments.clusterId))
        .where(eq(deployments.id, rev.deploymentId));
      const waitingFor =
        where && where.cluster !== "ready"
          ? ` (waiting for the cluster: ${where.cluster}${where.clusterReason ? `, ${where.clusterReason}` : ""})`
          : "";
      const status = `revision v${rev.version}: ${rev.state}${rev.reason ? ` (${rev.reason})` : ""}${waitingFor}`;
      if (status !== reported) {
        reported = status;
        await ctx.log(status);
      }
      if (rev.state === "live" || rev.state === "superseded" || rev.state === "rolled_back") return;
      if (rev.state === "failed") throw permanentFailure(rev.reason ?? "the rollout failed");
      if (Date.now() > deadline)
        throw new Error(
          `revision v${rev.version} still ${rev.state} after ${Math.round(deployTimeoutMs / 1000)}s`,
        );
      await controller.reconcileDeployment(rev.deploymentId);
      await controller.waitForChange(rev.deploymentId, 500);
    }
  }

  async function stopDeployments(ids: string[], ctx: ControlJobContext): Promise<void> {
    const deadline = Date.now() + stopTimeoutMs;
    for (;;) {
      stopIfClosing();
      for (const id of ids) await controller.reconcileDeployment(id);
      const [left] = await db
        .select({ id: replicas.id })
        .from(replicas)
        .where(and(inArray(replicas.deploymentId, ids), inArray(replicas.state, ACTIVE_REPLICA_STATES)))
        .limit(1);
      const [unfinished] = await db
        .select({ id: deployments.id })
        .from(deployments)
        .where(
          and(
            inArray(deployments.id, ids),
            isNotNull(deployments.deletedAt),
            ne(deployments.state, "deleted"),
          ),
        )
        .limit(1);
      if (!left && !unfinished) {
        await ctx.log(`all replicas stopped (${ids.length} deployment${ids.length === 1 ? "" : "s"})`);
        return;
      }
      if (Date.now() > deadline)
        throw new Error("replicas still running; the controller keeps stopping them");
      await controller.waitForChange(ids[0]!, 500);
    }
  }

  return async (job: ControlJob, ctx) => {
    switch (job.kind) {
      case "provisionCluster":
        await controller.provisionCluster(job.clusterId);
        await ctx.log("cluster ready");
        return;
      case "destroyCluster":
        await controller.destroyCluster(job.clusterId);
        await ctx.log("cluster destroyed");
        return;
      case "buildEnvironment": {
        const result = await controller.buildEnvironment(job.clusterId, job.envHash);
        if (result.state === "failed") throw permanentFailure(`environment build failed: ${result.reason}`);
        await ctx.log(`environment ${job.envHash} ready`);
        return;
      }
      case "deployRevision":
        await followRevision(job.revisionId, ctx);
        return;
      case "scaleDeployment":
        await controller.reconcileDeployment(job.deploymentId);
        return;
      case "deleteDeployment":
        await stopDeployments([job.deploymentId], ctx);
        return;
      case "deleteApplication": {
        const deps = await db
          .select({ id: deployments.id })
          .from(deployments)
          .where(eq(deployments.applicationId, job.applicationId));
        if (deps.length > 0)
          await stopDeployments(
            deps.map((d) => d.id),
            ctx,
          );
        return;
      }
    }
  };
}
