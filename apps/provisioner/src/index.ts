export * from "./controller/index.js";
export {
  type DriverLogHooks,
  defaultDriverFactory,
  type Provisioner,
  type ProvisionerOptions,
  startProvisioner,
} from "./provisioner.js";
