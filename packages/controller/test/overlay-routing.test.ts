import { describe, expect, it } from 'vitest';
import { RoutingConfig, UNREACHABLE_HOPS, uidFromIp4, type OverlayRoute, type Uid } from '@tincan/protocol';
import { ManualClock } from '../src/clock.js';
import { OverlayRouter } from '../src/overlay-router.js';
import { StructuredTopology } from '../src/structured-topology.js';

const defaults = RoutingConfig.parse({});
/** Every UID is a member; the config's default caps. */
const OPEN = { isMember: () => true, maxRoutesPerNeighbour: defaults.max_routes_per_neighbour, maxRoutes: defaults.max_routes };

/**
 * A simulated overlay: routers joined by "links", advertisements delivered in order as the clock
 * moves. The real channel (UDP over the vNICs) is covered by the lab tests (test/routing.test.ts).
 */
class SimNet {
  readonly clock = new ManualClock();
  readonly routers = new Map<Uid, OverlayRouter>();
  readonly sent: { from: Uid; to: Uid; routes: OverlayRoute[] }[] = [];
  private readonly links = new Set<string>();

  add(uid: Uid, ip4?: string): OverlayRouter {
    const r = new OverlayRouter({
      ...OPEN,
      self: uid,
      clock: this.clock,
      refreshMs: 30_000,
      local: () => (ip4 ? { ip4 } : {}),
      send: (to, routes) => {
        this.sent.push({ from: uid, to, routes });
        // Delivered on the next tick, only while the link exists.
        this.clock.setTimeout(() => {
          if (this.links.has(key(uid, to))) this.routers.get(to)?.receive(uid, routes);
        }, 1);
      },
      changed: () => undefined,
    });
    this.routers.set(uid, r);
    return r;
  }

  link(a: Uid, b: Uid): void {
    this.links.add(key(a, b));
    this.routers.get(a)!.neighbourUp(b);
    this.routers.get(b)!.neighbourUp(a);
  }

  unlink(a: Uid, b: Uid): void {
    this.links.delete(key(a, b));
    this.routers.get(a)!.neighbourDown(b);
    this.routers.get(b)!.neighbourDown(a);
  }

  async settle(ms = 5_000): Promise<void> {
    await this.clock.advance(ms);
  }

  stop(): void {
    for (const r of this.routers.values()) r.stop();
  }
}

const key = (a: Uid, b: Uid): string => (a < b ? `${a}-${b}` : `${b}-${a}`);
const node = (i: number): Uid => uidFromIp4(`10.254.0.${i}`);

