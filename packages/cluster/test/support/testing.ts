/**
 * Test helpers other packages' tests use to run a kubernetes-driver cluster without Kubernetes
 * (`@tessera/cluster/testing`): the in-memory API server and the schema validator.
 */
export { FakeApiServer } from "./fake-apiserver.js";
export { validateK8s } from "./k8s-validate.js";
export { driverCalls, provisionerRbacGrants } from "./rbac.js";
