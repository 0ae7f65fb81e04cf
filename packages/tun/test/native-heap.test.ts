// nativeHeap (native/native_heap.c): glibc malloc's arena limit, trim and totals. No root needed. The
// arena limit and the trim act on the whole process, so they run in fixture processes of their own
// (test/fixtures/arenas.mjs, trim.mjs, which import the built wrapper: run `npx tsc -b` first).
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { MAX_MALLOC_ARENAS, nativeHeap } from '../src/index.js';

const fixtures = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

function fixture(args: readonly string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { cwd: fixtures, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(JSON.parse(String(stdout).trim().split('\n').at(-1)!) as Record<string, unknown>);
    });
  });
}

describe('nativeHeap', () => {
  it('runs on glibc here (the lab and CI images are Debian)', () => {
    expect(nativeHeap.supported).toBe(true);
  });

  it('takes a whole number of arenas 1..MAX_MALLOC_ARENAS and refuses anything else with ERR_OUT_OF_RANGE', () => {
    for (const bad of [0, -1, MAX_MALLOC_ARENAS + 1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => nativeHeap.limitArenas(bad), String(bad)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE', name: 'RangeError' }));
    }
    expect(() => nativeHeap.limitArenas('2' as unknown as number)).toThrow(RangeError);
  });

  it('stats: malloc totals that add up', () => {
    const s = nativeHeap.stats();
    expect(s).not.toBeNull();
    const { heapBytes, mmappedBytes, inUseBytes, freeBytes, topReleasableBytes } = s!;
    for (const v of [heapBytes, mmappedBytes, inUseBytes, freeBytes, topReleasableBytes]) expect(Number.isInteger(v) && v >= 0).toBe(true);
    expect(heapBytes).toBeGreaterThan(0);
    // what the heaps hold is either in use or free; mmapped blocks count as in use
    expect(inUseBytes - mmappedBytes + freeBytes).toBe(heapBytes);
    expect(topReleasableBytes).toBeLessThanOrEqual(freeBytes);
  });

  it('limitArenas caps the arenas that threads started later get; without it each thread gets its own', async () => {
    const free = await fixture(['arenas.mjs']);
    const capped = await fixture(['arenas.mjs', '2']);
    // six worker threads that allocate: glibc's default gives each an arena
    expect(free).toMatchObject({ limit: null });
    expect(free.after as number).toBeGreaterThanOrEqual((free.before as number) + 6);
    // capped at 2 (the main arena and one more): none beyond those that existed
    expect(capped).toMatchObject({ limit: 2, limited: true });
    expect(capped.after as number).toBeLessThanOrEqual(Math.max(1, capped.before as number));
  });

  it('trim gives freed heap pages back to the kernel, also below the top of the heap', async () => {
    const r = await fixture(['--expose-gc', 'trim.mjs']);
    // ~64 MB freed inside the heap, still resident until the trim
    expect(r.freeBytes as number).toBeGreaterThan(50e6);
    expect(r.released).toBe(true);
    expect((r.beforeKb as number) - (r.afterKb as number)).toBeGreaterThan(40_000);
  });

  it('trimInBackground does the same on a thread of the pool and resolves with the answer', async () => {
    const r = await fixture(['--expose-gc', 'trim.mjs', 'background']);
    expect(r.freeBytes as number).toBeGreaterThan(50e6);
    expect(r.released).toBe(true);
    expect((r.beforeKb as number) - (r.afterKb as number)).toBeGreaterThan(40_000);
  });
});
