/**
 * Stable error codes shared by the API, the gateway and the runtimes. Clients match on
 * `code`, never on messages, so codes are append-only.
 */
export const ERROR_CODES = {
  BAD_REQUEST: 400,
  VALIDATION_FAILED: 400,
  UNAUTHENTICATED: 401,
  PAYMENT_REQUIRED: 402,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  RATE_LIMITED: 429,
  HANDLER_ERROR: 500,
  INTERNAL: 500,
  UPSTREAM_ERROR: 502,
  OVERLOADED: 503,
  DRAINING: 503,
  /** The deployment cannot serve now: parked by its operator (`numReplicas: 0`) or a backend is down. */
  UNAVAILABLE: 503,
  TIMEOUT: 504,
  ENV_UNSUPPORTED: 422,
  ENV_BUILD_FAILED: 422,
  /**
   * A replica refused, unprocessed, a request meant for another revision: the gateway's routing
   * table was stale and the address now belongs to another replica. The gateway resends it.
   */
  MISROUTED: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: unknown };
}

export class TesseraError extends Error {
  readonly code: ErrorCode;
  readonly details?: unknown;
  constructor(code: ErrorCode, message: string, details?: unknown) {
    super(message);
    this.name = "TesseraError";
    this.code = code;
    this.details = details;
  }
  get httpStatus(): number {
    return ERROR_CODES[this.code];
  }
  toBody(): ErrorBody {
    return errorBody(this.code, this.message, this.details);
  }
}

export function errorBody(code: ErrorCode, message: string, details?: unknown): ErrorBody {
  return details === undefined ? { error: { code, message } } : { error: { code, message, details } };
}

export function httpStatusOf(code: ErrorCode): number {
  return ERROR_CODES[code];
}
