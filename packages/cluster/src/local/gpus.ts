import { execFileSync } from "node:child_process";

/** GPU shares are counted in hundredths so fractions (0.3 + 0.7) add up exactly. */
const WHOLE = 100;

/**
 * Hands out the host's GPUs to replicas as `CUDA_VISIBLE_DEVICES`: `gpus >= 1` takes that many
 * devices nobody else uses (rounded up), a fraction shares one device with other fractions up to
 * a whole. This is bookkeeping, not enforcement: CUDA cannot cap a process's share of a device.
 * One allocator per host: drivers sharing a data dir must share a driver (as the provisioner does).
 */
export class GpuAllocator {
  private readonly used = new Map<string, number>();
  private readonly holders = new Map<string, { devices: string[]; share: number }>();

  constructor(readonly devices: string[]) {
    for (const d of devices) this.used.set(d, 0);
  }

  /** Whether the host has enough GPUs at all (free or not) for a replica asking for `gpus`. */
  couldEverFit(gpus: number): boolean {
    if (gpus <= 0) return true;
    return gpus >= 1 ? Math.ceil(gpus) <= this.devices.length : this.devices.length > 0;
  }

  /** Devices for `holder` asking for `gpus`, or null when the host has not that much free. */
  allocate(holder: string, gpus: number): string[] | null {
    const existing = this.holders.get(holder);
    if (existing) return existing.devices;
    if (gpus <= 0) return [];
    let devices: string[];
    let share: number;
    if (gpus >= 1) {
      const free = this.devices.filter((d) => this.used.get(d) === 0);
      if (free.length < Math.ceil(gpus)) return null;
      devices = free.slice(0, Math.ceil(gpus));
      share = WHOLE;
    } else {
      share = Math.max(1, Math.round(gpus * WHOLE));
      // Fill the fullest device that still fits, keeping whole devices free for whole requests.
      const fits = this.devices
        .filter((d) => (this.used.get(d) ?? 0) + share <= WHOLE)
        .sort((a, b) => (this.used.get(b) ?? 0) - (this.used.get(a) ?? 0));
      if (fits.length === 0) return null;
      devices = [fits[0]!];
    }
    this.hold(holder, devices, share);
    return devices;
  }

  /** Re-registers what an adopted replica already uses (devices no longer present are ignored). */
  restore(holder: string, devices: string[], gpus: number): void {
    if (gpus <= 0 || devices.length === 0 || this.holders.has(holder)) return;
    const share = gpus >= 1 ? WHOLE : Math.max(1, Math.round(gpus * WHOLE));
    this.hold(
      holder,
      devices.filter((d) => this.used.has(d)),
      share,
    );
  }

  release(holder: string): void {
    const held = this.holders.get(holder);
    if (!held) return;
    for (const d of held.devices) this.used.set(d, Math.max(0, (this.used.get(d) ?? 0) - held.share));
    this.holders.delete(holder);
  }

  private hold(holder: string, devices: string[], share: number): void {
    for (const d of devices) this.used.set(d, (this.used.get(d) ?? 0) + share);
    this.holders.set(holder, { devices, share });
  }
}

/** The host's NVIDIA GPUs by UUID (stable across reboots and CUDA_DEVICE_ORDER), or [] without any. */
export function detectGpus(): string[] {
  try {
    return execFileSync("nvidia-smi", ["--query-gpu=uuid", "--format=csv,noheader"], {
      encoding: "utf8",
      timeout: 10_000,
      stdio: ["ignore", "pipe", "ignore"],
    })
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => /^GPU-[0-9a-fA-F-]+$/.test(l));
  } catch {
    return [];
  }
}
