import { createApiHandler } from "@tessera/api";
import { billing } from "@/server/billing";
import { db } from "@/server/db";
import { jobQueue, platformNotifier } from "@/server/jobs";
import { queueMonitor } from "@/server/queues";
import { sessionIdOfRequest } from "@/server/session";

export const dynamic = "force-dynamic";

let handler: ((req: Request) => Promise<Response>) | undefined;

/** Built on first request, not at import: `next build` evaluates routes without a database. */
function apiHandler(req: Request): Promise<Response> {
  handler ??= createApiHandler({
    db: db(),
    jobs: jobQueue(),
    notify: platformNotifier(),
    endpoint: "/api/trpc",
    sessionIdOf: sessionIdOfRequest,
    billing: billing(),
    queues: queueMonitor(),
  });
  return handler(req);
}

export { apiHandler as GET, apiHandler as POST };