describe('OverlayRouter (distance vector)', () => {
  it('learns a two-hop route through the common neighbour, with the destination address', async () => {
    const net = new SimNet();
    const [a, h, b] = [node(1), node(4), node(2)];
    net.add(a, '10.254.0.1');
    net.add(h, '10.254.0.4');
    net.add(b, '10.254.0.2');
    net.link(a, h);
    net.link(h, b);
    await net.settle();
    expect(net.routers.get(a)!.route(b)).toMatchObject({ via: h, hops: 2, ip4: '10.254.0.2' });
    expect(net.routers.get(b)!.route(a)).toMatchObject({ via: h, hops: 2, ip4: '10.254.0.1' });
    expect(net.routers.get(a)!.route(h)).toMatchObject({ via: h, hops: 1, ip4: '10.254.0.4' });
    net.stop();
  });

  it('poisons the reverse route and withdraws routes when a link goes', async () => {
    const net = new SimNet();
    const [a, h, b] = [node(1), node(4), node(2)];
    for (const u of [a, h, b]) net.add(u);
    net.link(a, h);
    net.link(h, b);
    await net.settle();
    // h's advertisement to b says a is reachable (2 hops from b); to a it poisons nothing of a's own.
    const toA = net.sent.filter((m) => m.from === h && m.to === a).at(-1)!.routes;
    expect(toA.find((r) => r.uid === b)?.hops).toBe(1);
    const fromBtoH = net.sent.filter((m) => m.from === b && m.to === h).at(-1)!.routes;
    expect(fromBtoH.find((r) => r.uid === a)?.hops).toBe(UNREACHABLE_HOPS); // b reaches a through h
    net.unlink(h, b);
    await net.settle();
    expect(net.routers.get(a)!.route(b)).toBeUndefined();
    expect(net.routers.get(b)!.route(a)).toBeUndefined();
    net.stop();
  });

  it('does not count to infinity when a ring loses a node', async () => {
    const net = new SimNet();
    const u = [1, 2, 3, 4].map(node);
    for (const x of u) net.add(x);
    // A square 1-2-3-4-1, then 3 is cut off completely.
    net.link(u[0]!, u[1]!);
    net.link(u[1]!, u[2]!);
    net.link(u[2]!, u[3]!);
    net.link(u[3]!, u[0]!);
    await net.settle();
    expect(net.routers.get(u[0]!)!.route(u[2]!)?.hops).toBe(2);
    net.unlink(u[1]!, u[2]!);
    net.unlink(u[2]!, u[3]!);
    await net.settle(2_000);
    for (const x of [u[0]!, u[1]!, u[3]!]) expect(net.routers.get(x)!.route(u[2]!)).toBeUndefined();
    net.stop();
  });

  it('takes the shortest path and keeps routes within the hop limit', async () => {
    const net = new SimNet();
    const chain = Array.from({ length: 14 }, (_, i) => node(i + 1));
    for (const x of chain) net.add(x);
    for (let i = 0; i + 1 < chain.length; i++) net.link(chain[i]!, chain[i + 1]!);
    await net.settle(10_000);
    const first = net.routers.get(chain[0]!)!;
    expect(first.route(chain[10]!)?.hops).toBe(10);
    expect(first.route(chain[11]!)).toBeUndefined(); // 11 hops: beyond the limit
    net.link(chain[0]!, chain[12]!); // a shortcut
    await net.settle();
    expect(first.route(chain[13]!)).toMatchObject({ via: chain[12], hops: 2 });
    expect(first.route(chain[11]!)).toMatchObject({ via: chain[12], hops: 2 });
    net.stop();
  });

  it('advertises a new neighbour with the address the caller knows, before its own announcement', async () => {
    const clock = new ManualClock();
    const [a, h] = [node(1), node(4)];
    const sent: OverlayRoute[][] = [];
    const r = new OverlayRouter({
      ...OPEN, self: a, clock, local: () => ({ ip4: '10.254.0.1' }), neighbourIp4: (u) => (u === h ? '10.254.0.4' : undefined),
      send: (_to, routes) => sent.push(routes), changed: () => undefined,
    });
    r.neighbourUp(h);
    expect(r.route(h)).toMatchObject({ hops: 1, ip4: '10.254.0.4' });
    r.receive(h, [{ uid: h, hops: 0, ip4: '10.254.0.4', subnets: ['10.44.0.0/24'] }]);
    expect(r.route(h)).toMatchObject({ ip4: '10.254.0.4', subnets: ['10.44.0.0/24'] });
    r.stop();
  });

  it('ignores advertisements from non-neighbours and false zero-hop claims, and expires silent routes', async () => {
    const clock = new ManualClock();
    const [a, h, x] = [node(1), node(4), node(9)];
    const r = new OverlayRouter({ ...OPEN, self: a, clock, refreshMs: 1_000, expireMs: 3_000, local: () => ({}), send: () => undefined, changed: () => undefined });
    expect(r.receive(h, [{ uid: h, hops: 0 }, { uid: x, hops: 1 }])).toBe(false);
    r.neighbourUp(h);
    r.receive(h, [{ uid: h, hops: 0 }, { uid: x, hops: 0 }]);
    expect(r.route(x)).toBeUndefined();
    expect(r.counters.routes_dropped_false_origin).toBe(1);
    r.receive(h, [{ uid: x, hops: 3 }]);
    expect(r.route(x)).toMatchObject({ via: h, hops: 4 });
    await clock.advance(5_000); // refreshes ran, h said nothing more
    expect(r.route(x)).toBeUndefined();
    expect(r.route(h)).toMatchObject({ hops: 1 }); // the link itself stays a route
    r.stop();
  });
});

