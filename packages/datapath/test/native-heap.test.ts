// The datapath's use of the C heap controls (native-heap.ts): the arena limit at start and the trim
// after link changes. The real nativeHeap runs here where it can; a counting stand-in only where the
// point is what the datapath does when glibc says no (test/memory.test.ts covers the real one in a
// running datapath).
import { Writable } from 'node:stream';
import pino from 'pino';
import { nativeHeap } from '@tincan/tun';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DEFAULT_MALLOC_ARENAS, NativeHeapTrimmer, limitMallocArenas, type NativeHeapControl } from '../src/native-heap.js';

function capturingLogger(): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'debug' }, stream), lines };
}

/** nativeHeap, with its calls counted and its trims' promises kept (and, for `refuse`, glibc refusing the limit). */
function countingHeap(opts: { supported?: boolean; refuse?: boolean } = {}): NativeHeapControl & { calls: string[]; trims: Promise<boolean>[] } {
  const calls: string[] = [];
  const trims: Promise<boolean>[] = [];
  return {
    calls,
    trims,
    supported: opts.supported ?? true,
    limitArenas: (n) => {
      calls.push(`limit ${n}`);
      return !opts.refuse;
    },
    trimInBackground: () => {
      calls.push('trim');
      const p = nativeHeap.trimInBackground();
      trims.push(p);
      return p;
    },
    stats: () => nativeHeap.stats(),
  };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('limitMallocArenas', () => {
  it('is off by default (glibc\'s own arenas: the cap cost link throughput)', () => {
    expect(DEFAULT_MALLOC_ARENAS).toBe(0);
  });

  it('sets the limit asked for and says which (real glibc: this process gets capped too, harmless in a test)', () => {
    const { log, lines } = capturingLogger();
    expect(limitMallocArenas(log, nativeHeap, 2)).toBe(2);
    expect(lines.filter((l) => l.level === 40)).toEqual([]);
  });

  it('0 (the default) asks for no cap: null, no call, no warning, on any C library', () => {
    for (const heap of [countingHeap({}), countingHeap({ supported: false })]) {
      const { log, lines } = capturingLogger();
      expect(limitMallocArenas(log, heap, DEFAULT_MALLOC_ARENAS)).toBeNull();
      expect(lines).toEqual([]);
      expect(heap.calls).toEqual([]);
    }
  });

  it('returns null with a warning when glibc refuses the limit, or the C library is not glibc', () => {
    for (const heap of [countingHeap({ refuse: true }), countingHeap({ supported: false })]) {
      const { log, lines } = capturingLogger();
      expect(limitMallocArenas(log, heap, 3)).toBeNull();
      expect(lines.filter((l) => l.level === 40)).toHaveLength(1);
      expect(heap.calls).toEqual(heap.supported ? ['limit 3'] : []);
    }
  });
});

describe('NativeHeapTrimmer', () => {
  it('trims once (off the main thread), the delay after the last of a burst of link changes', async () => {
    vi.useFakeTimers();
    const heap = countingHeap();
    const trimmer = new NativeHeapTrimmer(heap, 2, capturingLogger().log, 5000);
    trimmer.linkChanged();
    vi.advanceTimersByTime(3000);
    trimmer.linkChanged(); // the quiet time starts again
    vi.advanceTimersByTime(4000);
    trimmer.linkChanged();
    vi.advanceTimersByTime(4999);
    expect(heap.calls).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(heap.calls).toEqual(['trim']);
    expect(trimmer.state().trims).toBe(0); // counted once done
    await Promise.all(heap.trims);
    await Promise.resolve();
    vi.advanceTimersByTime(60_000);
    expect(heap.calls).toEqual(['trim']);
    const state = trimmer.state();
    expect(state).toMatchObject({ mallocArenaLimit: 2, trims: 1 });
    expect(state.stats?.heapBytes).toBeGreaterThan(0);
    // the next change arms it again
    trimmer.linkChanged();
    vi.advanceTimersByTime(5000);
    await Promise.all(heap.trims);
    await Promise.resolve();
    expect(trimmer.state().trims).toBe(2);
  });

  it('runs one trim at a time', async () => {
    const heap = countingHeap();
    const trimmer = new NativeHeapTrimmer(heap, 2, capturingLogger().log, 5000);
    await Promise.all([trimmer.trimNow(), trimmer.trimNow()]);
    expect(heap.calls).toEqual(['trim']);
    await trimmer.trimNow();
    expect(heap.calls).toEqual(['trim', 'trim']);
    expect(trimmer.state().trims).toBe(2);
  });

  it('does nothing after stop()', () => {
    vi.useFakeTimers();
    const heap = countingHeap();
    const trimmer = new NativeHeapTrimmer(heap, null, capturingLogger().log, 5000);
    trimmer.linkChanged();
    expect(vi.getTimerCount()).toBe(1);
    trimmer.stop();
    vi.advanceTimersByTime(10_000);
    expect(heap.calls).toEqual([]);
    expect(trimmer.state()).toMatchObject({ mallocArenaLimit: null, trims: 0 });
  });

  it('never trims where the C library is not glibc', () => {
    vi.useFakeTimers();
    const heap = countingHeap({ supported: false });
    const trimmer = new NativeHeapTrimmer(heap, null, capturingLogger().log, 5000);
    trimmer.linkChanged();
    vi.advanceTimersByTime(10_000);
    expect(heap.calls).toEqual([]);
  });
});
