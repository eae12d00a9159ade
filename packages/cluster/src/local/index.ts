export { LocalDriver, type LocalDriverOptions } from "./driver.js";
export {
  type ParsedReplicaLogLine,
  parseReplicaLogLine,
  type ReplicaLogLevel,
  type ReplicaLogLine,
  type ReplicaLogStream,
} from "./logs.js";
export type { ProcessIdentity } from "./processes.js";
export { DEFAULT_LOCAL_SETTINGS, type LocalDriverSettings, localDriverSettings } from "./settings.js";
