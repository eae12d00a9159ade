import type { JobQueue, PlatformNotifier, QueueMonitor } from "@tessera/core";
import type { Database } from "@tessera/db";
import { fetchRequestHandler } from "@trpc/server/adapters/fetch";
import { type AuthInput, type BillingOptions, createContext } from "./context.js";
import { describeError } from "./errors.js";
import { appRouter } from "./router.js";

export interface ApiHandlerOptions {
  db: Database;
  jobs: JobQueue;
  /** Publishes notices for gateways (e.g. revoked API keys); optional in tests. */
  notify?: PlatformNotifier;
  /** Stripe and plan enforcement (`billingOptionsFromEnv`); without it billing is "not configured". */
  billing?: BillingOptions;
  /** Depths of the provisioner's queues for `admin.queues` (`bullQueueMonitor` of @tessera/billing). */
  queues?: QueueMonitor | null;
  /** Path the router is mounted at, e.g. `/api/trpc`. */
  endpoint: string;
  /**
   * The session id of a browser request (the console decodes its next-auth JWT here), or null.
   * Requests with `Authorization: Bearer tsk_...` authenticate by API key instead.
   */
  sessionIdOf?: (req: Request) => Promise<string | null> | string | null;
  /** Called for INTERNAL errors only (the client sees a generic message): log them. */
  onInternalError?: (err: unknown, path: string | undefined) => void;
}

/** A fetch-API handler (Next.js route handlers, any undici server) serving the tRPC router. */
export function createApiHandler(opts: ApiHandlerOptions): (req: Request) => Promise<Response> {
  return (req) =>
    fetchRequestHandler({
      endpoint: opts.endpoint,
      req,
      router: appRouter,
      async createContext() {
        const authorization = req.headers.get("authorization");
        let auth: AuthInput = null;
        if (authorization) auth = { authorization };
        else {
          const sessionId = await opts.sessionIdOf?.(req);
          if (sessionId) auth = { sessionId };
        }
        return createContext({
          db: opts.db,
          jobs: opts.jobs,
          auth,
          notify: opts.notify,
          billing: opts.billing,
          queues: opts.queues,
        });
      },
      onError({ error, path }) {
        if (describeError(error).code === "INTERNAL") {
          (
            opts.onInternalError ??
            ((e, p) =>
              console.error(
                JSON.stringify({
                  level: "error",
                  msg: "api internal error",
                  path: p,
                  err: String((e as Error)?.stack ?? e),
                }),
              ))
          )(error.cause ?? error, path);
        }
      },
    });
}
