// Links that survive, in the lab: real tincan-datapath + tincan-groupvpn nodes while a NAT in front of
// them takes a new public address and forgets its mappings (nothing changes on the host: the link's
// own probes notice, and a new link is made beside the old one), and while the XMPP server is down
// (presence is then unknown, not "left": links stay). Each test prints what it measured.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GroupNode, eventually, printLogsOnFailure, type LabInfo } from './support/group-node.js';
import { pingDuring } from './support/ping.js';

const run = promisify(execFile);
const LAB = new URL('../scripts/lab', import.meta.url).pathname;
const lab = JSON.parse(readFileSync(`${process.env.TINCAN_LAB_DIR ?? '/tmp/tincan-lab'}/lab.json`, 'utf8')) as LabInfo;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A path change the hosts cannot see: the NAT's public address moves (or back) and its mappings go. */
async function renumber(nat: string, back = false): Promise<void> {
  await run(LAB, ['renumber', nat, ...(back ? ['back'] : [])], { timeout: 30_000 });
}

async function prosody(action: 'stop' | 'start'): Promise<void> {
  await run(LAB, ['server', action, 'prosody', ...(action === 'stop' ? ['--graceful'] : [])], { timeout: 60_000 });
}

type LinkLike = { uid: string; connected_ms?: number | null; repairs?: number; last_repair_reason?: string | null; health?: string };

describe('links that survive path changes and XMPP outages', () => {
  const a = new GroupNode({ host: 'h1', ip4: '10.254.12.1', account: 'node44', networkId: 'gv-survive' }, lab);
  const b = new GroupNode({ host: 'h2', ip4: '10.254.12.2', account: 'node45', networkId: 'gv-survive' }, lab);
  const c = new GroupNode({ host: 'h3', ip4: '10.254.12.3', account: 'node46', networkId: 'gv-survive' }, lab);
  const d = new GroupNode({ host: 'pub', ip4: '10.254.12.4', account: 'node47', networkId: 'gv-survive' }, lab);
  const nodes = [a, b, c, d];
  printLogsOnFailure(() => nodes);

  const link = async (from: GroupNode, to: GroupNode): Promise<LinkLike | undefined> => (await from.upLinks()).get(to.uid) as LinkLike | undefined;
  const uptime = async (n: GroupNode) => ((await n.status()).node as { uptime_s: number }).uptime_s;

  beforeAll(async () => {
    a.start();
    b.start();
    c.start();
    await eventually(async () => {
      const [la, lb] = [await a.upLinks(), await b.upLinks()];
      return la.has(b.uid) && lb.has(a.uid) && lb.has(c.uid);
    }, 90_000, 'links h1-h2 and h3-h2 up');
  });

  afterAll(async () => {
    for (const nat of ['nat1', 'nat2', 'nat3']) await renumber(nat, true).catch(() => undefined);
    await prosody('start').catch(() => undefined);
    await Promise.all(nodes.map((n) => n.remove()));
  });

  /** The gap a NAT change costs a ping from `from` to `to`, and what the link says about it after. */
  async function moveNats(from: GroupNode, to: GroupNode, nats: string[], back: boolean) {
    const before = await link(from, to);
    const up0 = await uptime(from);
    const r = await pingDuring(from, to.spec.ip4, 14, async () => {
      await Promise.all(nats.map((n) => renumber(n, back)));
    });
    const after = await link(from, to);
    console.log(`${nats.join('+')} ${back ? 'back' : 'renumbered'}: ${from.spec.host} -> ${to.spec.host}: longest ping gap ${r.maxGapMs} ms, ` +
      `${r.replies}/${r.sent} replies; link ${after?.connected_ms === before?.connected_ms ? 'kept' : 'replaced'}, ` +
      `repairs ${after?.repairs ?? 0} (${after?.last_repair_reason ?? '-'})`);
    expect(after).toBeDefined();
    expect(r.maxGapMs).toBeLessThanOrEqual(5000);
    // Nothing restarted, the virtual addresses are the same.
    expect(await uptime(from)).toBeGreaterThanOrEqual(up0 + 10);
    expect(((await from.status()).node as { ip4?: string }).ip4).toBe(`${from.spec.ip4}/16`);
    expect(await to.ping(from.spec.ip4)).toBe(true);
    return { r, before, after };
  }

  it('h1\'s NAT moves to a new public address and forgets its mappings: pings resume within seconds', async () => {
    const { after } = await moveNats(a, b, ['nat1'], false);
    expect(after!.repairs).toBeGreaterThanOrEqual(1);
    expect(a.datapath!.running && a.controller!.running && b.datapath!.running && b.controller!.running).toBe(true);
  });
});
