import { TesseraError } from "@tessera/core";
import { type CreateContextOptions, createContext } from "./context.js";
import { toHttpError } from "./errors.js";
import { createAppCaller } from "./router.js";

/**
 * The operator REST API, for scripts and tools that do not speak tRPC (the seeds'
 * `PUT /model/{name}/deployment {num_replicas}`). Every route is a thin translation onto the tRPC
 * procedures, so authentication (API key or session), roles, tenant checks, validation, audit and
 * error codes are exactly the tRPC API's.
 *
 *   GET /orgs/{org}/applications/{app}/deployments/{name}                  state, scaling, revisions
 *   PUT /orgs/{org}/applications/{app}/deployments/{name}/scaling          {numReplicas} | {autoscaling}
 *   GET /orgs/{org}/applications/{app}/deployments/{name}/scaling-events   scaling decisions
 *   GET /orgs/{org}/applications/{app}/deployments/{name}/replicas         live replicas
 */
export interface RestHandlerOptions extends Omit<CreateContextOptions, "auth"> {
  /** Path the API is mounted at, e.g. `/api/v1`. */
  basePath: string;
  sessionIdOf?: (req: Request) => Promise<string | null> | string | null;
}

const DEPLOYMENT_PATH = /^\/orgs\/([^/]+)\/applications\/([^/]+)\/deployments\/([^/]+)(?:\/([a-z-]+))?\/?$/;

export function createRestHandler(opts: RestHandlerOptions): (req: Request) => Promise<Response> {
  return async (req) => {
    try {
      const path = new URL(req.url).pathname;
      if (!path.startsWith(opts.basePath)) throw new TesseraError("NOT_FOUND", "no such route");
      const match = DEPLOYMENT_PATH.exec(path.slice(opts.basePath.length));
      if (!match) throw new TesseraError("NOT_FOUND", "no such route");
      const [, orgSlug, appName, deploymentName, action] = match.map((p) => (p ? decodeURIComponent(p) : p));
      const authorization = req.headers.get("authorization");
      const sessionId = authorization ? null : await opts.sessionIdOf?.(req);
      const api = createAppCaller(
        await createContext({
          ...opts,
          auth: authorization ? { authorization } : sessionId ? { sessionId } : null,
        }),
      );
      const org = await orgOf(api, orgSlug!);
      const app = (await api.applications.list({ orgId: org.id })).find((a) => a.name === appName);
      if (!app) throw new TesseraError("NOT_FOUND", `no application ${appName} in ${orgSlug}`);
      const dep = (await api.deployments.list({ orgId: org.id, applicationId: app.id })).find(
        (d) => d.name === deploymentName,
      );
      if (!dep) throw new TesseraError("NOT_FOUND", `no deployment ${deploymentName} in ${appName}`);
      const ids = { orgId: org.id, deploymentId: dep.id };

      const route = `${req.method} ${action ?? ""}`;
      switch (route) {
        case "GET ":
          return json(200, await api.deployments.get(ids));
        case "PUT scaling": {
          const body = await readJson(req);
          return json(200, await api.deployments.updateScaling({ ...ids, ...scalingBody(body) }));
        }
        case "GET scaling-events":
          return json(200, await api.deployments.scalingEvents(ids));
        case "GET replicas":
          return json(200, await api.deployments.replicas(ids));
        default:
          throw new TesseraError(action ? "NOT_FOUND" : "BAD_REQUEST", `${req.method} is not served here`);
      }
    } catch (err) {
      const { status, body } = toHttpError(err);
      return json(status, body);
    }
  };
}

/** The caller's organisation named by `slug`: an API key knows only its own, a user their memberships. */
async function orgOf(api: ReturnType<typeof createAppCaller>, slug: string): Promise<{ id: string }> {
  const me = await api.auth.whoami();
  if (me.kind === "anonymous")
    throw new TesseraError("UNAUTHENTICATED", "send Authorization: Bearer <API key>");
  const org =
    me.kind === "apiKey"
      ? me.org?.slug === slug
        ? me.org
        : undefined
      : (await api.orgs.list()).find((o) => o.slug === slug);
  if (!org) throw new TesseraError("NOT_FOUND", `no organisation ${slug} of yours`);
  return org;
}

/** Accepts the seeds' snake_case (`num_replicas`) as well as the API's own names. */
function scalingBody(body: unknown): { numReplicas?: unknown; autoscaling?: unknown } {
  if (!body || typeof body !== "object" || Array.isArray(body))
    throw new TesseraError("VALIDATION_FAILED", "the body must be a JSON object", {
      fieldErrors: { body: "must be an object with numReplicas or autoscaling" },
    });
  const b = body as Record<string, unknown>;
  const numReplicas = b.numReplicas ?? b.num_replicas;
  const autoscaling = b.autoscaling ?? b.autoscaling_config;
  return {
    ...(numReplicas !== undefined ? { numReplicas } : {}),
    ...(autoscaling !== undefined ? { autoscaling } : {}),
  };
}

async function readJson(req: Request): Promise<unknown> {
  const text = await req.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new TesseraError("BAD_REQUEST", "the body is not valid JSON");
  }
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}
