import { nativeHeap, type NativeHeapStats } from '@tincan/tun';
import type { Logger } from 'pino';

/**
 * The C heap of a datapath (and of each lane process): glibc malloc, which node and every native
 * library in the process allocate from (libdatachannel, usrsctp, OpenSSL, libjuice). What a link
 * costs there and why these two measures, with figures: docs/architecture.md, "Memory".
 *
 * - **Arenas** (`--malloc-arenas N`, off by default): glibc gives each thread that allocates an arena of
 *   its own (up to 8 per core), and each arena keeps its own free memory. libdatachannel's threads (its
 *   worker pool, libjuice's poller, usrsctp's timer) get ~5 more; with N > 0 the datapath caps the
 *   process from inside, at start, before node-datachannel is loaded (no environment variable on the
 *   launchers), and they share the arenas that exist. It saved 0.2–0.9 MB at 11 links but cost a
 *   link's TCP throughput a median 7% in interleaved rounds (threads that allocate per packet then
 *   share arena locks), so DEFAULT_MALLOC_ARENAS is 0: glibc's default.
 * - **Trim**: a link's setup (ICE gathering, the DTLS handshake, SCTP's INIT) allocates and frees in
 *   bursts; malloc keeps the freed pages resident. TRIM_AFTER_LINK_CHANGE_MS after the last link went
 *   up, down or closed, the datapath gives the free pages of every arena back (malloc_trim(0)), once,
 *   on a thread of libuv's pool. Nothing of this runs on the per-packet path.
 */
export const DEFAULT_MALLOC_ARENAS = 0;

/** Quiet time after the last link change before the C heap is trimmed. */
export const TRIM_AFTER_LINK_CHANGE_MS = 5000;

/** The C heap as the datapath uses it: @tincan/tun's nativeHeap (an interface so that tests can count calls). */
export interface NativeHeapControl {
  readonly supported: boolean;
  limitArenas(arenas: number): boolean;
  trimInBackground(): Promise<boolean>;
  stats(): NativeHeapStats | null;
}

/** get_state's `memory`: the arena limit in force and the trims so far. */
export interface NativeHeapState {
  /** The arena limit this process set (null: none set, e.g. not glibc). */
  mallocArenaLimit: number | null;
  /** Trims done so far. */
  trims: number;
  /** malloc's totals now (null without glibc). */
  stats: NativeHeapStats | null;
}

/**
 * Caps the process's malloc arenas at `arenas` (`--malloc-arenas`; 0: no cap, glibc's default); call it
 * first thing at start. Returns the limit set, or null: none asked for, or (with a warning) glibc did
 * not take it, so a datapath that runs without the cap it was asked for says so.
 */
export function limitMallocArenas(log: Logger, heap: NativeHeapControl, arenas: number): number | null {
  if (arenas <= 0) return null;
  if (!heap.supported) {
    log.warn('not on glibc malloc: the C heap is neither capped in arenas nor trimmed (docs/architecture.md, "Memory")');
    return null;
  }
  if (!heap.limitArenas(arenas)) {
    log.warn({ arenas }, 'glibc refused the malloc arena limit: the datapath may keep more C heap resident (docs/architecture.md, "Memory")');
    return null;
  }
  return arenas;
}

/** Trims the C heap once links have stopped changing for a while (see the top of this file). */
export class NativeHeapTrimmer {
  private timer: NodeJS.Timeout | null = null;
  private trims = 0;
  private trimming = false;

  constructor(
    private readonly heap: NativeHeapControl,
    private readonly mallocArenaLimit: number | null,
    private readonly log: Logger,
    private readonly delayMs = TRIM_AFTER_LINK_CHANGE_MS,
  ) {}

  /** A link came up, went down or was closed: trim `delayMs` after the last such change. */
  linkChanged(): void {
    if (!this.heap.supported) return;
    if (this.timer) {
      this.timer.refresh();
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.trimNow();
    }, this.delayMs);
    this.timer.unref();
  }

  /**
   * Trims now, on a thread of libuv's pool (the madvise calls take ~1 ms per MB given back; the main
   * thread goes on meanwhile). One at a time: a trim asked for while one runs is dropped.
   */
  trimNow(): Promise<void> {
    if (this.trimming) return Promise.resolve();
    this.trimming = true;
    return this.heap.trimInBackground().then(
      () => {
        this.trims++;
        this.log.debug({ trims: this.trims }, 'C heap trimmed');
      },
      (err: unknown) => this.log.warn({ err }, 'C heap trim failed'),
    ).finally(() => {
      this.trimming = false;
    });
  }

  state(): NativeHeapState {
    return { mallocArenaLimit: this.mallocArenaLimit, trims: this.trims, stats: this.heap.stats() };
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
