// The datapath's C heap controls in the lab (packages/datapath/src/native-heap.ts): real datapaths with
// real links. Every datapath trims its C heap once its links have settled (the default). One also caps
// its malloc arenas (--malloc-arenas 2: once its program is loaded no thread gets a new arena); one with
// the default (no cap, glibc's own arenas) is the control that shows the arena count read from /proc
// really moves. The arenas are counted from /proc/PID/maps, outside the process, so that a cap that
// stops working (a refused mallopt, a library loaded before it) fails here and not only in get_state.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ARENAS_BEFORE_CAP, threadArenas } from './support/arenas.js';
import { eventuallyValue, labServers, connectNodes, scriptedNode, type TinCanNode } from './support/tincan-node.js';

const servers = labServers();

interface MemoryState {
  rss_bytes: number;
  malloc_arena_limit: number | null;
  native_heap_trims: number;
  native_heap: { heap_bytes: number; mmapped_bytes: number; in_use_bytes: number; free_bytes: number } | null;
}

async function memory(n: TinCanNode): Promise<MemoryState> {
  return ((await n.state()) as unknown as { memory: MemoryState }).memory;
}

describe('the datapath C heap (malloc arenas, trim) in the lab', () => {
  const capped = scriptedNode(servers, 'pub', '10.254.0.6', 6, ['--malloc-arenas', '2']);
  const uncapped = scriptedNode(servers, 'h1', '10.254.0.1', 1);
  const peer = scriptedNode(servers, 'h2', '10.254.0.2', 2);
  const all = [capped, uncapped, peer];

  beforeAll(async () => {
    await Promise.all(all.map((n) => n.start()));
    await Promise.all(all.map((n) => n.configure(servers.xmpp)));
  });

  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') for (const n of all) console.log(n.logs());
  });

  afterAll(async () => {
    await Promise.all(all.map((n) => n.stop()));
  });

  const arenasBefore = new Map<TinCanNode, number>();

  it('reports the arena limit in get_state (none by default); no trim before any link', async () => {
    for (const n of [capped, uncapped]) arenasBefore.set(n, threadArenas(n.datapath.child.pid!));
    expect(await memory(capped)).toMatchObject({ malloc_arena_limit: 2, native_heap_trims: 0 });
    expect(await memory(uncapped)).toMatchObject({ malloc_arena_limit: null, native_heap_trims: 0 });
    const m = await memory(capped);
    expect(m.native_heap!.heap_bytes).toBeGreaterThan(0);
    expect(m.rss_bytes).toBeGreaterThan(20e6);
  });

  it("with the cap, gives node-datachannel's threads no arenas of their own; by default each gets one", async () => {
    // Two links each: node-datachannel loaded, its threads allocating.
    await connectNodes(capped, peer);
    await connectNodes(uncapped, peer);
    await connectNodes(capped, uncapped);
    const arenasCapped = threadArenas(capped.datapath.child.pid!);
    const arenasUncapped = threadArenas(uncapped.datapath.child.pid!);
    console.log(`thread arenas before links / with two links: --malloc-arenas 2: ${arenasBefore.get(capped)} / ${arenasCapped}, default: ${arenasBefore.get(uncapped)} / ${arenasUncapped}`);
    // the cap applies once the program is loaded (native-heap.ts): what exists then stays, nothing is added
    expect(arenasCapped).toBeLessThanOrEqual(arenasBefore.get(capped)!);
    expect(arenasCapped).toBeLessThanOrEqual(ARENAS_BEFORE_CAP);
    expect(arenasUncapped).toBeGreaterThan(Math.max(arenasBefore.get(uncapped)!, ARENAS_BEFORE_CAP));
  });

  it('trims the C heap once the links have settled, with or without the cap', async () => {
    const trimmed = await eventuallyValue(async () => {
      const m = await memory(capped);
      return m.native_heap_trims >= 1 && m;
    }, 20_000, 'a trim after the links came up');
    expect(trimmed.malloc_arena_limit).toBe(2);
    expect((await memory(uncapped)).native_heap_trims).toBeGreaterThanOrEqual(1);
  });
});
