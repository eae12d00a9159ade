export { type ClusterRow, Controller, type ControllerOptions } from "./controller.js";
export { type EnvironmentBuildState, EnvironmentBuilds } from "./environment-builds.js";
export { controlJobHandler, type JobHandlerOptions } from "./job-handlers.js";
export { type HandleSettings, replicaHandleEnv } from "./replica-env.js";
export { ReplicaLogSink } from "./replica-log-sink.js";
