import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { Clock, TimerHandle } from './clock.js';

/**
 * A JSON status file a controller keeps current for operators and tools (e.g. groupvpn-status.json):
 * updates are coalesced (at most one write per `minIntervalMs`) and written atomically (tmp + rename).
 */
export class StatusFile {
  private pending: (() => unknown) | null = null;
  private timer: TimerHandle | null = null;
  private lastWrite = 0;
  private writing: Promise<void> = Promise.resolve();
  private failedOnce = false;

  constructor(
    readonly path: string,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly minIntervalMs = 1_000,
  ) {}

  /** Schedules a write; `get` is called when the file is written, so it always sees the latest state. */
  update(get: () => unknown): void {
    this.pending = get;
    if (this.timer !== null) return;
    const wait = Math.max(0, this.lastWrite + this.minIntervalMs - this.clock.now());
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, wait);
  }

  /** Writes the latest status now (also on shutdown). */
  async flush(): Promise<void> {
    if (this.timer !== null) {
      this.clock.clearTimeout(this.timer);
      this.timer = null;
    }
    const get = this.pending;
    if (get === null) return this.writing;
    this.pending = null;
    const status = get();
    this.lastWrite = this.clock.now();
    this.writing = this.writing.then(() => this.write(status));
    return this.writing;
  }

  private async write(status: unknown): Promise<void> {
    const tmp = `${this.path}.${process.pid}.tmp`;
    try {
      await mkdir(dirname(this.path), { recursive: true });
      await writeFile(tmp, `${JSON.stringify(status, null, 2)}\n`, { mode: 0o644 });
      await rename(tmp, this.path);
      this.failedOnce = false;
    } catch (err) {
      if (!this.failedOnce) this.logger.warn({ err: (err as Error).message, path: this.path }, 'cannot write the status file');
      this.failedOnce = true;
    }
  }
}
