import { replicaHandleEnv as handleEnv } from "@tessera/core";

export interface HandleSettings {
  /** TESSERA_HANDLE_SECRET: signs handle tokens; never given to replicas. */
  secret: string;
  /** TESSERA_GATEWAY_URL: where replicas reach other deployments of their application. */
  gatewayUrl: string;
}

/**
 * Extra environment of a replica so its handles can call sibling deployments through the
 * gateway (see `replicaHandleEnv` in @tessera/core); none when handles are not configured.
 */
export function replicaHandleEnv(
  handles: HandleSettings | undefined,
  app: { orgId: string; orgSlug: string; applicationId: string; applicationName: string },
): Record<string, string> {
  if (!handles?.secret || !handles.gatewayUrl) return {};
  return handleEnv({ ...handles, ...app, appName: app.applicationName });
}
