import type { RouterOutputs } from "@tessera/api";

export type DeploymentView = RouterOutputs["deployments"]["get"];
export type RevisionView = RouterOutputs["deployments"]["revisions"][number];
