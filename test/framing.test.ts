// Framing overhead, in the lab: compact frames on direct links and the larger vNIC MTU they allow.
// Real datapaths at vNIC MTU 1376 (RtcConfig mtu 1500): a full-size packet fits one SCTP packet only
// as a compact frame; full frames (relayed, multi-hop) are split by SCTP and must still arrive.
import { describe, expect, it } from 'vitest';
import { CTL_BIN, TinCanNode, inHost, iperfTcp, labServers, connectNodes, linkOf, linkUp, trustEachOther, useNodes } from './support/tincan-node.js';
import { eventually } from './support/group-node.js';

const { ice, xmpp } = labServers();
const MTU = 1376;
/** ICMP payload of a full-size packet: 1376 − 20 (IPv4) − 8 (ICMP). */
const FULL_PING = String(MTU - 28);

function node(host: string, ip4: string, n: number): TinCanNode {
  return new TinCanNode({ host, ip4, mtu: MTU, account: { jid: `node${n}@vpn.test`, password: `pw-node${n}` } }, ice);
}

/** Five full-size pings that may not be fragmented (DF): all must come back. */
async function fullSizePing(from: TinCanNode, to: TinCanNode): Promise<string> {
  const { stdout } = await inHost(from.spec.host, ['ping', '-M', 'do', '-s', FULL_PING, '-c', '5', '-i', '0.2', '-W', '2', to.spec.ip4]);
  expect(stdout).toMatch(new RegExp(`${Number(FULL_PING) + 8} bytes from`));
  expect(stdout).toMatch(/5 received/);
  return stdout;
}

async function framingIs(n: TinCanNode, peer: TinCanNode, framing: 'compact' | 'full'): Promise<void> {
  await eventually(async () => (await linkOf(n, peer)).framing === framing, 10_000, `${n.spec.host} → ${peer.spec.host} framing ${framing}`);
}

const stripCapability = (sdp: string) => sdp.replace(/^a=x-tincan-frame:.*\r?\n/m, '');