describe('OverlayRouter: admission and caps', () => {
  const many = (n: number, from: number): OverlayRoute[] => Array.from({ length: n }, (_, i) => ({ uid: uidFromIp4(`10.253.${(from + i) >> 8}.${(from + i) & 255}`), hops: 1 }));

  it('learns at most maxRoutesPerNeighbour from one neighbour and maxRoutes in all; withdrawals free room', () => {
    const clock = new ManualClock();
    const [a, h1, h2] = [node(1), node(4), node(5)];
    const r = new OverlayRouter({
      self: a, clock, isMember: () => true, maxRoutesPerNeighbour: 100, maxRoutes: 150,
      local: () => ({}), send: () => undefined, changed: () => undefined,
    });
    r.neighbourUp(h1);
    r.neighbourUp(h2);
    const first = many(1000, 0);
    for (let i = 0; i < first.length; i += 8) r.receive(h1, first.slice(i, i + 8));
    for (let i = 0; i < 1000; i += 8) r.receive(h2, many(8, 2000 + i));
    const sizes = r.learnedSizes();
    expect(sizes.perNeighbour.get(h1)).toBe(100);
    expect(sizes.perNeighbour.get(h2)).toBe(50);
    expect(sizes.total).toBe(150);
    expect(r.counters.routes_dropped_neighbour_cap).toBe(900);
    expect(r.counters.routes_dropped_total_cap).toBe(950);
    expect(r.routes().size).toBe(2 + 150);
    // h1 withdraws ten: h2 may now add ten more; a neighbour's link going frees all of its routes.
    r.receive(h1, first.slice(0, 10).map((x) => ({ uid: x.uid, hops: UNREACHABLE_HOPS })));
    r.receive(h2, many(20, 5000).slice(0, 8));
    r.receive(h2, many(20, 5000).slice(8, 16));
    expect(r.learnedSizes().total).toBe(150);
    r.neighbourDown(h1);
    expect(r.learnedSizes().total).toBe(60);
    r.stop();
  });

  it('ignores adverts from non-members, drops routes to non-members, and forgets routes to members that leave', () => {
    const clock = new ManualClock();
    const [a, h, x, y] = [node(1), node(4), node(9), node(10)];
    const members = new Set([h, x, y]);
    const r = new OverlayRouter({
      self: a, clock, isMember: (u) => members.has(u), maxRoutesPerNeighbour: 100, maxRoutes: 100,
      local: () => ({}), send: () => undefined, changed: () => undefined,
    });
    r.neighbourUp(h);
    r.receive(h, [{ uid: h, hops: 0 }, { uid: x, hops: 1 }, { uid: y, hops: 2 }, { uid: node(11), hops: 1 }]);
    expect(r.route(x)).toMatchObject({ via: h, hops: 2 });
    expect(r.route(node(11))).toBeUndefined();
    expect(r.counters.routes_dropped_not_member).toBe(1);
    members.delete(x);
    r.membersChanged();
    expect(r.route(x)).toBeUndefined();
    expect(r.route(y)).toMatchObject({ hops: 3 });
    members.add(x); // back within the advert's lifetime: its route returns without a new advert
    r.membersChanged();
    expect(r.route(x)).toMatchObject({ via: h, hops: 2 });
    members.delete(h);
    expect(r.receive(h, [{ uid: y, hops: 1 }])).toBe(false);
    expect(r.counters.adverts_not_member).toBe(1);
    expect(r.route(y)).toMatchObject({ hops: 3 }); // unchanged
    r.stop();
  });
});

describe('StructuredTopology', () => {
  const members = (n: number): Uid[] => Array.from({ length: n }, (_, i) => uidFromIp4(`10.254.${i >> 8}.${(i & 255) + 1}`));

  function graph(uids: Uid[]): Map<Uid, Set<Uid>> {
    const g = new Map<Uid, Set<Uid>>();
    for (const u of uids) {
      const t = new StructuredTopology(u);
      t.update(uids);
      g.set(u, new Set(t.wanted()));
    }
    return g;
  }

  function eccentricity(g: Map<Uid, Set<Uid>>, from: Uid): number {
    const dist = new Map<Uid, number>([[from, 0]]);
    const queue = [from];
    while (queue.length) {
      const u = queue.shift()!;
      for (const v of g.get(u)!) {
        if (!dist.has(v)) {
          dist.set(v, dist.get(u)! + 1);
          queue.push(v);
        }
      }
    }
    return dist.size === g.size ? Math.max(...dist.values()) : Infinity;
  }

  it.each([8, 32, 100, 300])('n = %i: symmetric, connected, O(log n) links and hops', (n) => {
    const uids = members(n);
    const g = graph(uids);
    for (const [u, vs] of g) for (const v of vs) expect(g.get(v)!.has(u)).toBe(true);
    const log2 = Math.ceil(Math.log2(n));
    const maxDegree = Math.max(...[...g.values()].map((s) => s.size));
    expect(maxDegree).toBeLessThanOrEqual(4 * log2);
    if (n >= 100) expect(maxDegree).toBeLessThan(n / 4); // far from a mesh
    const diameter = Math.max(...uids.map((u) => eccentricity(g, u)));
    expect(diameter).toBeLessThanOrEqual(log2);
  });

  it('keeps every member when there are only a few', () => {
    const uids = members(3);
    const t = new StructuredTopology(uids[0]!);
    t.update(uids);
    expect([...t.wanted()].sort()).toEqual(uids.slice(1).sort());
    t.update([]);
    expect(t.wanted().size).toBe(0);
  });
});
