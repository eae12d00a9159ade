import { type Database, jobLogs } from "@tessera/db";

export type JobLogger = (line: string) => Promise<void>;

/**
 * Appends lines to a job's `job_logs` as the work happens, so the console can follow progress.
 * A log write that fails is reported on stderr and never fails the job itself.
 */
export function jobLogger(db: Database, jobId: string): JobLogger {
  return async (line) => {
    try {
      await db.insert(jobLogs).values({ jobId, line: line.slice(0, 10_000) });
    } catch (err) {
      console.error(JSON.stringify({ level: "warn", msg: "job log line lost", jobId, err: String(err) }));
    }
  };
}
