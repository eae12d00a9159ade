import { createCaller } from "@tessera/api";
import { NextResponse } from "next/server";
import { apiServices } from "@/server/api-services";
import { sessionIdOfRequest } from "@/server/session";

export const dynamic = "force-dynamic";

const MAX_RESPONSE_CHARS = 100_000;

/**
 * The deployment page's "try it" panel: the browser cannot call the gateway itself (another
 * origin), so the console forwards one request there with the key the user typed, after checking
 * the user can see the deployment, and answers status, latency and body.
 */
export async function POST(req: Request) {
  const sessionId = await sessionIdOfRequest(req);
  if (!sessionId)
    return NextResponse.json(
      { error: { code: "UNAUTHENTICATED", message: "sign in first" } },
      { status: 401 },
    );
  let input: {
    orgId?: unknown;
    deploymentId?: unknown;
    apiKey?: unknown;
    method?: unknown;
    path?: unknown;
    body?: unknown;
  };
  try {
    input = await req.json();
  } catch {
    return bad("the request body must be JSON");
  }
  const { orgId, deploymentId, apiKey, method, path, body } = input;
  if (typeof orgId !== "string" || typeof deploymentId !== "string")
    return bad("orgId and deploymentId are required");
  if (typeof apiKey !== "string" || !apiKey.startsWith("tsk_"))
    return bad("paste an API key (tsk_…)", "apiKey");
  if (method !== "GET" && method !== "POST") return bad("method must be GET or POST", "method");
  if (typeof path !== "string" || !/^[A-Za-z0-9_\-./]*$/.test(path) || path.includes(".."))
    return bad("the route may contain letters, digits, '-', '_', '.' and '/'", "path");
  if (body !== undefined && typeof body !== "string") return bad("body must be text");

  const api = await createCaller({ ...apiServices(), auth: { sessionId } });
  let target: URL;
  try {
    const [org, dep] = await Promise.all([
      api.orgs.get({ orgId }),
      api.deployments.get({ orgId, deploymentId }),
    ]);
    const app = await api.applications.get({ orgId, applicationId: dep.applicationId });
    const gateway = process.env.TESSERA_GATEWAY_URL ?? "http://127.0.0.1:8080";
    target = new URL(`/v1/${org.slug}/${app.name}/${path.replace(/^\/+/, "")}`, gateway);
  } catch {
    return NextResponse.json(
      { error: { code: "NOT_FOUND", message: "deployment not found" } },
      { status: 404 },
    );
  }

  const started = performance.now();
  try {
    const res = await fetch(target, {
      method,
      headers: {
        authorization: `Bearer ${apiKey}`,
        ...(method === "POST" ? { "content-type": "application/json" } : {}),
      },
      body: method === "POST" ? (body ?? "") : undefined,
      signal: AbortSignal.timeout(60_000),
    });
    const text = await res.text();
    const latencyMs = Math.round((performance.now() - started) * 10) / 10;
    return NextResponse.json({
      url: target.toString(),
      status: res.status,
      latencyMs,
      contentType: res.headers.get("content-type"),
      body: text.length > MAX_RESPONSE_CHARS ? `${text.slice(0, MAX_RESPONSE_CHARS)}\n… (truncated)` : text,
    });
  } catch (err) {
    return NextResponse.json({
      url: target.toString(),
      status: 0,
      latencyMs: Math.round(performance.now() - started),
      contentType: null,
      body: `the gateway did not answer: ${(err as Error).message}`,
    });
  }
}

function bad(message: string, field?: string) {
  return NextResponse.json(
    { error: { code: "VALIDATION_FAILED", message, fieldErrors: field ? { [field]: message } : {} } },
    { status: 400 },
  );
}
