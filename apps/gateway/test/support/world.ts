import { generateApiKey } from "@tessera/core";
import {
  apiKeys,
  applications,
  clusters,
  type Database,
  deployments,
  organisations,
  type ReplicaState,
  replicas,
  revisions,
} from "@tessera/db";
import { eq } from "drizzle-orm";

export interface TestOrg {
  id: string;
  slug: string;
  clusterId: string;
  /** A valid API key of this organisation. */
  key: string;
  keyPrefix: string;
}

export interface TestDeployment {
  id: string;
  name: string;
  revisionId: string;
  applicationId: string;
  orgId: string;
  clusterId: string;
}

/** Rows the control plane would write, inserted directly: organisations, keys, apps, replicas. */
export class World {
  constructor(readonly db: Database) {}

  async org(slug: string): Promise<TestOrg> {
    const [org] = await this.db.insert(organisations).values({ slug, name: slug }).returning();
    const [cluster] = await this.db
      .insert(clusters)
      .values({
        orgId: org!.id,
        name: "default",
        quota: { cpus: 8, memoryMb: 8192, gpus: 0, maxReplicas: 10 },
        state: "ready",
      })
      .returning();
    const key = await this.apiKey(org!.id);
    return { id: org!.id, slug, clusterId: cluster!.id, ...key };
  }

  async apiKey(orgId: string): Promise<{ key: string; keyPrefix: string }> {
    const k = generateApiKey();
    await this.db.insert(apiKeys).values({ orgId, name: "test", prefix: k.prefix, keyHash: k.hash });
    return { key: k.key, keyPrefix: k.prefix };
  }

  async application(org: TestOrg, name: string, ingress: string | null = null): Promise<string> {
    const [app] = await this.db
      .insert(applications)
      .values({ orgId: org.id, clusterId: org.clusterId, name, ingressDeployment: ingress })
      .returning();
    return app!.id;
  }

  async deployment(
    org: TestOrg,
    applicationId: string,
    name: string,
    opts: {
      config?: Record<string, unknown>;
      scaling?: Record<string, unknown>;
      targetReplicas?: number;
      state?: "ready" | "parked" | "deploying";
      /** false: the revision exists but was never rolled out (a first deploy in progress or failed). */
      live?: boolean;
    } = {},
  ): Promise<TestDeployment> {
    const [dep] = await this.db
      .insert(deployments)
      .values({
        orgId: org.id,
        applicationId,
        clusterId: org.clusterId,
        name,
        scaling: opts.scaling ?? { numReplicas: 1 },
        targetReplicas: opts.targetReplicas ?? 1,
        state: opts.state ?? "ready",
        version: 1,
      })
      .returning();
    const [rev] = await this.db
      .insert(revisions)
      .values({
        orgId: org.id,
        deploymentId: dep!.id,
        version: 1,
        config: { runtime: "node", entry: "echo.ts:Echo", ...opts.config },
        code: { files: { "echo.ts": "" }, encoding: "utf8" },
        envHash: "none",
        state: "live",
      })
      .returning();
    await this.db
      .update(deployments)
      .set({ liveRevisionId: opts.live === false ? null : rev!.id, desiredRevisionId: rev!.id })
      .where(eq(deployments.id, dep!.id));
    return {
      id: dep!.id,
      name,
      revisionId: rev!.id,
      applicationId,
      orgId: org.id,
      clusterId: org.clusterId,
    };
  }

  async replica(dep: TestDeployment, address: string, state: ReplicaState = "ready"): Promise<string> {
    const [row] = await this.db
      .insert(replicas)
      .values({
        orgId: dep.orgId,
        clusterId: dep.clusterId,
        deploymentId: dep.id,
        revisionId: dep.revisionId,
        address,
        state,
        resources: { cpus: 1, gpus: 0, memoryMb: 512 },
      })
      .returning();
    return row!.id;
  }

  async setReplicaState(id: string, state: ReplicaState): Promise<void> {
    await this.db.update(replicas).set({ state }).where(eq(replicas.id, id));
  }
}
