// Faults and mobility, in the lab: real tincan-datapath + tincan-groupvpn nodes while the
// XMPP server restarts, the TURN server is down, a peer vanishes without a goodbye, and a NAT forgets
// its mappings. Each test prints the recovery time it measured.
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GroupNode, eventually, printLogsOnFailure, type LabInfo } from './support/group-node.js';
import { pingDuring as pingGap } from './support/ping.js';
import { ns } from './harness/namespace.js';

const run = promisify(execFile);
const LAB = new URL('../scripts/lab', import.meta.url).pathname;
const lab = JSON.parse(readFileSync(`${process.env.TINCAN_LAB_DIR ?? '/tmp/tincan-lab'}/lab.json`, 'utf8')) as LabInfo;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function inNs(host: string, cmd: string[], timeoutMs = 30_000) {
  return run('ip', ['netns', 'exec', ns(host), ...cmd], { timeout: timeoutMs, maxBuffer: 16 << 20 });
}

async function labServer(action: 'stop' | 'start' | 'restart', name: 'prosody' | 'coturn'): Promise<void> {
  await run(LAB, ['server', action, name], { timeout: 60_000 });
}

const connectedMs = (l: unknown) => (l as { connected_ms?: number | null } | undefined)?.connected_ms;

describe('GroupVPN under faults and mobility', () => {
  const a = new GroupNode({ host: 'h1', ip4: '10.254.6.1', account: 'node41', networkId: 'gv-faults' }, lab);
  const b = new GroupNode({ host: 'h2', ip4: '10.254.6.2', account: 'node42', networkId: 'gv-faults' }, lab);
  const c = new GroupNode({ host: 'pub', ip4: '10.254.6.3', account: 'node43', networkId: 'gv-faults' }, lab);
  const nodes = [a, b, c];
  printLogsOnFailure(() => nodes);

  beforeAll(async () => {
    a.start();
    b.start();
    await eventually(async () => (await a.upLinks()).has(b.uid) && (await b.upLinks()).has(a.uid), 60_000, 'h1-h2 link up');
  });

  afterAll(async () => {
    await labServer('start', 'coturn').catch(() => undefined);
    await labServer('start', 'prosody').catch(() => undefined);
    await Promise.all(nodes.map((n) => n.remove()));
  });

  it('a TURN server outage does not break a direct link', async () => {
    const link = (await a.upLinks()).get(b.uid)!;
    expect([link.local_candidate, link.remote_candidate]).not.toContain('relay');
    await labServer('stop', 'coturn');
    try {
      const r = await pingGap(a, b.spec.ip4, 21, () => sleep(20_000));
      console.log(`TURN outage: ${r.replies} ping replies in 20 s, longest gap ${r.maxGapMs} ms`);
      expect(r.replies).toBeGreaterThan(180);
      expect(r.maxGapMs).toBeLessThan(1000);
      expect(connectedMs((await a.upLinks()).get(b.uid))).toBe(connectedMs(link));
    } finally {
      await labServer('start', 'coturn');
    }
  });

  it('restarting prosody during an iperf3 run neither stops the transfer nor signaling afterwards', async () => {
    const srv = spawn('ip', ['netns', 'exec', b.ns, 'iperf3', '-s', '-1', '-B', b.spec.ip4], { stdio: 'ignore' });
    try {
      await sleep(500);
      const client = inNs(a.spec.host, ['iperf3', '-c', b.spec.ip4, '-t', '12', '-i', '1', '-J'], 40_000);
      await sleep(3000);
      const t0 = Date.now();
      await labServer('restart', 'prosody');
      const back = Date.now() - t0;
      const { stdout } = await client;
      const intervals = (JSON.parse(stdout) as { intervals: { sum: { bits_per_second: number } }[] }).intervals
        .map((i) => Math.round(i.sum.bits_per_second / 1e6));
      console.log(`prosody restart (${back} ms): iperf3 Mbit/s per 1-s interval: ${intervals.join(' ')}`);
      expect(intervals.length).toBeGreaterThanOrEqual(12);
      for (const x of intervals) expect(x).toBeGreaterThan(0);
    } finally {
      srv.kill();
    }
    // Both controllers are back on XMPP; a node that starts only now links to both.
    const online = async (n: GroupNode) => ((await n.status()) as unknown as { xmpp: { state: string } }).xmpp.state === 'online';
    await eventually(async () => (await online(a)) && (await online(b)), 30_000, 'h1 and h2 back online');
    const t1 = Date.now();
    c.start();
    await eventually(async () => {
      const l = await c.upLinks();
      return l.has(a.uid) && l.has(b.uid);
    }, 60_000, 'the new node linked to both');
    console.log(`after the prosody restart, a new node linked to both in ${Date.now() - t1} ms`);
    expect(await c.ping(a.spec.ip4)).toBe(true);
    expect(await c.ping(b.spec.ip4)).toBe(true);
  });

  it('a peer that vanishes (kill -9, no goodbye) is trimmed by the others within 30 s', async () => {
    if (!c.datapath) c.start();
    await eventually(async () => (await a.upLinks()).has(c.uid) && (await b.upLinks()).has(c.uid), 60_000, 'links to pub up');
    const t0 = Date.now();
    await Promise.all([c.controller!.stop('SIGKILL'), c.datapath!.stop('SIGKILL')]);
    const gone = async (n: GroupNode) => {
      try {
        return !(await n.status()).links.some((l) => l.uid === c.uid);
      } catch {
        return false;
      }
    };
    await eventually(async () => (await gone(a)) && (await gone(b)), 30_000, 'the vanished peer\'s links trimmed');
    console.log(`vanished peer: links trimmed by both others after ${Date.now() - t0} ms`);
    expect(await a.ping(b.spec.ip4)).toBe(true);
  });
  it('mobility: flushing h1\'s NAT conntrack during a ping loses at most a few seconds', async () => {
    const before = (await a.upLinks()).get(b.uid)!;
    const r = await pingGap(a, b.spec.ip4, 25, async () => {
      await run('ip', ['netns', 'exec', ns('nat1'), 'conntrack', '-F'], { timeout: 10_000 }).catch(() => undefined);
      await sleep(1000);
    });
    const after = (await a.upLinks()).get(b.uid);
    console.log(`conntrack flush on nat1: longest ping gap ${r.maxGapMs} ms (${r.replies} replies), link ${connectedMs(after) === connectedMs(before) ? 'kept' : 'remade'}`);
    expect(r.maxGapMs).toBeLessThan(10_000);
    expect(after).toBeDefined();
    expect(await a.ping(b.spec.ip4)).toBe(true);
  });

  it('mobility: changing h1\'s underlying address during a ping: it resumes within 10 s, same virtual IP', async () => {
    const sh = (cmd: string) => run('ip', ['netns', 'exec', a.ns, 'sh', '-c', cmd], { timeout: 10_000 });
    let t0 = 0;
    try {
      const r = await pingGap(a, b.spec.ip4, 25, async () => {
        t0 = Date.now();
        await sh('sysctl -qw net.ipv4.conf.eth0.promote_secondaries=1 && ip addr add 10.1.0.9/24 dev eth0 && '
          + 'ip addr del 10.1.0.2/24 dev eth0 && ip route replace default via 10.1.0.1 src 10.1.0.9');
        await sleep(1000);
      });
      console.log(`address change 10.1.0.2 -> 10.1.0.9 on h1: longest ping gap ${r.maxGapMs} ms (${r.replies} replies)`);
      expect(r.lastMs).toBeGreaterThan(t0 + 2000); // replies again after the change
      expect(r.maxGapMs).toBeLessThan(10_000);
      const status = await a.status();
      expect((status.node as { ip4?: string }).ip4).toBe(`${a.spec.ip4}/16`);
      expect(await b.ping(a.spec.ip4)).toBe(true);
    } finally {
      await sh('ip addr add 10.1.0.2/24 dev eth0; ip addr del 10.1.0.9/24 dev eth0; ip route replace default via 10.1.0.1; '
        + 'sysctl -qw net.ipv4.conf.eth0.promote_secondaries=0').catch(() => undefined);
    }
  });
});
