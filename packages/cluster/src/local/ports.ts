import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { TesseraError } from "@tessera/core";
import type { LocalDriverSettings } from "./settings.js";

export interface PortRange {
  from: number;
  to: number;
}

type SlotSettings = Pick<
  LocalDriverSettings,
  "dataDir" | "portRangeFrom" | "portRangeTo" | "portsPerCluster"
>;

/**
 * Claims a slice of the port range for a cluster. Slots are files created with O_EXCL under
 * `<dataDir>/port-slots`, so two drivers sharing a data dir never hand out the same slice; a
 * cluster that already holds a slot gets it back.
 */
export function claimPortSlot(settings: SlotSettings, clusterId: string): { slot: number; range: PortRange } {
  const dir = join(settings.dataDir, "port-slots");
  mkdirSync(dir, { recursive: true });
  const slots = Math.floor((settings.portRangeTo - settings.portRangeFrom + 1) / settings.portsPerCluster);
  for (let slot = 0; slot < slots; slot++) {
    const file = join(dir, String(slot));
    try {
      writeFileSync(file, clusterId, { flag: "wx" });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      if (readSlotOwner(file) !== clusterId) continue;
    }
    const from = settings.portRangeFrom + slot * settings.portsPerCluster;
    return { slot, range: { from, to: from + settings.portsPerCluster - 1 } };
  }
  throw new TesseraError(
    "OVERLOADED",
    `no free port range left for cluster ${clusterId}: all ${slots} slices of ${settings.portRangeFrom}-${settings.portRangeTo} are taken`,
  );
}

export function releasePortSlot(dataDir: string, slot: number, clusterId: string): void {
  const file = join(dataDir, "port-slots", String(slot));
  if (readSlotOwner(file) === clusterId) rmSync(file, { force: true });
}

function readSlotOwner(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8").trim();
  } catch {
    return undefined;
  }
}

/**
 * A server that only holds a port for a moment. Anyone who connects meanwhile (a router with a
 * stale table still sending to a replica that used the port) is turned away at once: closing
 * waits for open connections, so one stranger kept open would stall the check, and with it the
 * replica start that asked, until the stranger gave up.
 */
export function portHolder(): Server {
  return createServer((socket) => socket.destroy());
}

/** Whether nothing listens on 127.0.0.1:port right now (checked by binding it briefly). */
export function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = portHolder();
    server.once("error", () => resolve(false));
    server.listen({ port, host: "127.0.0.1", exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/**
 * A port of `range` that no replica of the cluster holds and nothing else listens on. `preferred`
 * (the port a restarting replica had) is kept when still free, so its address survives restarts.
 * Otherwise the search starts at `startAt` and wraps: ports are handed out round-robin, so a port
 * just given up is not reused at once (a router with a stale table would reach the wrong replica).
 */
export async function pickPort(
  range: PortRange,
  taken: Set<number>,
  preferred?: number,
  startAt: number = range.from,
): Promise<number> {
  if (preferred !== undefined && (await portIsFree(preferred))) return preferred;
  const size = range.to - range.from + 1;
  const offset = (((startAt - range.from) % size) + size) % size;
  for (let i = 0; i < size; i++) {
    const port = range.from + ((offset + i) % size);
    if (taken.has(port)) continue;
    if (await portIsFree(port)) return port;
  }
  throw new TesseraError("OVERLOADED", `no free port left in the cluster's range ${range.from}-${range.to}`);
}
