/** What the console shows for a failed API call: the stable code, a message and per-field errors. */
export interface ShownError {
  code: string;
  message: string;
  fieldErrors: Record<string, string>;
}

/** Reads the `data` the API's error formatter attaches (`code`, `fieldErrors`) from a tRPC client error. */
export function shownError(err: unknown): ShownError | null {
  if (!err) return null;
  const e = err as {
    message?: string;
    data?: { code?: string; fieldErrors?: Record<string, string> | null };
  };
  return {
    code: e.data?.code ?? "INTERNAL",
    message: e.message ?? String(err),
    fieldErrors: e.data?.fieldErrors ?? {},
  };
}

/** Field errors whose path starts with `prefix.` with the prefix removed (e.g. `config.` on deploys). */
export function fieldErrorsUnder(errors: Record<string, string>, prefix: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(errors))
    if (k.startsWith(`${prefix}.`)) out[k.slice(prefix.length + 1)] = v;
  return out;
}
