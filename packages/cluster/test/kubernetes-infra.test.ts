import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { loadAllYaml, loadYaml } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { validateK8s } from "./support/k8s-validate.js";

const infra = fileURLToPath(new URL("../../../infra/", import.meta.url));

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return yamlFiles(p);
    return /\.ya?ml$/.test(name) ? [p] : [];
  });
}

const manifests = yamlFiles(join(infra, "k8s")).filter((p) => !p.endsWith("kustomization.yaml"));
const kustomizations = yamlFiles(join(infra, "k8s")).filter((p) => p.endsWith("kustomization.yaml"));

describe("infra manifests", () => {
  it.each(manifests.map((p) => [relative(infra, p), p]))(
    "%s: every document is a valid Kubernetes object",
    (_name, path) => {
      const docs = loadAllYaml(readFileSync(path, "utf8")).filter(Boolean);
      expect(docs.length).toBeGreaterThan(0);
      for (const doc of docs) validateK8s(doc);
    },
  );

  it("every kustomization lists files that exist and the control plane's pieces", () => {
    for (const k of kustomizations) {
      const doc = loadYaml<{ resources: string[] }>(readFileSync(k, "utf8"));
      for (const r of doc.resources) expect(() => statSync(join(k, "..", r)), `${k} -> ${r}`).not.toThrow();
    }
    const base = loadYaml<{ resources: string[] }>(
      readFileSync(join(infra, "k8s/base/kustomization.yaml"), "utf8"),
    );
    const all = base.resources.flatMap((r) => loadAllYaml(readFileSync(join(infra, "k8s/base", r), "utf8")));
    const kinds = all.map((d) => `${d.kind}/${d.metadata.name}`);
    for (const want of [
      "Deployment/tessera-console",
      "Deployment/tessera-gateway",
      "Deployment/tessera-provisioner",
      "Service/tessera-gateway",
      "HorizontalPodAutoscaler/tessera-gateway",
      "PodDisruptionBudget/tessera-gateway",
      "ClusterRole/tessera-provisioner",
      "ClusterRoleBinding/tessera-provisioner",
    ])
      expect(kinds).toContain(want);
    // Control-plane pods satisfy the restricted profile their namespace enforces.
    for (const d of all.filter((x) => x.kind === "Deployment")) {
      const spec = d.spec.template.spec;
      expect(spec.securityContext.runAsNonRoot, d.metadata.name).toBe(true);
      expect(spec.securityContext.seccompProfile.type).toBe("RuntimeDefault");
      for (const c of spec.containers) {
        expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
        expect(c.securityContext.capabilities.drop).toEqual(["ALL"]);
      }
    }
    // Tenant NetworkPolicies admit these labels: the gateway must carry them.
    const gw = all.find((d) => d.kind === "Deployment" && d.metadata.name === "tessera-gateway");
    expect(gw.spec.template.metadata.labels["app.kubernetes.io/name"]).toBe("tessera-gateway");
  });

  it("docker-compose.yml parses and runs the control plane against local Postgres and Redis", () => {
    const compose = loadYaml<{
      services: Record<string, { image?: string; build?: { dockerfile: string } }>;
    }>(readFileSync(join(infra, "docker-compose.yml"), "utf8"));
    expect(Object.keys(compose.services).sort()).toEqual([
      "console",
      "gateway",
      "migrate",
      "postgres",
      "provisioner",
      "redis",
    ]);
    for (const s of Object.values(compose.services))
      if (s.build) expect(() => statSync(join(infra, "..", s.build?.dockerfile as string))).not.toThrow();
  });
});
