import type { ApiClient } from "./client.js";
import { CliError } from "./client.js";

export interface OrgInfo {
  id: string;
  slug: string;
  name: string;
}

/** The organisation the API key belongs to (the CLI authenticates by key only). */
export async function currentOrg(api: ApiClient): Promise<OrgInfo> {
  const who = await api.auth.whoami.query();
  if (who.kind !== "apiKey" || !who.org) throw new CliError("TESSERA_API_KEY is not a valid API key");
  return who.org;
}

/**
 * Find the application by name, or create it on the named cluster (default: the organisation's
 * only cluster, or a new one called `default`).
 */
export async function resolveApplication(
  api: ApiClient,
  org: OrgInfo,
  name: string,
  clusterName: string | undefined,
  print: (line: string) => void,
) {
  const apps = await api.applications.list.query({ orgId: org.id });
  const found = apps.find((a) => a.name === name);
  if (found) return found;
  const clusters = await api.clusters.list.query({ orgId: org.id });
  let cluster = clusterName ? clusters.find((c) => c.name === clusterName) : clusters[0];
  if (clusterName && !cluster) throw new CliError(`no cluster named ${clusterName}`);
  if (!cluster) {
    cluster = (await api.clusters.create.mutate({ orgId: org.id, name: "default" })).cluster;
    print(`created cluster default`);
  }
  if (!clusterName && clusters.length > 1)
    throw new CliError(`the organisation has ${clusters.length} clusters: pick one with --cluster`);
  const app = await api.applications.create.mutate({ orgId: org.id, clusterId: cluster.id, name });
  print(`created application ${name} on cluster ${cluster.name}`);
  return app;
}
