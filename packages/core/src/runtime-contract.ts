/**
 * The contract between a cluster driver and a replica runtime (python or node). A driver starts
 * a runtime process with these environment variables and nothing of the platform's own
 * environment; the runtime serves the handler's routes at `/` and its own endpoints under `/-/`.
 */
export const RUNTIME_ENV = {
  /** Port to listen on (127.0.0.1 unless HOST says otherwise). */
  PORT: "TESSERA_PORT",
  HOST: "TESSERA_HOST",
  /** Directory holding the unpacked code bundle; the entry module is resolved inside it. */
  CODE_DIR: "TESSERA_CODE_DIR",
  /** `module:Class`, e.g. `handler:Dataframe` (python) or `handler.ts:Dataframe` (node). */
  ENTRY: "TESSERA_ENTRY",
  /** JSON object passed to the handler's constructor. */
  USER_CONFIG: "TESSERA_USER_CONFIG",
  DEPLOYMENT: "TESSERA_DEPLOYMENT",
  REVISION: "TESSERA_REVISION",
  REPLICA: "TESSERA_REPLICA",
  APPLICATION: "TESSERA_APPLICATION",
  MAX_BODY_BYTES: "TESSERA_MAX_BODY_BYTES",
  /** "1" to include tracebacks in error responses (off by default: they stay in the log). */
  EXPOSE_TRACEBACKS: "TESSERA_EXPOSE_TRACEBACKS",
  /** Seconds a draining replica waits for in-flight requests before exiting anyway. */
  DRAIN_TIMEOUT_S: "TESSERA_DRAIN_TIMEOUT_S",
  /** Base URL handles use to call other deployments of the same application (through the gateway). */
  HANDLE_URL: "TESSERA_HANDLE_URL",
  /** Credential for handle calls, scoped to the application's organisation. */
  HANDLE_TOKEN: "TESSERA_HANDLE_TOKEN",
} as const;

export const RUNTIME_PATHS = {
  /** Liveness: 200 while the process serves at all. */
  healthz: "/-/healthz",
  /** Readiness: 200 once the handler is constructed and its health() passes; 503 while draining. */
  ready: "/-/ready",
  /** JSON `{inFlight, total, draining}`. */
  stats: "/-/stats",
} as const;

/** Header carrying the request id through every hop (gateway, handles, logs). */
export const REQUEST_ID_HEADER = "x-request-id";
