import { createRestHandler } from "@tessera/api";
import { billing } from "@/server/billing";
import { db } from "@/server/db";
import { jobQueue, platformNotifier } from "@/server/jobs";
import { sessionIdOfRequest } from "@/server/session";

export const dynamic = "force-dynamic";

let handler: ((req: Request) => Promise<Response>) | undefined;

/** The operator REST API (see packages/api/src/rest.ts), built on first request like the tRPC one. */
function restHandler(req: Request): Promise<Response> {
  handler ??= createRestHandler({
    db: db(),
    jobs: jobQueue(),
    notify: platformNotifier(),
    billing: billing(),
    basePath: "/api/v1",
    sessionIdOf: sessionIdOfRequest,
  });
  return handler(req);
}

export { restHandler as GET, restHandler as PUT };
