import { readFileSync } from 'node:fs';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { Clock, TimerHandle } from './clock.js';

/** A state file that exists but cannot be used (unreadable, not JSON, not of the expected shape). */
export class StateFileError extends Error {
  constructor(
    readonly path: string,
    readonly problem: string,
  ) {
    super(`${path}: ${problem}`);
    this.name = 'StateFileError';
  }
}

/**
 * Reads a JSON state file synchronously (at start, before anything is driven). Returns null if the
 * file does not exist; throws StateFileError if it exists but is unreadable, not JSON, or rejected
 * by `parse` (which returns the value or a problem description).
 */
export function readStateFileSync<T>(path: string, parse: (data: unknown) => { ok: true; value: T } | { ok: false; problem: string }): T | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new StateFileError(path, `cannot read it: ${(err as Error).message}`);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new StateFileError(path, `not valid JSON (${(err as Error).message}); fix or remove it`);
  }
  const r = parse(data);
  if (!r.ok) throw new StateFileError(path, `unexpected content (${r.problem}); fix or remove it`);
  return r.value;
}

export interface PersistentFileOptions {
  /** File mode (default 0600: the file may name the user's friends). */
  mode?: number;
  /** An urgent update is written within this long (default 500 ms). */
  soonMs?: number;
  /** A lazy update (e.g. traffic counters) is written within this long (default 60 s). */
  laterMs?: number;
  /** What the file is, in log messages (default "state file"). */
  label?: string;
}

/**
 * A JSON file a controller persists its own state in (e.g. socialvpn-state.json; StatusFile is the
 * same writer for the status file). It survives crashes intact: each write goes to a temporary file that is fsync'ed and renamed
 * over the old one, so a reader (or the next start) sees either the old or the new content. Updates
 * are coalesced: urgent ones are written within `soonMs`, lazy ones within `laterMs`.
 */
export class PersistentJsonFile {
  private pending: (() => unknown) | null = null;
  private timer: TimerHandle | null = null;
  private timerAt = 0;
  private writing: Promise<void> = Promise.resolve();
  private failedOnce = false;
  private readonly mode: number;
  private readonly soonMs: number;
  private readonly laterMs: number;
  private readonly label: string;
  /** Writes done (tests, status). */
  writes = 0;
  lastError: string | null = null;

  constructor(
    readonly path: string,
    private readonly clock: Clock,
    private readonly logger: Logger,
    opts: PersistentFileOptions = {},
  ) {
    this.mode = opts.mode ?? 0o600;
    this.soonMs = opts.soonMs ?? 500;
    this.laterMs = opts.laterMs ?? 60_000;
    this.label = opts.label ?? 'state file';
  }

  /** Schedules a write of `get()` (called when writing, so it sees the latest state). */
  update(get: () => unknown, urgency: 'soon' | 'later' = 'soon'): void {
    this.pending = get;
    const at = this.clock.now() + (urgency === 'soon' ? this.soonMs : this.laterMs);
    if (this.timer !== null) {
      if (this.timerAt <= at) return;
      this.clock.clearTimeout(this.timer);
    }
    this.timerAt = at;
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, at - this.clock.now());
  }

  /** Writes the latest state now (at start, on shutdown, in tests); resolves when it is on disk. */
  async flush(): Promise<void> {
    if (this.timer !== null) {
      this.clock.clearTimeout(this.timer);
      this.timer = null;
    }
    const get = this.pending;
    if (get === null) return this.writing;
    this.pending = null;
    const text = `${JSON.stringify(get(), null, 2)}\n`;
    this.writing = this.writing.then(async () => {
      // A failed write is tried again later (unless a newer update is due anyway).
      if (!(await this.write(text)) && this.pending === null) this.update(get, 'later');
    });
    return this.writing;
  }

  private async write(text: string): Promise<boolean> {
    const tmp = `${this.path}.${process.pid}.tmp`;
    try {
      await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
      const fh = await open(tmp, 'w', this.mode);
      try {
        await fh.writeFile(text, 'utf8');
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.path);
      this.writes++;
      this.lastError = null;
      if (this.failedOnce) this.logger.info({ path: this.path }, `the ${this.label} is written again`);
      this.failedOnce = false;
      return true;
    } catch (err) {
      this.lastError = (err as Error).message;
      if (!this.failedOnce) this.logger.error({ err: this.lastError, path: this.path }, `cannot write the ${this.label}`);
      this.failedOnce = true;
      await unlink(tmp).catch(() => undefined);
      return false;
    }
  }
}
