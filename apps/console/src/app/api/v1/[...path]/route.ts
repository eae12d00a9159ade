import { createRestHandler } from "@tessera/api";
import { apiServices } from "@/server/api-services";
import { sessionIdOfRequest } from "@/server/session";

export const dynamic = "force-dynamic";

let handler: ((req: Request) => Promise<Response>) | undefined;

/** The operator REST API (see packages/api/src/rest.ts), built on first request like the tRPC one. */
function restHandler(req: Request): Promise<Response> {
  handler ??= createRestHandler({
    ...apiServices(),
    basePath: "/api/v1",
    sessionIdOf: sessionIdOfRequest,
  });
  return handler(req);
}

export { restHandler as GET, restHandler as PUT };
