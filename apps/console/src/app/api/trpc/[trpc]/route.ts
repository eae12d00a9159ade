import { createApiHandler } from "@tessera/api";
import { apiServices } from "@/server/api-services";
import { sessionIdOfRequest } from "@/server/session";

export const dynamic = "force-dynamic";

let handler: ((req: Request) => Promise<Response>) | undefined;

/** Built on first request, not at import: `next build` evaluates routes without a database. */
function apiHandler(req: Request): Promise<Response> {
  handler ??= createApiHandler({ ...apiServices(), endpoint: "/api/trpc", sessionIdOf: sessionIdOfRequest });
  return handler(req);
}

export { apiHandler as GET, apiHandler as POST };
