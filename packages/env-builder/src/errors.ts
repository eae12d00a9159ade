import { TesseraError } from "@tessera/core";

export type EnvironmentErrorCode = "ENV_UNSUPPORTED" | "ENV_BUILD_FAILED" | "VALIDATION_FAILED";

export interface EnvironmentErrorDetails {
  /** The environment's hash, when the spec got far enough to have one. */
  hash?: string;
  /** One short sentence for the console ("pip install exited with code 1"). */
  reason: string;
  /** The last lines of the build log (empty when nothing was built). */
  logTail: string[];
  /** The full build log, kept in the environment's directory after a failure. */
  logFile?: string;
}

/**
 * Why an environment could not be made. `ENV_UNSUPPORTED`: this cluster cannot build that spec
 * (nothing was attempted); `ENV_BUILD_FAILED`: the build ran and failed; `VALIDATION_FAILED`: the
 * spec asks for something a tenant may not (local paths, installer options).
 */
export class EnvironmentError extends TesseraError {
  declare readonly code: EnvironmentErrorCode;
  declare readonly details: EnvironmentErrorDetails;
  constructor(code: EnvironmentErrorCode, message: string, details: Partial<EnvironmentErrorDetails> = {}) {
    super(code, message, { reason: details.reason ?? message, logTail: details.logTail ?? [], ...details });
    this.name = "EnvironmentError";
  }
}

export function unsupported(message: string, hash?: string): EnvironmentError {
  return new EnvironmentError("ENV_UNSUPPORTED", message, { hash });
}

export function invalidSpec(message: string, hash?: string): EnvironmentError {
  return new EnvironmentError("VALIDATION_FAILED", message, { hash });
}
