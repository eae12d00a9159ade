export * from "./controller/index.js";
export {
  defaultDriverFactory,
  type Provisioner,
  type ProvisionerOptions,
  startProvisioner,
} from "./provisioner.js";
