export interface BackoffOptions {
  /** Delay after the first failure. */
  initialMs: number;
  /** Ceiling of the delay. */
  maxMs: number;
  /** Growth per consecutive failure (default 2). */
  factor?: number;
  /** Random spread, as a fraction of the delay (default 0.2: ±20%), so peers do not retry in step. */
  jitter?: number;
  /** Source of randomness in [0, 1) (tests pass a fixed one). */
  random?: () => number;
}

interface Entry {
  failures: number;
  readyAt: number;
}

/** Exponential backoff per key (a peer UID): after each failure the next attempt waits longer. */
export class Backoff {
  private readonly entries = new Map<string, Entry>();
  private readonly factor: number;
  private readonly jitter: number;
  private readonly random: () => number;

  constructor(private readonly opts: BackoffOptions) {
    this.factor = opts.factor ?? 2;
    this.jitter = opts.jitter ?? 0.2;
    this.random = opts.random ?? Math.random;
  }

  /** Records a failure at `now`; returns the delay before the next attempt. */
  fail(key: string, now: number): number {
    const e = this.entries.get(key) ?? { failures: 0, readyAt: 0 };
    e.failures++;
    const base = Math.min(this.opts.maxMs, this.opts.initialMs * this.factor ** (e.failures - 1));
    const delay = Math.max(0, Math.round(base * (1 + this.jitter * (2 * this.random() - 1))));
    e.readyAt = now + delay;
    this.entries.set(key, e);
    return delay;
  }

  /** Forgets the failures of `key` (after a success, or when the peer came back fresh). */
  reset(key: string): void {
    this.entries.delete(key);
  }

  /** When the next attempt for `key` may start (0: now). */
  readyAt(key: string): number {
    return this.entries.get(key)?.readyAt ?? 0;
  }

  failures(key: string): number {
    return this.entries.get(key)?.failures ?? 0;
  }
}
