// The delay-based limit in the lab (docs/architecture.md, "Latency under load"), on by default: a
// busy link's sender probes its queueing delay in band and the peer echoes; a link to a peer without
// it (--no-aqm, which neither advertises nor echoes probes, as an older datapath) carries traffic as
// before and is never sent a probe. Real datapaths with offload (the default), as offload.test.ts.
import { describe, expect, it } from 'vitest';
import type * as z from 'zod';
import { LinkStats } from '@tincan/protocol';
import { TinCanNode, eventuallyValue, inHost, labServers, connectNodes, linkOf, useNodes } from './support/tincan-node.js';

const { ice, xmpp } = labServers();
const MTU = 1376;

function node(host: string, ip4: string, n: number, args: string[] = []): TinCanNode {
  return new TinCanNode({ host, ip4, mtu: MTU, account: { jid: `node${n}@vpn.test`, password: `pw-node${n}` }, datapathArgs: args }, ice);
}

/** iperf3 TCP for 3 s from `from` to `to`, with pings from `from` during it; Mbit/s and the pings' replies. */
async function transfer(from: TinCanNode, to: TinCanNode): Promise<{ mbps: number; replies: number }> {
  const server = inHost(to.spec.host, ['iperf3', '-s', '-1', '-B', to.spec.ip4], 30_000);
  await new Promise((r) => setTimeout(r, 500));
  const client = inHost(from.spec.host, ['iperf3', '-c', to.spec.ip4, '-t', '3', '-J'], 30_000);
  await new Promise((r) => setTimeout(r, 1000));
  const ping = await inHost(from.spec.host, ['ping', '-c', '20', '-i', '0.05', '-W', '2', to.spec.ip4]);
  const mbps = JSON.parse((await client).stdout).end.sum_received.bits_per_second / 1e6;
  await server;
  return { mbps, replies: Number(/(\d+) received/.exec(ping.stdout)?.[1] ?? 0) };
}

async function pings(from: TinCanNode, to: TinCanNode): Promise<void> {
  const r = await inHost(from.spec.host, ['ping', '-c', '3', '-i', '0.2', '-W', '2', to.spec.ip4]);
  expect(r.stdout).toMatch(/3 received/);
}

/** `a`'s link to `b`: its stats (drops_aqm, probes_*; docs/rpc.md) and the last queueing delay measured. */
async function stats(a: TinCanNode, b: TinCanNode): Promise<z.infer<typeof LinkStats> & { queue: number | null }> {
  const l = await linkOf(a, b);
  return { ...LinkStats.parse(l.stats), queue: l.queue_delay_ms ?? null };
}

