import { AsyncLocalStorage } from "node:async_hooks";

/** The request a handler is serving: handle calls propagate its id and stop when it is cancelled. */
export interface CallContext {
  requestId: string;
  /** Aborted when the client disconnects before the response is complete. */
  signal: AbortSignal;
}

// The runtime server and the handler bundle each carry their own copy of this module; the store
// lives on a global symbol so both copies share it.
const STORE_KEY = Symbol.for("tessera.callContext");

export function callContextStore(): AsyncLocalStorage<CallContext> {
  const holder = globalThis as { [STORE_KEY]?: AsyncLocalStorage<CallContext> };
  holder[STORE_KEY] ??= new AsyncLocalStorage<CallContext>();
  return holder[STORE_KEY];
}

export function currentCall(): CallContext | undefined {
  return callContextStore().getStore();
}

/** The id of the request being served, or undefined outside a request (constructors, tests). */
export function currentRequestId(): string | undefined {
  return currentCall()?.requestId;
}
