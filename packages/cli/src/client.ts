import type { AppRouter } from "@tessera/api";
import { createTRPCClient, httpLink, TRPCClientError } from "@trpc/client";

export interface ClientSettings {
  /** Console / API base URL, e.g. http://127.0.0.1:3000 (the tRPC router is at /api/trpc). */
  apiUrl: string;
  /** An API key of the organisation (`tsk_...`): the CLI acts as that organisation's admin. */
  apiKey: string;
  /** Gateway base URL, printed in endpoint URLs. */
  gatewayUrl: string;
}

export type ApiClient = ReturnType<typeof createApiClient>;

export function createApiClient(s: Pick<ClientSettings, "apiUrl" | "apiKey">) {
  return createTRPCClient<AppRouter>({
    links: [
      httpLink({
        url: `${s.apiUrl.replace(/\/+$/, "")}/api/trpc`,
        headers: () => ({ authorization: `Bearer ${s.apiKey}` }),
      }),
    ],
  });
}

export function settingsFromEnv(env: NodeJS.ProcessEnv = process.env): ClientSettings {
  const apiKey = env.TESSERA_API_KEY ?? "";
  if (!apiKey)
    throw new CliError("set TESSERA_API_KEY to an API key of your organisation (console → API keys)");
  return {
    apiUrl: env.TESSERA_API_URL ?? "http://127.0.0.1:3000",
    apiKey,
    gatewayUrl: env.TESSERA_GATEWAY_URL ?? "http://127.0.0.1:8080",
  };
}

/** An error meant for the user: printed without a stack, exit code 1. */
export class CliError extends Error {}

/** The API's stable error code and field errors, readable for a terminal. */
export function describeApiError(err: unknown): string {
  if (err instanceof TRPCClientError) {
    const data = (err.data ?? {}) as { code?: string; fieldErrors?: Record<string, string> | null };
    const fields = Object.entries(data.fieldErrors ?? {}).map(([k, v]) => `\n  ${k}: ${v}`);
    return `${data.code ?? "ERROR"}: ${err.message}${fields.join("")}`;
  }
  return err instanceof Error ? err.message : String(err);
}
