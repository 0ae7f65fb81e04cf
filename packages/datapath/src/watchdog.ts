import { hostname } from 'node:os';
import { MainThreadWatchdog } from '@tincan/watchdog';
import type { Logger } from 'pino';
import * as z from 'zod';

/** `--watchdog <seconds>`: whole seconds, 0 turns the watchdog off. */
export const MAX_WATCHDOG_S = 3600;
export const WatchdogSeconds = z.number().int().min(0).max(MAX_WATCHDOG_S);
export const DEFAULT_WATCHDOG_S = 30;

export interface WatchdogOptions {
  /** Seconds the main thread may stall before the process is killed; 0: no watchdog. */
  timeoutS: number;
  logger: Logger;
}

/** pino's level number for fatal. */
const FATAL = 60;

/**
 * The liveness watchdog of a datapath (or lane) process. A native deadlock in libdatachannel can
 * block the main thread for good, and a hung process is neither restarted by systemd nor recoverable
 * by its controller. The main thread beats from an unref'd timer (nothing per packet); a native
 * thread of @tincan/watchdog watches the beats, and when they stop for the timeout writes one fatal
 * line to stderr (in the shape of the process's pino logs) and SIGKILLs the process, so that its
 * supervisor restarts it. It never keeps the process alive.
 */
export class Watchdog {
  private constructor(private readonly native: MainThreadWatchdog) {}

  /** Starts the watchdog, or returns null when `timeoutS` is 0. */
  static start(opts: WatchdogOptions): Watchdog | null {
    const timeoutS = WatchdogSeconds.parse(opts.timeoutS);
    if (timeoutS === 0) return null;
    const timeoutMs = timeoutS * 1000;
    const native = MainThreadWatchdog.start({
      timeoutMs,
      checkEveryMs: Math.min(1000, timeoutMs / 4),
      ...fatalLine(opts.logger.bindings(), timeoutS),
    });
    opts.logger.child({ component: 'watchdog' }).info({ timeoutS }, 'watchdog armed: a main thread stalled this long gets the process killed');
    return new Watchdog(native);
  }

  /** Stops the heartbeat and the watchdog thread (the process's normal shutdown). */
  stop(): void {
    this.native.stop();
  }
}

/**
 * The watchdog's fatal line, as pino would write it: the native thread puts `"time"` (now) and
 * `"stalledS"` between the prefix and the suffix.
 */
export function fatalLine(bindings: Record<string, unknown>, timeoutS: number): { linePrefix: string; lineSuffix: string } {
  const rest = JSON.stringify({
    pid: process.pid, hostname: hostname(), ...bindings, component: 'watchdog', timeoutS,
    msg: `watchdog: the main thread has been stalled for the timeout (${timeoutS} s); killing the process with SIGKILL so that its supervisor restarts it`,
  });
  return { linePrefix: `{"level":${FATAL},`, lineSuffix: `${rest.slice(1)}\n` };
}
