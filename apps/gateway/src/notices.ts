import { redisKeys } from "@tessera/core";
import { Redis } from "ioredis";
import type { Log } from "./log.js";

export interface NoticeHandlers {
  /** A deployment id, or `*`. */
  routingChanged(deploymentId: string): void;
  /** An API key prefix, or `*`. */
  apiKeysChanged(prefix: string): void;
  /** The subscription (re)connected: notices may have been missed meanwhile. */
  resubscribed(): void;
}

/**
 * Subscribes to the control plane's notices. ioredis resubscribes by itself after a reconnect;
 * `resubscribed` then lets the gateway reload, since notices sent while it was away are gone.
 */
export function subscribeNotices(
  redisUrl: string,
  prefix: string,
  handlers: NoticeHandlers,
  log: Log,
): { ready: Promise<void>; close(): Promise<void> } {
  const keys = redisKeys(prefix);
  // disableClientInfo: CLIENT SETINFO breaks the connection on this Redis (ioredis#2037).
  const subscriber = new Redis(redisUrl, { disableClientInfo: true, maxRetriesPerRequest: null });
  let connectedBefore = false;
  let warned = false;
  subscriber.on("error", (err) => {
    if (!warned)
      log("warn", "redis subscriber error; serving with the last known state", { err: String(err) });
    warned = true;
  });
  subscriber.on("ready", () => {
    warned = false;
    if (connectedBefore) handlers.resubscribed();
    connectedBefore = true;
  });
  subscriber.on("message", (channel: string, message: string) => {
    if (channel === keys.routingChanged) handlers.routingChanged(message);
    else if (channel === keys.apiKeysChanged) handlers.apiKeysChanged(message);
  });
  const ready = subscriber.subscribe(keys.routingChanged, keys.apiKeysChanged).then(() => undefined);
  ready.catch((err) => log("warn", "could not subscribe to notices yet", { err: String(err) }));
  return {
    ready,
    async close() {
      subscriber.disconnect();
    },
  };
}
