// `tincan-datapath --lanes 2` in the lab: two datapaths (h1 behind a cone NAT, pub on the emulated
// internet) each run one lane process on a second queue of a multi-queue vNIC; the lane processes
// link to each other in-band over the primary link, carry their share of the flows, report their
// counters into get_state, and a killed lane process is restarted while its flows fall back.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DATAPATH_NODE_FLAGS } from '@tincan/datapath/node-flags';
import { ARENAS_BEFORE_CAP, threadArenas } from './support/arenas.js';
import { CTL_BIN, TinCanNode, eventuallyValue, connectNodes, linkUp } from './support/tincan-node.js';
import { labInfo } from './harness/lab.js';
import { ns } from './harness/namespace.js';

const run = promisify(execFile);
const lab = labInfo();
const ice = { stun: [lab.stun], turn: [{ address: lab.turn.address, username: lab.turn.username, password: lab.turn.password }] };
const xmpp = { host: lab.xmpp.host, port: lab.xmpp.port, ca_file: lab.xmpp.ca_file };

interface LaneInfo { lane: number; up: boolean; packets_in: number; packets_out: number; bytes_in: number; bytes_out: number }
interface LinkWithLanes {
  uid: string;
  state: string;
  local_candidate: string | null;
  remote_candidate: string | null;
  stats: Record<string, number>;
  lanes_up?: number;
  lanes?: LaneInfo[];
}

async function inHost(host: string, cmd: string[], timeoutMs = 30_000): Promise<{ stdout: string; stderr: string }> {
  return run('ip', ['netns', 'exec', ns(host), ...cmd], { timeout: timeoutMs });
}

async function linkOf(n: TinCanNode, peer: TinCanNode): Promise<LinkWithLanes> {
  const s = await n.state();
  const l = (s.links as unknown as LinkWithLanes[]).find((x) => x.uid === peer.uid);
  if (!l) throw new Error(`${n.spec.host} has no link to ${peer.spec.host}`);
  return l;
}

/** The lane processes a datapath forked (its direct children). */
async function lanePids(n: TinCanNode): Promise<number[]> {
  const { stdout } = await run('pgrep', ['-P', String(n.datapath.child.pid)]).catch(() => ({ stdout: '' }));
  return stdout.split('\n').filter(Boolean).map(Number);
}

/**
 * The multi-queue TUN puts each flow on a lane by the flow's hash, so a few flows can all land on
 * one lane (4 flows on 2 lanes: 1 run in 8). Runs fresh sets of 8 flows from a to b (up to 3) until
 * `done` holds for a's link's lanes; returns that link (the last one read, for the caller to assert).
 */
async function untilLanesCarry(a: TinCanNode, b: TinCanNode, done: (lanes: LaneInfo[]) => boolean): Promise<LinkWithLanes> {
  let l = await linkOf(a, b);
  for (let i = 0; i < 3; i++) {
    await iperf(a.spec.host, b.spec.host, b.spec.ip4, 8, 2);
    await new Promise((r) => setTimeout(r, 1500)); // stats arrive from the lanes once a second
    l = await linkOf(a, b);
    if (l.lanes && done(l.lanes)) break;
  }
  return l;
}

async function iperf(from: string, to: string, toIp: string, parallel: number, seconds: number): Promise<number> {
  const server = inHost(to, ['iperf3', '-s', '-1', '-B', toIp], 60_000);
  await new Promise((r) => setTimeout(r, 500));
  const client = await inHost(from, ['iperf3', '-c', toIp, '-P', String(parallel), '-t', String(seconds), '-J'], 60_000);
  await server;
  return JSON.parse(client.stdout).end.sum_received.bits_per_second / 1e6;
}

