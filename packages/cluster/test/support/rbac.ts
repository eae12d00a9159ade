import { readFileSync } from "node:fs";
import { loadAllYaml } from "@kubernetes/client-node";

/**
 * The `verb resource` pairs the provisioner's ClusterRole in infra/ grants, in the form
 * `FakeApiServer.seen` records the calls it served.
 */
export function provisionerRbacGrants(): Set<string> {
  const docs = loadAllYaml(
    readFileSync(new URL("../../../../infra/k8s/base/provisioner-rbac.yaml", import.meta.url), "utf8"),
  );
  const role = docs.find((d) => d?.kind === "ClusterRole" && d.metadata.name === "tessera-provisioner");
  if (!role) throw new Error("infra/k8s/base/provisioner-rbac.yaml has no ClusterRole tessera-provisioner");
  const granted = new Set<string>();
  for (const rule of role.rules as { resources: string[]; verbs: string[] }[])
    for (const r of rule.resources) for (const v of rule.verbs) granted.add(`${v} ${r}`);
  return granted;
}

/** Calls the fake API server served that the driver made itself (ReplicaSets are its own controller's). */
export const driverCalls = (seen: Set<string>) => [...seen].filter((s) => !s.endsWith(" replicasets"));
