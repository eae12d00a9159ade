export { LocalDriver, type LocalDriverOptions } from "./driver.js";
export {
  type ParsedReplicaLogLine,
  parseReplicaLogLine,
  type ReplicaLogLevel,
  type ReplicaLogLine,
  type ReplicaLogStream,
} from "./logs.js";
export { isSameProcessAlive, type ProcessIdentity, processIdentity } from "./processes.js";
export { DEFAULT_LOCAL_SETTINGS, type LocalDriverSettings, localDriverSettings } from "./settings.js";
