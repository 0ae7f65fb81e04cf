// Overlay routing end to end, in the lab: multi-hop overlay routing between controllers, router mode, and the
// structured topology of a group of 32 nodes (one lab host each).
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GroupNode, eventually, printLogsOnFailure, type LabInfo } from './support/group-node.js';
import { REPO_ROOT } from './harness/lab.js';
import { ns } from './harness/namespace.js';

const run = promisify(execFile);
const LAB_DIR = process.env.TINCAN_LAB_DIR ?? '/tmp/tincan-lab';
const lab = JSON.parse(readFileSync(`${LAB_DIR}/lab.json`, 'utf8')) as LabInfo;
const ip = (...args: string[]) => run('ip', args, { timeout: 10_000 });

const ttlOf = (pingOutput: string): number => Number(/ttl=(\d+)/.exec(pingOutput)?.[1] ?? NaN);
describe('multi-hop routing and router mode: h1 and h2 may not link, pub relays and routes a container subnet', () => {
  /** Every member's config grants pub the container subnet. */
  const ROUTER_MODE = { routers: { '10.254.6.4': ['10.44.0.0/24'] } };
  const CONTAINER_NS = ns('ct4');
  const h1 = new GroupNode({
    host: 'h1', ip4: '10.254.6.1', account: 'node21', networkId: 'gv-route', policy: 'proactive',
    routing: { deny: ['10.254.6.2'], ...ROUTER_MODE },
  }, lab);
  const h2 = new GroupNode({
    host: 'h2', ip4: '10.254.6.2', account: 'node22', networkId: 'gv-route', policy: 'proactive',
    routing: { deny: ['10.254.6.1'], ...ROUTER_MODE },
  }, lab);
  const pub = new GroupNode({
    host: 'pub', ip4: '10.254.6.4', account: 'node24', networkId: 'gv-route', policy: 'proactive',
    routing: { advertise: ['10.44.0.0/24'], ...ROUTER_MODE },
  }, lab);
  const nodes = [h1, h2, pub];
  printLogsOnFailure(() => nodes);

  beforeAll(async () => {
    // A "container" behind pub: its own namespace, no TinCan in it, pub is its router.
    await ip('netns', 'add', CONTAINER_NS);
    await ip('-n', ns('pub'), 'link', 'add', 'ct0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', CONTAINER_NS);
    await ip('-n', ns('pub'), 'addr', 'add', '10.44.0.1/24', 'dev', 'ct0');
    await ip('-n', ns('pub'), 'link', 'set', 'ct0', 'up');
    await ip('-n', CONTAINER_NS, 'addr', 'add', '10.44.0.2/24', 'dev', 'eth0');
    await ip('-n', CONTAINER_NS, 'link', 'set', 'eth0', 'up');
    await ip('-n', CONTAINER_NS, 'link', 'set', 'lo', 'up');
    await ip('-n', CONTAINER_NS, 'route', 'add', 'default', 'via', '10.44.0.1');
    await ip('netns', 'exec', ns('pub'), 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');
    for (const n of nodes) n.start();
    await eventually(async () => {
      const [a, b, c] = await Promise.all(nodes.map((n) => n.upLinks()));
      return a!.has(pub.uid) && b!.has(pub.uid) && c!.size === 2;
    }, 60_000, 'links h1-pub and h2-pub');
  });

  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.remove()));
    await ip('netns', 'exec', ns('pub'), 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=0').catch(() => undefined);
    await ip('-n', ns('pub'), 'link', 'del', 'ct0').catch(() => undefined);
    await ip('netns', 'del', CONTAINER_NS).catch(() => undefined);
  });

  it('h1 pings h2 through pub (sealed: the relay leaves the packets\' TTL alone), over IPv4 and IPv6', async () => {
    // Converged: the route carries h2's own announcement (pub may first advertise h2 before h2's
    // announcement reached it, without the address).
    await eventually(async () => h1.controllerStatus()?.routing.routes.some((r) => r.uid === h2.uid && r.via === pub.uid && r.ip4 === h2.spec.ip4) ?? false,
      30_000, 'h1 routes h2 via pub');
    const out = await h1.pingOutput(h2.spec.ip4, 3);
    expect(out).toMatch(/3 received/);
    expect(ttlOf(out)).toBe(64); // pub's datapath forwards sealed frames: only their outer hop limit goes down
    const out6 = await h1.pingOutput(h2.ip6, 2);
    expect(ttlOf(out6.replace('hlim=', 'ttl='))).toBe(64);
    // Never a direct link between them, and the relay counted what it forwarded.
    expect((await h1.upLinks()).has(h2.uid)).toBe(false);
    expect((await h2.upLinks()).has(h1.uid)).toBe(false);
    const route = h1.controllerStatus()!.routing.routes.find((r) => r.uid === h2.uid)!;
    expect(route).toMatchObject({ via: pub.uid, hops: 2, ip4: '10.254.6.2' });
    const pubState = await pub.status() as unknown as { counters: Record<string, number> };
    expect(pubState.counters.framesForwarded ?? pubState.counters.frames_forwarded).toBeGreaterThan(0);
  });

  it('a TCP transfer (iperf3) runs end to end across the relay', async () => {
    const server = run('ip', ['netns', 'exec', ns('h2'), 'iperf3', '-s', '-1', '-p', '7101'], { timeout: 30_000 }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 500));
    const { stdout } = await run('ip', ['netns', 'exec', ns('h1'), 'iperf3', '-c', h2.spec.ip4, '-p', '7101', '-t', '2', '-J'], { timeout: 30_000 });
    await server;
    const bps = (JSON.parse(stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
    console.log(`iperf3 TCP h1 -> pub -> h2: ${(bps / 1e6).toFixed(0)} Mbit/s`);
    expect(bps).toBeGreaterThan(1e6);
  });

  it('router mode: h1 reaches the container behind pub (no TinCan in it) by its own address, and back', async () => {
    await eventually(async () => h1.controllerStatus()?.routing.subnets.some((s) => s.subnet === '10.44.0.0/24' && s.uid === pub.uid) ?? false,
      30_000, 'h1 maps 10.44.0.0/24 to pub');
    const out = await h1.pingOutput('10.44.0.2', 3);
    expect(out).toMatch(/3 received/);
    // And from h2, whose packets to the container go to pub directly as well.
    expect(await h2.ping('10.44.0.2')).toBe(true);
    // The container sees h1's own virtual address (routed, not translated).
    const { stdout } = await run('ip', ['netns', 'exec', CONTAINER_NS, 'ping', '-c', '2', '-i', '0.2', '-W', '2', h1.spec.ip4], { timeout: 20_000 });
    expect(stdout).toMatch(/2 received/);
  });

  it('a member cannot pull a subnet outside routing.accept, or the underlay, into the VPN', async () => {
    // h1 refused nothing so far; pub's own controller never installs its own subnet.
    expect(h1.controllerStatus()!.routing.counters.subnets_refused ?? 0).toBe(0);
    expect(h1.controllerStatus()!.routing.counters.subnets_not_granted ?? 0).toBe(0);
    expect(pub.controllerStatus()!.routing.subnets).toEqual([]);
  });
});

