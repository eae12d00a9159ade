export { type JobLogger, jobLogger } from "./job-log.js";
export { createRedisNotifier } from "./notifier.js";
export {
  BullJobQueue,
  type BullJobQueueOptions,
  bullJobId,
  controlQueue,
  defaultDedupeKey,
  type QueuedControlJob,
} from "./queue.js";
export {
  type ControlJobContext,
  type ControlJobHandler,
  type ControlWorker,
  type ControlWorkerOptions,
  createControlWorker,
  permanentFailure,
} from "./worker.js";
