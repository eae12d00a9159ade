export type { LogListener } from "./build-log.js";
export {
  type EnsuredEnvironment,
  EnvironmentBuilder,
  type EnvironmentBuilderOptions,
  type EnvironmentRequest,
  type EnvironmentState,
} from "./builder.js";
export { EnvironmentError, type EnvironmentErrorCode, type EnvironmentErrorDetails } from "./errors.js";
export { builderOptionsFromEnv, splitArguments } from "./options.js";