describe('on demand: traffic flows through a relay while the direct link is being made', () => {
  const mk = (host: string, i: number, account: string) => new GroupNode({
    host, ip4: `10.254.8.${i}`, account, networkId: 'gv-demand', policy: 'on-demand',
  }, lab);
  const h1 = mk('h1', 1, 'node25');
  const h2 = mk('h2', 2, 'node26');
  const pub = mk('pub', 4, 'node27');
  const nodes = [h1, h2, pub];
  printLogsOnFailure(() => nodes);

  beforeAll(async () => {
    for (const n of nodes) n.start();
    // Traffic to pub makes the links h1-pub and h2-pub; routes to each other follow through pub.
    await eventually(async () => (await h1.ping(pub.spec.ip4, 1)) && (await h2.ping(pub.spec.ip4, 1)), 60_000, 'h1 and h2 reach pub');
    await eventually(async () => h1.controllerStatus()?.routing.routes.some((r) => r.uid === h2.uid && r.via === pub.uid && r.ip4 === h2.spec.ip4) ?? false,
      30_000, 'h1 routes h2 via pub');
  });

  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.remove()));
  });

  it('the first replies come through pub (relayed, sealed), later ones over the new direct link, none lost', async () => {
    expect((await h1.upLinks()).has(h2.uid)).toBe(false);
    const relayedIn = async () => ((await h1.status()) as unknown as { counters: Record<string, number> }).counters.framesRelayedIn ?? 0;
    const before = await relayedIn();
    // 15 s at 0.2 s: the controllers notice routed traffic at their next get_state poll (every 5 s),
    // then make the link (both sides want it: glare is resolved on the way).
    const out = await h1.pingOutput(h2.spec.ip4, 75);
    expect(out).toMatch(/75 received/);
    const during = await relayedIn();
    expect(during - before).toBeGreaterThan(0); // the first replies came through pub
    expect((await h1.upLinks()).has(h2.uid)).toBe(true);
    expect(await h1.pingOutput(h2.spec.ip4, 3)).toMatch(/3 received/);
    expect(await relayedIn()).toBe(during); // now over the direct link
  });
});