describe(`compact frames on direct links, vNIC MTU ${MTU}`, () => {
  const h1 = node('h1', '10.254.7.1', 51);
  const h2 = node('h2', '10.254.7.2', 52);
  const pub = node('pub', '10.254.7.3', 53);
  const h3 = node('h3', '10.254.7.4', 54);
  const lan1 = node('lan1', '10.254.7.5', 55);
  const lan2 = node('lan2', '10.254.7.6', 56);
  const all = [h1, h2, pub, h3, lan1, lan2];

  useNodes(all, xmpp);

  it('between cone NATs: compact both ways, full-size DF pings both ways, TCP, and the compact counters move', async () => {
    await connectNodes(h1, h2);
    await Promise.all([framingIs(h1, h2, 'compact'), framingIs(h2, h1, 'compact')]);
    expect((await h1.state()).node.mtu).toBe(MTU);
    await fullSizePing(h1, h2);
    await fullSizePing(h2, h1);
    const ping6 = await inHost('h2', ['ping', '-6', '-M', 'do', '-s', String(MTU - 48), '-c', '3', '-i', '0.2', '-W', '2', h1.ip6]);
    expect(ping6.stdout).toMatch(/3 received/);
    const mbps = await iperfTcp(h1, h2);
    console.log(`iperf3 TCP h1→h2, compact frames, vNIC MTU ${MTU}: ${mbps.toFixed(0)} Mbit/s`);
    expect(mbps).toBeGreaterThan(1);
    const out = await linkOf(h1, h2);
    const into = await linkOf(h2, h1);
    expect(out.stats.compact_out).toBeGreaterThan(1000);
    expect(out.stats.compact_out! / out.stats.packets_out!).toBeGreaterThan(0.99); // every packet of ours went compact
    expect(into.stats.compact_in).toBeGreaterThan(1000);
    expect(into.stats.drops_spoofed! + into.stats.drops_malformed!).toBe(0);
    const status = await inHost('h1', [process.execPath, CTL_BIN, '--state-dir', h1.stateDir, 'status']);
    expect(status.stdout).toMatch(/FRAMES/);
    expect(status.stdout.split('\n').find((l) => l.startsWith(h2.uid.slice(0, 12)))).toMatch(/ compact /);
  });

  it('a relayed (multi-hop) path keeps full frames (sealed), split by SCTP at this MTU, and still carries full-size DF pings and TCP', async () => {
    // h1 and pub have no link: each routes the other via h2, which forwards (transit on everywhere:
    // the ends accept frames h2 relays for the other).
    await connectNodes(h2, pub);
    await h1.call('set_remote_ip', { uid: pub.uid, ip4: pub.spec.ip4, ip6: pub.ip6 });
    await pub.call('set_remote_ip', { uid: h1.uid, ip4: h1.spec.ip4, ip6: h1.ip6 });
    await h1.call('set_route', { uid: pub.uid, via: h2.uid });
    await pub.call('set_route', { uid: h1.uid, via: h2.uid });
    for (const n of [h1, h2, pub]) await n.call('set_transit', { enabled: true });
    await trustEachOther(h1, pub); // relayed frames are sealed end to end (docs/security.md)
    const before = (await h2.state()).counters;
    const relayBefore = await linkOf(h2, pub);
    const out = await fullSizePing(h1, pub);
    expect(out).toMatch(/ttl=64/); // the relay decrements the sealed frame's outer hop limit, not the packet's TTL
    await fullSizePing(pub, h1);
    const mbps = await iperfTcp(h1, pub);
    console.log(`iperf3 TCP h1→pub relayed by h2, full frames, vNIC MTU ${MTU}: ${mbps.toFixed(0)} Mbit/s`);
    expect(mbps).toBeGreaterThan(1);
    const after = (await h2.state()).counters;
    expect(after.framesForwarded! - before.framesForwarded!).toBeGreaterThan(1000);
    expect((await pub.state()).counters.framesRelayedIn).toBeGreaterThan(1000);
    expect((await h2.state()).counters.sealedIn ?? 0).toBe(0); // the relay opened nothing
    // What h2 forwarded went as full frames (h2 is not their source), though the link takes compact ones.
    const relayAfter = await linkOf(h2, pub);
    expect(relayAfter.framing).toBe('compact');
    expect(relayAfter.stats.packets_out! - relayBefore.stats.packets_out!).toBeGreaterThan(1000);
    expect(relayAfter.stats.compact_out! - relayBefore.stats.compact_out!).toBeLessThan(50);
    expect((await h1.state()).links.some((l) => l.uid === pub.uid)).toBe(false);
    for (const n of [h1, h2, pub]) await n.call('set_transit', { enabled: false });
  });

  it('through TURN (symmetric NAT): compact frames and full-size DF pings both ways', async () => {
    await connectNodes(h3, h1);
    const l = await linkOf(h3, h1);
    expect([l.local_candidate, l.remote_candidate]).toContain('relay');
    await Promise.all([framingIs(h3, h1, 'compact'), framingIs(h1, h3, 'compact')]);
    await fullSizePing(h3, h1);
    await fullSizePing(h1, h3);
    expect((await linkOf(h3, h1)).stats.compact_out).toBeGreaterThanOrEqual(5);
  });

  it('a peer whose description lacks the capability (an older node) gets full frames; full-size pings still work', async () => {
    // lan2 sees an offer without the attribute: it sends full frames; lan1 sees lan2's answer with it.
    await connectNodes(lan1, lan2, { tamper: stripCapability });
    await framingIs(lan1, lan2, 'compact');
    expect((await linkOf(lan2, lan1)).framing).toBe('full');
    await fullSizePing(lan1, lan2);
    await fullSizePing(lan2, lan1);
    const fromOld = await linkOf(lan2, lan1);
    expect(fromOld.stats.packets_out).toBeGreaterThanOrEqual(10);
    expect(fromOld.stats.compact_out).toBe(0);
    expect(fromOld.stats.compact_in).toBeGreaterThanOrEqual(10);
    const toOld = await linkOf(lan1, lan2);
    expect(toOld.stats.compact_out).toBeGreaterThanOrEqual(10);
    expect(toOld.stats.compact_in).toBe(0);
  });
});