describe('tincan-datapath --lanes 2 in the lab', () => {
  const h1 = new TinCanNode({ host: 'h1', ip4: '10.254.0.1', account: { jid: 'node1@vpn.test', password: 'pw-node1' } }, ice);
  const pub = new TinCanNode({ host: 'pub', ip4: '10.254.0.6', account: { jid: 'node6@vpn.test', password: 'pw-node6' } }, ice);
  const lan1 = new TinCanNode({ host: 'lan1', ip4: '10.254.0.4', account: { jid: 'node4@vpn.test', password: 'pw-node4' } }, ice);
  const all = [h1, pub, lan1];

  beforeAll(async () => {
    // h1 with the malloc arena cap (off by default), which its lane process must take too
    await Promise.all([h1, pub].map((n) => n.start({ datapathArgs: ['--lanes', '2', ...(n === h1 ? ['--malloc-arenas', '2'] : [])] })));
    await lan1.start(); // --lanes 1, the default
    await Promise.all(all.map((n) => n.configure(xmpp)));
  });

  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') for (const n of all) console.log(n.logs());
  });

  afterAll(async () => {
    const pids = (await Promise.all(all.map((n) => lanePids(n)))).flat();
    await Promise.all(all.map((n) => n.stop()));
    // Stopping a datapath stops its lanes: no orphans.
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  });

  it('sets up one lane link per peer in-band, carries flows on every lane and counts them on the link', async () => {
    expect(await lanePids(h1)).toHaveLength(1);
    await connectNodes(h1, pub);
    for (const [a, b] of [[h1, pub], [pub, h1]] as const) {
      await eventuallyValue(async () => (await linkOf(a, b)).lanes_up === 1, 20_000, `${a.spec.host}'s lane link to ${b.spec.host}`);
    }

    const ping = await inHost('h1', ['ping', '-c', '5', '-i', '0.2', '-W', '2', '10.254.0.6']);
    expect(ping.stdout).toMatch(/5 received/);

    const mbps = await iperf('h1', 'pub', '10.254.0.6', 4, 4);
    console.log(`iperf3 -P 4 h1→pub with --lanes 2: ${mbps.toFixed(0)} Mbit/s`);
    expect(mbps).toBeGreaterThan(1);

    // The kernel puts each flow on a queue by its hash: new flows until every lane got some.
    const l = await untilLanesCarry(h1, pub, (lanes) => lanes.every((x) => x.packets_out > 100));
    expect(l.lanes).toHaveLength(2);
    for (const lane of l.lanes!) {
      expect(lane.up).toBe(true);
      expect(lane.packets_out, `lane ${lane.lane} carried nothing`).toBeGreaterThan(100);
    }
    // The link's counters are the sum of its lanes'.
    expect(l.stats.packets_out).toBe(l.lanes!.reduce((n, x) => n + x.packets_out, 0));
    expect(l.stats.bytes_in).toBe(l.lanes!.reduce((n, x) => n + x.bytes_in, 0));
    const s = await h1.state();
    expect(s.counters.lanes_tunPacketsIn).toBeGreaterThan(100);
    expect(s.counters.lanes_ready).toBe(1);
    // tincanctl status shows the lanes up per link.
    const status = await inHost('h1', [process.execPath, CTL_BIN, '--state-dir', h1.stateDir, 'status']);
    expect(status.stdout).toMatch(/FRAMES\s+LANES/);
    expect(status.stdout).toMatch(/\s2\/2\s/);
  });

  it("runs the datapath and its lane process with the datapath's node flags", async () => {
    const argvOf = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const dp = argvOf(h1.datapath.child.pid!);
    const [lane] = await lanePids(h1);
    const laneArgv = argvOf(lane!);
    for (const argv of [dp, laneArgv]) {
      const program = argv.findIndex((a) => a.endsWith('.js'));
      expect(argv.slice(1, program), argv.join(' ')).toEqual(expect.arrayContaining([...DATAPATH_NODE_FLAGS]));
    }
    expect(laneArgv.some((a) => a.endsWith('/lane-main.js'))).toBe(true);
    expect(h1.datapath.log.join('\n')).not.toContain('"missing"');
  });

  it('caps the malloc arenas of the datapath and of its lane process with --malloc-arenas, each carrying a link (native-heap.ts)', async () => {
    const [lane] = await lanePids(h1);
    // each has node-datachannel loaded and its threads running (the first test's lane links are up)
    for (const pid of [h1.datapath.child.pid!, lane!]) {
      expect(readFileSync(`/proc/${pid}/maps`, 'utf8')).toContain('node_datachannel');
      expect(threadArenas(pid), `thread arenas of ${pid}`).toBeLessThanOrEqual(ARENAS_BEFORE_CAP);
    }
  });

  it('keeps traffic flowing when a lane process dies, and restarts it', async () => {
    const [pid] = await lanePids(h1);
    expect(pid).toBeGreaterThan(0);
    const before = (await h1.state()).counters.lanes_restarts ?? 0;
    process.kill(pid!, 'SIGKILL');
    // Its queue detached: the kernel moves its flows to the primary's queue at once.
    const mbps = await iperf('h1', 'pub', '10.254.0.6', 4, 2);
    console.log(`iperf3 -P 4 h1→pub right after killing a lane: ${mbps.toFixed(0)} Mbit/s`);
    expect(mbps).toBeGreaterThan(1);
    const ping = await inHost('h1', ['ping', '-c', '3', '-i', '0.2', '-W', '2', '10.254.0.6']);
    expect(ping.stdout).toMatch(/3 received/);

    await eventuallyValue(async () => ((await h1.state()).counters.lanes_restarts ?? 0) > before, 10_000, 'the lane restart');
    const [again] = await lanePids(h1);
    expect(again).toBeGreaterThan(0);
    expect(again).not.toBe(pid);
    for (const [a, b] of [[h1, pub], [pub, h1]] as const) {
      await eventuallyValue(async () => (await linkOf(a, b)).lanes_up === 1, 30_000, `${a.spec.host}'s lane link back up`);
    }
    const lane1Before = (await linkOf(h1, pub)).lanes![1]!.packets_out;
    const l = await untilLanesCarry(h1, pub, (lanes) => lanes[1]!.packets_out - lane1Before > 100);
    expect(l.lanes![1]!.packets_out - lane1Before, 'the restarted lane carries traffic again').toBeGreaterThan(100);
  });

  it('closes the lane links with the primary link (trim_link)', async () => {
    await h1.call('trim_link', { uid: pub.uid });
    await eventuallyValue(async () => {
      const l = (await pub.state()).links.find((x) => x.uid === h1.uid) as LinkWithLanes | undefined;
      return !l || l.state !== 'up' || l.lanes_up === 0;
    }, 30_000, 'pub to see the link go');
    const s = await h1.state();
    expect(s.links.find((x) => x.uid === pub.uid)).toBeUndefined();
  });

  it('links a --lanes 2 datapath with a --lanes 1 one as a plain link', async () => {
    await connectNodes(h1, lan1);
    const ping = await inHost('h1', ['ping', '-c', '5', '-i', '0.2', '-W', '2', '10.254.0.4']);
    expect(ping.stdout).toMatch(/5 received/);
    // 8 flows (+ iperf3's control connection): the chance that the flow hash puts none on queue 1 is 2^-9.
    const mbps = await iperf('h1', 'lan1', '10.254.0.4', 8, 2);
    expect(mbps).toBeGreaterThan(1);
    const l = await linkOf(h1, lan1);
    expect(l.state).toBe('up');
    expect([l.local_candidate, l.remote_candidate]).not.toContain('relay'); // lanes would be possible, but lan1 runs one
    expect(l.lanes_up).toBe(0);
    expect(l.lanes![1]!.packets_out).toBe(0);
    // Lane 1's flows went through the primary (and iperf3 ran, so they reached the link).
    expect((await h1.state()).counters.lanes_fallbackToPrimary).toBeGreaterThan(0);
    const plain = await linkOf(lan1, h1);
    expect(plain.lanes).toBeUndefined();
  });

  it('leaves no lane process behind when the datapath itself is killed', async () => {
    const pids = await lanePids(pub);
    expect(pids).toHaveLength(1);
    await pub.datapath.stop('SIGKILL');
    await eventuallyValue(async () => pids.every((pid) => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    }), 10_000, 'the orphaned lane process to exit');
  });
});
