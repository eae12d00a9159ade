import * as apps from "kubernetes-models/apps/v1";
import * as autoscaling from "kubernetes-models/autoscaling/v2";
import * as networking from "kubernetes-models/networking.k8s.io/v1";
import * as policy from "kubernetes-models/policy/v1";
import * as rbac from "kubernetes-models/rbac.authorization.k8s.io/v1";
import * as core from "kubernetes-models/v1";

const modules: Record<string, Record<string, unknown>> = {
  v1: core,
  "apps/v1": apps,
  "autoscaling/v2": autoscaling,
  "networking.k8s.io/v1": networking,
  "policy/v1": policy,
  "rbac.authorization.k8s.io/v1": rbac,
};

/** Validate a plain object against the Kubernetes OpenAPI schema of its apiVersion/kind; throws with the schema errors. */
export function validateK8s(obj: { apiVersion?: unknown; kind?: unknown }): void {
  const mod = modules[String(obj.apiVersion)];
  const Model = mod?.[String(obj.kind)] as (new (o: unknown) => { validate(): void }) | undefined;
  if (!Model) throw new Error(`no schema for ${String(obj.apiVersion)} ${String(obj.kind)}`);
  new Model(obj).validate();
}
