import { type ApiClient, CliError } from "../client.js";
import type { OrgInfo } from "../org.js";

/** `app/deployment` → the deployment, or a clear error. */
export async function findDeployment(api: ApiClient, org: OrgInfo, ref: string) {
  const [appName, depName] = ref.split("/");
  if (!appName || !depName) throw new CliError(`name a deployment as application/deployment, not "${ref}"`);
  const app = (await api.applications.list.query({ orgId: org.id })).find((a) => a.name === appName);
  if (!app) throw new CliError(`no application named ${appName}`);
  const dep = (await api.applications.get.query({ orgId: org.id, applicationId: app.id })).deployments.find(
    (d) => d.name === depName,
  );
  if (!dep) throw new CliError(`no deployment named ${depName} in ${appName}`);
  return dep;
}

/** Fixed replicas (0 parks the deployment) or autoscaling bounds, without a redeploy. */
export async function scale(
  api: ApiClient,
  org: OrgInfo,
  ref: string,
  s: {
    numReplicas?: number;
    autoscaling?: { minReplicas: number; maxReplicas: number; targetOngoingRequests?: number };
  },
) {
  const dep = await findDeployment(api, org, ref);
  const r = await api.deployments.updateScaling.mutate({ orgId: org.id, deploymentId: dep.id, ...s });
  return r.deployment;
}
