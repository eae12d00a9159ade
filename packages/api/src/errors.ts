import { type ErrorCode, httpStatusOf, TesseraError } from "@tessera/core";
import { TRPCError } from "@trpc/server";
import { ZodError } from "zod";

type TrpcCode = TRPCError["code"];

const TRPC_CODE_FOR: Partial<Record<ErrorCode, TrpcCode>> = {
  BAD_REQUEST: "BAD_REQUEST",
  VALIDATION_FAILED: "BAD_REQUEST",
  UNAUTHENTICATED: "UNAUTHORIZED",
  PAYMENT_REQUIRED: "PAYMENT_REQUIRED",
  FORBIDDEN: "FORBIDDEN",
  NOT_FOUND: "NOT_FOUND",
  CONFLICT: "CONFLICT",
  PAYLOAD_TOO_LARGE: "PAYLOAD_TOO_LARGE",
  RATE_LIMITED: "TOO_MANY_REQUESTS",
  TIMEOUT: "TIMEOUT",
  ENV_UNSUPPORTED: "UNPROCESSABLE_CONTENT",
  ENV_BUILD_FAILED: "UNPROCESSABLE_CONTENT",
  OVERLOADED: "SERVICE_UNAVAILABLE",
  DRAINING: "SERVICE_UNAVAILABLE",
  UPSTREAM_ERROR: "BAD_GATEWAY",
};

const TESSERA_CODE_FOR: Partial<Record<TrpcCode, ErrorCode>> = {
  BAD_REQUEST: "BAD_REQUEST",
  PARSE_ERROR: "BAD_REQUEST",
  UNAUTHORIZED: "UNAUTHENTICATED",
  PAYMENT_REQUIRED: "PAYMENT_REQUIRED",
  FORBIDDEN: "FORBIDDEN",
  NOT_FOUND: "NOT_FOUND",
  METHOD_NOT_SUPPORTED: "BAD_REQUEST",
  CONFLICT: "CONFLICT",
  PAYLOAD_TOO_LARGE: "PAYLOAD_TOO_LARGE",
  TOO_MANY_REQUESTS: "RATE_LIMITED",
  TIMEOUT: "TIMEOUT",
  UNSUPPORTED_MEDIA_TYPE: "BAD_REQUEST",
};

/**
 * Throwable carrying a Tessera error code. It is a TRPCError (so tRPC picks the right HTTP status)
 * whose cause is the TesseraError that `describeError` reads the stable code and details from.
 */
export function apiError(code: ErrorCode, message: string, details?: unknown): TRPCError {
  return new TRPCError({
    code: TRPC_CODE_FOR[code] ?? "INTERNAL_SERVER_ERROR",
    message,
    cause: new TesseraError(code, message, details),
  });
}

type Issue = { path: PropertyKey[]; message: string; code?: string; issues?: Issue[] };

/**
 * `path -> first message`, like core's `fieldErrors`, but descending into zod 4's nested issues
 * (an invalid record key reports "Invalid key in record" with the real reason inside), so a bad
 * file path in a code bundle says why.
 */
export function issueFieldErrors(error: { issues: readonly Issue[] }): Record<string, string> {
  const out: Record<string, string> = {};
  const visit = (issues: readonly Issue[], base: PropertyKey[]) => {
    for (const issue of issues) {
      const path = [...base, ...issue.path];
      if (issue.code === "invalid_key" && issue.issues?.length) {
        visit(issue.issues, path);
        continue;
      }
      const key = path.map(String).join(".") || "_";
      if (!(key in out)) out[key] = issue.message;
    }
  };
  visit(error.issues, []);
  return out;
}

/** A zod failure reported as VALIDATION_FAILED with `path -> message`; `prefix` roots the paths. */
export function validationError(error: ZodError, prefix?: string): TRPCError {
  const fields = issueFieldErrors(error);
  const rooted = prefix
    ? Object.fromEntries(Object.entries(fields).map(([k, v]) => [k === "_" ? prefix : `${prefix}.${k}`, v]))
    : fields;
  const first = Object.entries(rooted)[0];
  const message = first ? `invalid input: ${first[0]}: ${first[1]}` : "invalid input";
  return apiError("VALIDATION_FAILED", message, { fieldErrors: rooted });
}

export interface DescribedError {
  code: ErrorCode;
  httpStatus: number;
  message: string;
  fieldErrors?: Record<string, string>;
}

/**
 * The one mapping from anything a procedure throws to the stable wire shape: used by the tRPC
 * errorFormatter and by non-tRPC callers (REST wrappers, the CLI) that want `{code, message}`.
 * Unknown failures become INTERNAL with a generic message so database or driver details never leak.
 */
export function describeError(err: unknown): DescribedError {
  const cause = err instanceof TRPCError ? err.cause : err;
  if (cause instanceof TesseraError) {
    const details = cause.details as { fieldErrors?: Record<string, string> } | undefined;
    return {
      code: cause.code,
      httpStatus: httpStatusOf(cause.code),
      message: cause.message,
      ...(details?.fieldErrors ? { fieldErrors: details.fieldErrors } : {}),
    };
  }
  if (cause instanceof ZodError) {
    const fields = issueFieldErrors(cause);
    const first = Object.entries(fields)[0];
    return {
      code: "VALIDATION_FAILED",
      httpStatus: httpStatusOf("VALIDATION_FAILED"),
      message: first ? `invalid input: ${first[0]}: ${first[1]}` : "invalid input",
      fieldErrors: fields,
    };
  }
  if (err instanceof TRPCError) {
    const code = TESSERA_CODE_FOR[err.code];
    if (code) return { code, httpStatus: httpStatusOf(code), message: err.message };
  }
  return { code: "INTERNAL", httpStatus: 500, message: "internal error" };
}

/** `{error: {code, message, details?}}` as the gateway and REST surfaces answer. */
export function toHttpError(err: unknown): {
  status: number;
  body: { error: { code: ErrorCode; message: string; details?: unknown } };
} {
  const d = describeError(err);
  return {
    status: d.httpStatus,
    body: {
      error: {
        code: d.code,
        message: d.message,
        ...(d.fieldErrors ? { details: { fieldErrors: d.fieldErrors } } : {}),
      },
    },
  };
}

/**
 * The constraint a Postgres unique violation hit (drizzle wraps the driver error in `cause`), or
 * null when `err` is something else: turns races on unique indexes into CONFLICT or a retry.
 */
export function uniqueViolation(err: unknown): string | null {
  let e: unknown = err;
  for (let i = 0; i < 4 && e; i++) {
    const pgErr = e as { code?: string; constraint?: string };
    if (pgErr.code === "23505") return pgErr.constraint ?? "unknown";
    e = (e as { cause?: unknown }).cause;
  }
  return null;
}

export function isUniqueViolation(err: unknown): boolean {
  return uniqueViolation(err) !== null;
}
