/**
 * Postgres calls on the data plane get a deadline: pg waits forever on a hung server, and a
 * reload, flush or key lookup that never settles would stall everything queued behind it.
 */
export const DB_CALL_TIMEOUT_MS = 10_000;

export function withTimeout<T>(promise: PromiseLike<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([Promise.resolve(promise), timeout]).finally(() => clearTimeout(timer));
}
