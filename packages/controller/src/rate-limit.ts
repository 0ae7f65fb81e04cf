import type { Clock } from './clock.js';

/**
 * Rate-limits repetitive log lines: `allow(key)` is true at most once per interval per key, and says
 * how many were suppressed since the last one allowed. Keys are bounded (oldest forgotten).
 */
export class LogLimiter {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly clock: Clock,
    private readonly intervalMs = 60_000,
    private readonly maxKeys = 1024,
  ) {}

  allow(key: string): { ok: boolean; suppressed: number } {
    const now = this.clock.now();
    const e = this.last.get(key);
    if (e && now - e.at < this.intervalMs) {
      e.suppressed++;
      return { ok: false, suppressed: e.suppressed };
    }
    const suppressed = e?.suppressed ?? 0;
    this.last.delete(key);
    this.last.set(key, { at: now, suppressed: 0 });
    if (this.last.size > this.maxKeys) this.last.delete(this.last.keys().next().value as string);
    return { ok: true, suppressed };
  }
}
