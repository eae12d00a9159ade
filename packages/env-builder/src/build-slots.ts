/**
 * At most `limit` builds of this process run at once; the others queue in arrival order. Builds
 * are CPU- and disk-heavy installers, and a burst of deploys must not starve the replicas sharing
 * the machine.
 */
export class BuildSlots {
  private running = 0;
  private readonly queue: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  /** Resolves with a release function once a slot is free; `onQueued` is called if it has to wait. */
  async acquire(onQueued: () => void): Promise<() => void> {
    if (this.running >= this.limit) {
      onQueued();
      await new Promise<void>((resolve) => this.queue.push(resolve));
    } else {
      this.running++;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.queue.shift();
      // The slot passes straight to the next waiter, so `running` only drops when nobody waits.
      if (next) next();
      else this.running--;
    };
  }
}
