import {
  applications,
  clusters,
  type Database,
  deployments,
  organisations,
  replicas,
  revisions,
} from "@tessera/db";
import { eq } from "drizzle-orm";

/** An organisation with one cluster, application and deployment (one revision), as the API would leave them. */
export async function seedOrg(db: Database, slug: string, plan = "free") {
  const [org] = await db.insert(organisations).values({ slug, name: slug, plan }).returning();
  const [cluster] = await db
    .insert(clusters)
    .values({ orgId: org!.id, name: "main", quota: { cpus: 8, memoryMb: 16384, gpus: 1, maxReplicas: 10 } })
    .returning();
  const [app] = await db
    .insert(applications)
    .values({ orgId: org!.id, clusterId: cluster!.id, name: "app", ingressDeployment: "echo" })
    .returning();
  const deployment = await seedDeployment(db, org!.id, cluster!.id, app!.id, "echo");
  return { org: org!, cluster: cluster!, app: app!, ...deployment };
}

export async function seedDeployment(
  db: Database,
  orgId: string,
  clusterId: string,
  applicationId: string,
  name: string,
  config: Record<string, unknown> = { resources: { cpus: 1, gpus: 0, memoryMb: 512 }, numReplicas: 1 },
  targetReplicas = 1,
) {
  const [deployment] = await db
    .insert(deployments)
    .values({ orgId, clusterId, applicationId, name, state: "ready", version: 1, targetReplicas })
    .returning();
  const [revision] = await db
    .insert(revisions)
    .values({
      orgId,
      deploymentId: deployment!.id,
      version: 1,
      config,
      code: { files: {}, encoding: "utf8" },
      envHash: "e".repeat(64),
      state: "live",
    })
    .returning();
  await db
    .update(deployments)
    .set({ liveRevisionId: revision!.id, desiredRevisionId: revision!.id })
    .where(eq(deployments.id, deployment!.id));
  return { deployment: deployment!, revision: revision! };
}

export async function seedReplica(
  db: Database,
  d: { org: { id: string }; cluster: { id: string }; deployment: { id: string }; revision: { id: string } },
  opts: {
    startedAt: Date;
    stoppedAt?: Date | null;
    state?: "starting" | "ready" | "stopped" | "failed";
    resources?: { cpus: number; gpus: number; memoryMb: number };
    address?: string;
  },
) {
  const [r] = await db
    .insert(replicas)
    .values({
      orgId: d.org.id,
      clusterId: d.cluster.id,
      deploymentId: d.deployment.id,
      revisionId: d.revision.id,
      state: opts.state ?? (opts.stoppedAt ? "stopped" : "ready"),
      resources: opts.resources ?? { cpus: 1, gpus: 0, memoryMb: 512 },
      startedAt: opts.startedAt,
      stoppedAt: opts.stoppedAt ?? null,
      address: opts.address ?? null,
    })
    .returning();
  return r!;
}
