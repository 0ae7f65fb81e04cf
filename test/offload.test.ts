// TUN segmentation offload in the lab (docs/architecture.md, "Segmentation offload"), on by default.
// Two datapaths with it on a direct link send TCP super-packets whole ([virtio_net_hdr][packet] on the
// compact channel); a node linked to one started with --no-offload segments them in software. Real
// datapaths at vNIC MTU 1376, as framing.test.ts.
import { describe, expect, it } from 'vitest';
import { TinCanNode, eventuallyValue, inHost, labServers, connectNodes, linkOf, linkUp, useNodes } from './support/tincan-node.js';

const { ice, xmpp } = labServers();
const MTU = 1376;

function node(host: string, ip4: string, n: number, offload: boolean): TinCanNode {
  return new TinCanNode(
    { host, ip4, mtu: MTU, account: { jid: `node${n}@vpn.test`, password: `pw-node${n}` }, ...(offload ? {} : { datapathArgs: ['--no-offload'] }) },
    ice,
  );
}

/** iperf3 TCP for 3 s, `parallel` flows, from `from` to `to` (IPv4, or IPv6 with `v6`), Mbit/s received. */
async function iperf(from: TinCanNode, to: TinCanNode, v6 = false, parallel = 1): Promise<number> {
  const address = v6 ? to.ip6 : to.spec.ip4;
  const server = inHost(to.spec.host, ['iperf3', '-s', '-1', '-B', address], 30_000);
  await new Promise((r) => setTimeout(r, 500));
  const client = await inHost(from.spec.host, ['iperf3', '-c', address, '-t', '3', '-P', String(parallel), '-J'], 30_000);
  await server;
  return JSON.parse(client.stdout).end.sum_received.bits_per_second / 1e6;
}

async function pings(from: TinCanNode, to: TinCanNode): Promise<void> {
  const v4 = await inHost(from.spec.host, ['ping', '-M', 'do', '-s', String(MTU - 28), '-c', '3', '-i', '0.2', '-W', '2', to.spec.ip4]);
  expect(v4.stdout).toMatch(/3 received/);
  const v6 = await inHost(from.spec.host, ['ping', '-6', '-c', '3', '-i', '0.2', '-W', '2', to.ip6]);
  expect(v6.stdout).toMatch(/3 received/);
}

async function counters(n: TinCanNode): Promise<Record<string, number>> {
  return (await n.state()).counters as Record<string, number>;
}

describe(`offload (the default), vNIC MTU ${MTU}`, () => {
  const h1 = node('h1', '10.254.8.1', 57, true);
  const h2 = node('h2', '10.254.8.2', 58, true);
  const lan1 = node('lan1', '10.254.8.5', 59, true);
  const lan2 = node('lan2', '10.254.8.6', 60, false);

  useNodes([h1, h2, lan1, lan2], xmpp);

  it('both ends with offload by default: super-packets go whole both ways, TCP over IPv4 and IPv6, pings both ways', async () => {
    await connectNodes(h1, h2);
    await pings(h1, h2);
    await pings(h2, h1);
    const forward = await iperf(h1, h2);
    const back = await iperf(h2, h1);
    const v6 = await iperf(h1, h2, true);
    console.log(`iperf3 TCP, both offload, MTU ${MTU}: h1→h2 ${forward.toFixed(0)}, h2→h1 ${back.toFixed(0)}, IPv6 h1→h2 ${v6.toFixed(0)} Mbit/s`);
    for (const mbps of [forward, back, v6]) expect(mbps).toBeGreaterThan(1);
    const [c1, c2] = await Promise.all([counters(h1), counters(h2)]);
    expect(c1.offloadSuperPacketsOut).toBeGreaterThan(100);
    expect(c2.offloadSuperPacketsIn).toBeGreaterThan(100);
    expect(c2.offloadSuperPacketsOut).toBeGreaterThan(100);
    expect(c1.offloadSegmentedOut! + c2.offloadSegmentedOut!).toBe(0); // nothing needed software segmentation
    expect(c1.framesMalformed! + c2.framesMalformed! + c1.tunMalformed! + c2.tunMalformed!).toBe(0);
  });

  it('one end with offload, the other --no-offload: TCP both ways, the offload end segments in software', async () => {
    await connectNodes(lan1, lan2);
    await pings(lan1, lan2);
    await pings(lan2, lan1);
    const forward = await iperf(lan1, lan2);
    const back = await iperf(lan2, lan1);
    console.log(`iperf3 TCP, lan1 offload → lan2 --no-offload: ${forward.toFixed(0)}, back ${back.toFixed(0)} Mbit/s`);
    expect(forward).toBeGreaterThan(1);
    expect(back).toBeGreaterThan(1);
    expect((await lan1.state()).node.offload).toBe(true);
    expect((await lan2.state()).node.offload).toBe(false);
    const [c1, c2] = await Promise.all([counters(lan1), counters(lan2)]);
    expect(c1.offloadSegmentedOut).toBeGreaterThan(100);
    expect(c1.offloadSuperPacketsOut).toBe(0);
    expect(c2.offloadSuperPacketsIn ?? 0).toBe(0);
    expect(c2.framesMalformed! + c1.framesMalformed!).toBe(0);
  });
});

describe('offload with --lanes 2', () => {
  const args = ['--lanes', '2'];
  const h1 = new TinCanNode({ host: 'h1', ip4: '10.254.8.9', mtu: MTU, account: { jid: 'node63@vpn.test', password: 'pw-node63' }, datapathArgs: args }, ice);
  const pub = new TinCanNode({ host: 'pub', ip4: '10.254.8.10', mtu: MTU, account: { jid: 'node64@vpn.test', password: 'pw-node64' }, datapathArgs: args }, ice);

  useNodes([h1, pub], xmpp);

  it('every lane sends super-packets whole on its own link; flows both ways', async () => {
    await connectNodes(h1, pub);
    for (const [a, b] of [[h1, pub], [pub, h1]] as const) {
      await eventuallyValue(async () => (await linkOf(a, b)).lanes_up === 1, 20_000, `${a.spec.host}'s lane link`);
    }
    await pings(h1, pub);
    // New sets of 8 flows until both the primary and the lane process sent super-packets whole: the
    // kernel puts each flow on a queue by its hash.
    let c: Record<string, number> = {};
    for (let i = 0; i < 3; i++) {
      const mbps = await iperf(h1, pub, false, 8);
      console.log(`iperf3 -P 8 h1→pub, offload, --lanes 2: ${mbps.toFixed(0)} Mbit/s`);
      expect(mbps).toBeGreaterThan(1);
      await new Promise((r) => setTimeout(r, 1500)); // lanes report their counters once a second
      c = await counters(h1);
      if (c.offloadSuperPacketsOut! > 100 && c.lanes_offloadSuperPacketsOut! > 100) break;
    }
    expect(c.offloadSuperPacketsOut).toBeGreaterThan(100);
    expect(c.lanes_offloadSuperPacketsOut).toBeGreaterThan(100);
    const p = await counters(pub);
    expect(p.offloadSuperPacketsIn! + p.lanes_offloadSuperPacketsIn!).toBeGreaterThan(200);
    expect(p.lanes_offloadSuperPacketsIn).toBeGreaterThan(100);
    for (const x of [c, p]) {
      expect(x.framesMalformed! + x.tunMalformed! + x.lanes_framesMalformed! + x.lanes_tunMalformed!).toBe(0);
    }
    expect(await iperf(pub, h1)).toBeGreaterThan(1);
  });
});
