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

/**
 * The revision id the gateway means to reach, set on every request it sends to a replica. A
 * gateway with a stale routing table can send a request to an address (a reused local port or
 * pod IP) that now belongs to another replica, possibly of another organisation; a runtime whose
 * TESSERA_REVISION differs refuses it unprocessed with 503 MISROUTED and the gateway sends it
 * elsewhere. A runtime started without a revision accepts every request. Not the client's pin
 * header (`x-tessera-revision`): clients never set this one, the gateway strips their copies.
 */
export const UPSTREAM_REVISION_HEADER = "x-tessera-upstream-revision";

/** What a driver knows about one replica, turned into the RUNTIME_ENV variables by `runtimeEnv`. */
export interface RuntimeEnvInput {
  port: number;
  host?: string;
  codeDir: string;
  entry: string;
  userConfig: Record<string, unknown>;
  deployment: string;
  revision: string;
  replica: string;
  application: string;
  maxBodyBytes: number;
  exposeTracebacks: boolean;
  drainTimeoutS: number;
  handleUrl?: string;
  handleToken?: string;
}

/** The exact environment contract of a replica (without PATH/HOME, which launchers add). */
export function runtimeEnv(input: RuntimeEnvInput): Record<string, string> {
  const env: Record<string, string> = {
    [RUNTIME_ENV.PORT]: String(input.port),
    [RUNTIME_ENV.HOST]: input.host ?? "127.0.0.1",
    [RUNTIME_ENV.CODE_DIR]: input.codeDir,
    [RUNTIME_ENV.ENTRY]: input.entry,
    [RUNTIME_ENV.USER_CONFIG]: JSON.stringify(input.userConfig),
    [RUNTIME_ENV.DEPLOYMENT]: input.deployment,
    [RUNTIME_ENV.REVISION]: input.revision,
    [RUNTIME_ENV.REPLICA]: input.replica,
    [RUNTIME_ENV.APPLICATION]: input.application,
    [RUNTIME_ENV.MAX_BODY_BYTES]: String(input.maxBodyBytes),
    [RUNTIME_ENV.EXPOSE_TRACEBACKS]: input.exposeTracebacks ? "1" : "0",
    [RUNTIME_ENV.DRAIN_TIMEOUT_S]: String(input.drainTimeoutS),
  };
  if (input.handleUrl !== undefined) env[RUNTIME_ENV.HANDLE_URL] = input.handleUrl;
  if (input.handleToken !== undefined) env[RUNTIME_ENV.HANDLE_TOKEN] = input.handleToken;
  return env;
}