describe('delay-based limit (the default)', () => {
  const h1 = node('h1', '10.254.10.1', 61);
  const h2 = node('h2', '10.254.10.2', 62);
  const lan1 = node('lan1', '10.254.10.5', 55);
  const lan2 = node('lan2', '10.254.10.6', 56, ['--no-aqm']);

  useNodes([h1, h2, lan1, lan2], xmpp);

  it('both ends with it: the sender probes its busy link in band, the peer echoes, nothing is refused', async () => {
    await connectNodes(h1, h2);
    await pings(h1, h2);
    const idle = await stats(h1, h2);
    const t = await transfer(h1, h2);
    console.log(`iperf3 h1→h2 with the delay-based limit: ${t.mbps.toFixed(0)} Mbit/s, ${t.replies}/20 pings answered during it`);
    expect(t.mbps).toBeGreaterThan(1);
    const [s1, s2] = await Promise.all([stats(h1, h2), stats(h2, h1)]);
    console.log(`h1: probes ${s1.probes_out} sent, ${s1.probes_answered} answered, drops_aqm ${s1.drops_aqm}, queue ${s1.queue} ms; h2 echoed ${s2.probes_echoed}`);
    // Probes only while busy: a probe per 64 KiB sent, at most one per 5 ms.
    expect(s1.probes_out - idle.probes_out).toBeGreaterThan(50);
    expect(s1.probes_answered).toBeGreaterThan(s1.probes_out / 2);
    expect(s2.probes_echoed).toBeGreaterThanOrEqual(s1.probes_answered);
    expect(s1.queue).not.toBeNull();
    expect(s1.probes_bad + s2.probes_bad + s1.drops_malformed + s2.drops_malformed).toBe(0);
    // The probes are no packets: h2 took exactly what h1 sent (none lost inside the lab's tunnel).
    expect(s2.packets_in).toBe(s1.packets_out);
  });

  it('a link to a peer without it (--no-aqm): TCP and pings as ever, no probe sent, nothing malformed', async () => {
    await connectNodes(lan1, lan2);
    await pings(lan1, lan2);
    await pings(lan2, lan1);
    const forward = await transfer(lan1, lan2);
    const back = await transfer(lan2, lan1);
    console.log(`iperf3 lan1 (limit) → lan2 (--no-aqm): ${forward.mbps.toFixed(0)}, back ${back.mbps.toFixed(0)} Mbit/s`);
    expect(forward.mbps).toBeGreaterThan(1);
    expect(back.mbps).toBeGreaterThan(1);
    const [s1, s2] = await Promise.all([stats(lan1, lan2), stats(lan2, lan1)]);
    expect(s1.probes_out + s2.probes_out + s1.probes_echoed + s2.probes_echoed + s1.drops_aqm + s2.drops_aqm).toBe(0);
    expect(s1.drops_malformed + s2.drops_malformed).toBe(0);
    expect(s1.queue).toBeNull();
  });
});

describe('delay-based limit with --lanes 2', () => {
  const args = ['--lanes', '2'];
  const h1 = node('h1', '10.254.10.9', 63, args);
  const pub = node('pub', '10.254.10.10', 64, args);

  useNodes([h1, pub], xmpp);

  it('every lane link probes its own queue while it sends, and the link still carries flows both ways', async () => {
    await connectNodes(h1, pub);
    await eventuallyValue(async () => (await linkOf(h1, pub)).lanes_up === 1, 20_000, 'h1\'s lane link');
    await eventuallyValue(async () => (await linkOf(pub, h1)).lanes_up === 1, 20_000, 'pub\'s lane link');
    await pings(h1, pub);
    // New sets of 8 flows until both lanes carried some: the kernel puts each flow on a queue by its hash.
    let lanes: { bytes_out: number; probes_answered: number }[] = [];
    for (let i = 0; i < 3; i++) {
      const server = inHost(pub.spec.host, ['iperf3', '-s', '-1', '-B', pub.spec.ip4], 30_000);
      await new Promise((r) => setTimeout(r, 500));
      const client = await inHost(h1.spec.host, ['iperf3', '-c', pub.spec.ip4, '-t', '3', '-P', '8', '-J'], 30_000);
      await server;
      expect(JSON.parse(client.stdout).end.sum_received.bits_per_second / 1e6).toBeGreaterThan(1);
      await new Promise((r) => setTimeout(r, 1500)); // lanes report their counters once a second
      lanes = (await linkOf(h1, pub)).lanes ?? [];
      if (lanes.length === 2 && lanes.every((l) => l.bytes_out > 10e6)) break;
    }
    console.log(`h1 lanes with --lanes 2: ${JSON.stringify(lanes)}`);
    expect(lanes.length).toBe(2);
    for (const l of lanes) {
      expect(l.bytes_out).toBeGreaterThan(10e6);
      expect(l.probes_answered).toBeGreaterThan(10);
    }
    const [s1, s2] = await Promise.all([stats(h1, pub), stats(pub, h1)]);
    expect(s1.probes_answered).toBe(lanes[0]!.probes_answered + lanes[1]!.probes_answered);
    expect(s1.probes_bad + s2.probes_bad + s1.drops_malformed + s2.drops_malformed).toBe(0);
    await pings(pub, h1);
  });
});