describe('structured topology: 32 nodes, O(log n) links per node and hops', () => {
  const N = 32;
  const nodes = Array.from({ length: N }, (_, i) => new GroupNode({
    host: `m${i + 1}`, ip4: `10.254.7.${i + 1}`, account: `node${33 + i}`, networkId: 'gv-ring', policy: 'on-demand',
    routing: { topology: 'structured' },
  }, lab));
  printLogsOnFailure(() => nodes.slice(0, 3));

  beforeAll(async () => {
    await run(join(REPO_ROOT, 'scripts/lab'), ['hosts', String(N)], { timeout: 60_000 });
    for (const n of nodes) n.start();
    await eventually(async () => {
      const ready = nodes.map((n) => n.controllerStatus()?.routing.routes.length ?? 0);
      return ready.every((r) => r === N - 1);
    }, 240_000, `every node routes to the ${N - 1} others`);
  }, 300_000);

  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.remove()));
    await run(join(REPO_ROOT, 'scripts/lab'), ['hosts', '0'], { timeout: 60_000 }).catch(() => undefined);
  }, 60_000);

  /** Up links per node, from the controllers' status files (tincanctl may time out on a busy machine). */
  function linkCounts(): number[] {
    return nodes.map((n) => n.controllerStatus()?.peers.filter((p) => p.link === 'up').length ?? 0);
  }

  it('links per node and route lengths stay within the O(log n) bound; a sample of pairs ping', async () => {
    const log2 = Math.ceil(Math.log2(N));
    const bound = 2 * (log2 + 2); // successors + ring fingers, both directions
    // Links made while the membership was still growing are trimmed once the ring settles.
    let links: number[] = [];
    await eventually(async () => {
      links = linkCounts();
      return Math.max(...links) <= bound;
    }, 120_000, `at most ${bound} links per node`).catch((err: unknown) => {
      const worst = nodes[links.indexOf(Math.max(...links))]!;
      const st = worst.controllerStatus() as unknown as { peers: unknown[]; routing: unknown; counters: unknown };
      console.log(`links per node: ${links.join(' ')}; worst ${worst.spec.host}:`, JSON.stringify(st.peers), JSON.stringify(st.counters));
      throw err;
    });
    const hops = nodes.flatMap((n) => n.controllerStatus()!.routing.routes.map((r) => r.hops));
    const maxHops = Math.max(...hops);
    const meanHops = hops.reduce((a, b) => a + b, 0) / hops.length;
    console.log(`structured, n=${N}: links per node max ${Math.max(...links)}, min ${Math.min(...links)}; ` +
      `route hops max ${maxHops}, mean ${meanHops.toFixed(2)} (log2 n = ${log2})`);
    expect(Math.min(...links)).toBeGreaterThanOrEqual(2);
    expect(maxHops).toBeLessThanOrEqual(log2);
    expect(nodes.every((n) => n.controllerStatus()!.routing.routes.length === N - 1)).toBe(true);
    // Every node pings its ring successor and the node halfway round (the longest routes), all at once.
    const pairs = nodes.flatMap((a, i) => [nodes[(i + 1) % N]!, nodes[(i + N / 2) % N]!].map((b) => [a, b] as const));
    const failures: string[] = [];
    await Promise.all(pairs.map(async ([a, b]) => {
      // A second try after a pause: on a busy 2-core machine a route may be changing at that moment.
      if (await a.ping(b.spec.ip4, 2)) return;
      await new Promise((r) => setTimeout(r, 3000));
      if (!(await a.ping(b.spec.ip4, 3))) failures.push(`${a.spec.host} -> ${b.spec.host}`);
    }));
    console.log(`structured, n=${N}: ${pairs.length - failures.length} of ${pairs.length} pings answered`);
    expect(failures).toEqual([]);
  }, 200_000);
});
