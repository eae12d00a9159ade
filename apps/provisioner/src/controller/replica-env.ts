import { handleBaseUrl, mintHandleToken, RUNTIME_ENV } from "@tessera/core";

export interface HandleSettings {
  /** TESSERA_HANDLE_SECRET: signs handle tokens; never given to replicas. */
  secret: string;
  /** TESSERA_GATEWAY_URL: where replicas reach other deployments of their application. */
  gatewayUrl: string;
}

/**
 * Extra environment of a replica so its handles can call sibling deployments through the
 * gateway: the handle base URL and a token scoped to its organisation and application.
 */
export function replicaHandleEnv(
  handles: HandleSettings | undefined,
  app: { orgId: string; orgSlug: string; applicationId: string; applicationName: string },
): Record<string, string> {
  if (!handles?.secret || !handles.gatewayUrl) return {};
  return {
    [RUNTIME_ENV.HANDLE_URL]: handleBaseUrl(handles.gatewayUrl, app.orgSlug, app.applicationName),
    [RUNTIME_ENV.HANDLE_TOKEN]: mintHandleToken(handles.secret, app.orgId, app.applicationId),
  };
}
