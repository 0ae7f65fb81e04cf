// @tincan/watchdog: a liveness watchdog for a Node.js process's main thread.
//
// The native addon (native/watchdog.c) runs one detached pthread that checks an atomic heartbeat counter;
// an unref'd timer on the main thread bumps it. When the counter stops for the timeout, the thread writes
// one line to stderr (fd 2) and SIGKILLs the process, so that its supervisor restarts it. A native thread,
// not a worker_threads Worker: it needs no second V8 isolate (~8 MB resident per process).
import { createRequire } from 'node:module';

export interface MainThreadWatchdogOptions {
  /** Milliseconds the main thread may stall before the process is killed (1..3_600_000). */
  timeoutMs: number;
  /** How often the main thread beats and the watchdog thread looks (1..timeoutMs). */
  checkEveryMs: number;
  /**
   * The fatal line is `linePrefix + '"time":<ms since the epoch>,"stalledS":<s, one decimal>,' + lineSuffix`,
   * written as is: for a JSON line, a prefix like `{"level":60,` and a suffix like `"msg":"..."}\n`.
   */
  linePrefix: string;
  lineSuffix: string;
}

interface NativeHandle {
  readonly __tincanWatchdog: unique symbol;
}

interface NativeBinding {
  start(timeoutMs: number, checkEveryMs: number, linePrefix: string, lineSuffix: string): NativeHandle;
  beat(h: NativeHandle): void;
  stop(h: NativeHandle): void;
}

export const MAX_TIMEOUT_MS = 3_600_000;

let binding: NativeBinding | undefined;
function native(): NativeBinding {
  if (!binding) {
    const require = createRequire(import.meta.url);
    try {
      binding = require('../build/Release/tincan_watchdog.node') as NativeBinding;
    } catch (err) {
      throw new Error(
        `@tincan/watchdog: cannot load the native addon build/Release/tincan_watchdog.node ` +
          `(build it with \`npm run build --workspace @tincan/watchdog\`): ${(err as Error).message}`,
        { cause: err },
      );
    }
  }
  return binding;
}

function checkMs(value: number, name: string, max: number): void {
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw Object.assign(new RangeError(`MainThreadWatchdogOptions.${name} must be an integer in [1, ${max}], got ${String(value)}`), {
      code: 'ERR_OUT_OF_RANGE',
    });
  }
}

/**
 * Watches the main thread of this process. Start it on the main thread; it never keeps the process alive
 * (the timer is unref'd, the thread detached). Until `stop()`, it also watches the process's exit: an exit
 * that hangs for the timeout is killed too.
 */
export class MainThreadWatchdog {
  #stopped = false;

  private constructor(
    private readonly handle: NativeHandle,
    private readonly timer: NodeJS.Timeout,
  ) {}

  static start(opts: MainThreadWatchdogOptions): MainThreadWatchdog {
    checkMs(opts.timeoutMs, 'timeoutMs', MAX_TIMEOUT_MS);
    checkMs(opts.checkEveryMs, 'checkEveryMs', opts.timeoutMs);
    const addon = native();
    const handle = addon.start(opts.timeoutMs, opts.checkEveryMs, opts.linePrefix, opts.lineSuffix);
    const timer = setInterval(() => addon.beat(handle), opts.checkEveryMs);
    timer.unref();
    return new MainThreadWatchdog(handle, timer);
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  /** Stops the heartbeat; the thread ends at its next check (within checkEveryMs) without acting. Idempotent. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.timer);
    native().stop(this.handle);
  }
}
