import type { Logger } from 'pino';
import type { Clock } from './clock.js';
import { LogLimiter } from './rate-limit.js';

/**
 * Runs the handlers of input from outside the process (datagrams from other controllers, datapath
 * events and packets) so that a bug any input reaches is a counted drop with a rate-limited log line,
 * never an exception that ends the process. Counts are by handler kind, for the status file.
 */
export class InputGuard {
  readonly counts: Record<string, number> = {};
  private readonly limiter: LogLimiter;

  constructor(
    private readonly log: Logger,
    clock: Clock,
    intervalMs = 60_000,
  ) {
    this.limiter = new LogLimiter(clock, intervalMs, 64);
  }

  /** Calls fn; a throw is counted under `kind` and logged at most once per interval per kind. */
  run(kind: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.counts[kind] = (this.counts[kind] ?? 0) + 1;
      const gate = this.limiter.allow(kind);
      if (gate.ok) {
        this.log.error(
          { handler: kind, err: err instanceof Error ? (err.stack ?? err.message) : String(err), suppressed: gate.suppressed || undefined },
          'input handler failed: input dropped',
        );
      }
    }
  }
}
