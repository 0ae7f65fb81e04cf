import { beforeEach, describe, expect, it } from 'vitest';
import { ip6FromUid, ip6ToBytes, uidFromIp4, uidToBytes, type MemberCertPayload } from '@tincan/protocol';
import { ManualClock, certFingerprint, generateMemberCa, parseCaPrivateKey, signMemberCert } from '@tincan/controller';
import { FakeNet, node, unmappedFrame, warnings, type TestNode } from './helpers.js';

let clock: ManualClock;
let net: FakeNet;

beforeEach(() => {
  clock = new ManualClock();
  net = new FakeNet(clock);
});

/** Two nodes in the lab overlay, `lo` with the lower UID. */
function order(a: TestNode, b: TestNode): { lo: TestNode; hi: TestNode } {
  return a.uid < b.uid ? { lo: a, hi: b } : { lo: b, hi: a };
}

function linkState(n: TestNode, peer: TestNode): string {
  return n.ctl.signaling.state(peer.uid);
}

describe('GroupVpnController: driving the datapath', () => {
  it('derives UID and IPv6 from the address and drives set_cb_endpoint, set_local_ip, register_svc', async () => {
    const a = await node(net, clock, '10.254.0.1');
    expect(a.ctl.uid).toBe(uidFromIp4('10.254.0.1'));
    expect(a.dp.callsOf('set_cb_endpoint').length).toBe(1);
    expect(a.dp.callsOf('set_local_ip')[0]!.params).toEqual({
      uid: a.uid, name: 'tincan0', ip4: '10.254.0.1/16', ip6: `${ip6FromUid(a.uid)}/64`, mtu: 1280,
    });
    expect(a.dp.callsOf('register_svc')[0]!.params).toMatchObject({ overlay: 'lab', xmpp: { jid: '10-254-0-1@vpn.test' } });
    const order = a.dp.calls.map((c) => c.m).filter((m) => m !== 'get_state');
    expect(order.slice(0, 3)).toEqual(['set_cb_endpoint', 'set_local_ip', 'register_svc']);
  });
});

describe('GroupVpnController: proactive policy', () => {
  it('the lower UID offers as soon as the peer is online; one link, no glare', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    const { lo, hi } = order(a, b);
    await clock.advance(1000);
    expect(linkState(lo, hi)).toBe('up');
    expect(linkState(hi, lo)).toBe('up');
    expect(net.signals.filter((s) => s.type === 'con_req').map((s) => s.from)).toEqual([lo.uid]);
    expect(lo.dp.map4.get(hi.ip4)).toBe(hi.uid);
    expect(lo.dp.map6.get(ip6FromUid(hi.uid))).toBe(hi.uid);
    expect(hi.dp.map4.get(lo.ip4)).toBe(lo.uid);
  });

  it('the higher UID offers after waiting if the lower one\'s offer does not arrive', async () => {
    const loUid = [uidFromIp4('10.254.0.1'), uidFromIp4('10.254.0.2')].sort()[0];
    let lost = 0;
    net.drop = (s) => s.from === loUid && s.type === 'con_req' && lost++ === 0;
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    const { lo, hi } = order(a, b);
    const offers = () => hi.dp.callsOf('create_link').filter((c) => !c.params.remote).length;
    await clock.advance(4000);
    expect(lost).toBe(1);
    expect(offers()).toBe(0);
    await clock.advance(2000); // proactiveWaitMs (5 s) is over: hi offers, lo resends its own (glare)
    expect(offers()).toBe(1);
    await clock.advance(2000);
    expect(linkState(lo, hi)).toBe('up');
    expect(linkState(hi, lo)).toBe('up');
    expect(lo.dp.links.get(hi.uid)?.role).toBe('offerer');
  });

  it('glare (both offer at once) ends with exactly one link, offered by the lower UID', async () => {
    const t = { proactiveWaitMs: 0 };
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' }, t);
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' }, t);
    const { lo, hi } = order(a, b);
    await clock.advance(3000);
    expect(net.signals.filter((s) => s.type === 'con_req').length).toBeGreaterThanOrEqual(2);
    expect(hi.ctl.counters.glare_yielded).toBe(1);
    expect(linkState(lo, hi)).toBe('up');
    expect(linkState(hi, lo)).toBe('up');
    expect(lo.dp.links.get(hi.uid)?.role).toBe('offerer');
    expect(hi.dp.links.get(lo.uid)?.role).toBe('answerer');
    await clock.advance(60_000);
    expect(lo.ctl.counters.link_failures + hi.ctl.counters.link_failures).toBe(0);
  });

  it('retries a failing link with exponential backoff while the peer is online', async () => {
    net.linksWork = false;
    net.failAfterMs = 1000;
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    const { lo, hi } = order(a, b);
    const times: number[] = [];
    const start = clock.now();
    for (let t = 0; t < 120; t++) {
      const before = net.signals.filter((s) => s.type === 'con_req').length;
      await clock.advance(1000);
      const after = net.signals.filter((s) => s.type === 'con_req').length;
      if (after > before) times.push(Math.round((clock.now() - start) / 1000));
    }
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    expect(times.length).toBeGreaterThanOrEqual(4);
    expect(times.length).toBeLessThan(12);
    expect(gaps.at(-1)!).toBeGreaterThan(gaps[0]!);
    expect(lo.ctl.status().peers[0]).toMatchObject({ uid: hi.uid, link: expect.any(String) });
    expect(lo.ctl.counters.link_failures).toBeGreaterThanOrEqual(3);
    // The path heals: the next retry makes the link, and the backoff resets.
    net.linksWork = true;
    await clock.advance(130_000);
    expect(linkState(lo, hi)).toBe('up');
    expect(linkState(hi, lo)).toBe('up');
    expect(lo.ctl.status().peers.find((p) => p.uid === hi.uid)?.failures).toBe(0);
  });

  it('a link that fails after being up is trimmed and made again', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    const { lo, hi } = order(a, b);
    await clock.advance(1000);
    lo.dp.setLinkState(hi.uid, 'failed', 'ICE failed');
    await clock.advance(100);
    expect(lo.dp.links.has(hi.uid)).toBe(false); // trimmed
    await clock.advance(10_000);
    expect(linkState(lo, hi)).toBe('up');
    expect(linkState(hi, lo)).toBe('up');
    expect(lo.ctl.counters.link_failures).toBe(1);
  });

  it('departure: presence offline trims the link (after the departure grace) and removes the mappings', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    await clock.advance(1000);
    expect(linkState(a, b)).toBe('up');
    net.offline(b.dp);
    await clock.advance(100);
    expect(linkState(a, b)).toBe('up'); // an XMPP outage is no reason to drop a working link at once
    await clock.advance(10_000);
    expect(linkState(a, b)).toBe('idle');
    expect(a.dp.links.has(b.uid)).toBe(false);
    expect(a.dp.map4.has(b.ip4)).toBe(false);
    expect(a.ctl.counters.links_trimmed_departed).toBe(1);
  });
});

describe('GroupVpnController: XMPP outages', () => {
  it('a member that goes offline and comes back within the departure grace keeps its link', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    await clock.advance(1000);
    const since = a.ctl.status().peers.find((p) => p.uid === b.uid);
    expect(linkState(a, b)).toBe('up');
    net.offline(b.dp);
    await clock.advance(3000);
    b.dp.xmppState = 'online';
    net.online(b.dp);
    await clock.advance(20_000);
    expect(linkState(a, b)).toBe('up');
    expect(a.dp.links.has(b.uid)).toBe(true);
    expect(a.ctl.counters.links_trimmed_departed).toBe(0);
    expect(a.ctl.status().peers.find((p) => p.uid === b.uid)?.status).toBe(since?.status);
  });
});

describe('GroupVpnController: links that survive', () => {
  it('a link whose path stops answering (link_health suspect) is repaired beside the old one; the session never goes down', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    await clock.advance(1000);
    expect(linkState(a, b)).toBe('up');
    const ups = a.ctl.counters.links_up;
    const old = a.dp.links.get(b.uid);
    a.dp.emit({ event: 'link_health', uid: b.uid, health: 'suspect', reason: 'no answer to probes' });
    await clock.advance(2000);
    expect(a.ctl.counters.links_suspect).toBe(1);
    expect(a.ctl.counters.repairs_started).toBe(1);
    expect(a.ctl.counters.links_repaired).toBe(1);
    expect(b.ctl.counters.links_repaired).toBe(1);
    expect(a.ctl.counters.links_up).toBe(ups);
    expect(a.ctl.counters.link_failures).toBe(0);
    expect(a.dp.links.get(b.uid)).not.toBe(old);
    expect(linkState(a, b)).toBe('up');
    expect(linkState(b, a)).toBe('up');
    expect(a.dp.callsOf('trim_link')).toEqual([]);
  });

  it('suspect while our XMPP session is down: the repair waits for it, then goes at once', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    await clock.advance(1000);
    a.dp.emit({ event: 'xmpp', state: 'offline', reason: 'connect: read ECONNRESET' });
    a.dp.emit({ event: 'link_health', uid: b.uid, health: 'suspect', reason: 'no answer to probes' });
    await clock.advance(3000);
    expect(a.ctl.counters.repairs_started).toBe(0);
    expect(linkState(a, b)).toBe('up');
    a.dp.emit({ event: 'xmpp', state: 'online' });
    await clock.advance(2000);
    expect(a.ctl.counters.repairs_started).toBe(1);
    expect(a.ctl.counters.links_repaired).toBe(1);
  });

  it('a suspect link heard again (health ok) is not repaired', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    await clock.advance(1000);
    a.dp.emit({ event: 'xmpp', state: 'offline', reason: 'connect: read ECONNRESET' });
    a.dp.emit({ event: 'link_health', uid: b.uid, health: 'suspect' });
    a.dp.emit({ event: 'link_health', uid: b.uid, health: 'ok' });
    await clock.advance(100);
    a.dp.emit({ event: 'xmpp', state: 'online' });
    await clock.advance(2000);
    expect(a.ctl.counters.repairs_started).toBe(0);
  });

  it('the server announces a member unavailable on its way down: no evidence it left, the link stays through a long outage', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    await clock.advance(1000);
    const old = a.dp.links.get(b.uid);
    net.offline(b.dp); // b's unavailable presence reaches a…
    await clock.advance(50);
    a.dp.emit({ event: 'xmpp', state: 'offline', reason: 'stream error: system-shutdown' }); // …then a's own session goes
    a.dp.xmppState = 'offline';
    await clock.advance(180_000);
    expect(linkState(a, b)).toBe('up');
    expect(a.dp.links.get(b.uid)).toBe(old);
    expect(a.ctl.counters.links_trimmed_departed).toBe(0);
    expect(a.ctl.counters.departures_deferred).toBeGreaterThan(10);
    // The server is back and b with it: nothing to do.
    a.dp.xmppState = 'online';
    b.dp.xmppState = 'online';
    a.dp.emit({ event: 'xmpp', state: 'online' });
    net.online(b.dp);
    await clock.advance(30_000);
    expect(a.dp.links.get(b.uid)).toBe(old);
    expect(a.ctl.counters.links_trimmed_departed).toBe(0);
  });

  it('a member gone from XMPP whose link carries traffic stays; once the link idles, it is trimmed', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    await clock.advance(1000);
    net.offline(b.dp);
    for (let i = 0; i < 30; i++) {
      a.dp.traffic(b.uid);
      await clock.advance(1000);
    }
    expect(linkState(a, b)).toBe('up');
    expect(a.ctl.counters.departures_deferred).toBeGreaterThanOrEqual(2);
    await clock.advance(40_000); // no traffic: idle past the grace, our session up throughout
    expect(linkState(a, b)).toBe('idle');
    expect(a.ctl.counters.links_trimmed_departed).toBe(1);
  });
});

describe('GroupVpnController: mobility', () => {
  it('when XMPP drops because our local address went away, every up link is made again once it is back', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    await clock.advance(1000);
    expect(linkState(a, b)).toBe('up');
    const before = a.ctl.counters.links_up;
    a.dp.emit({ event: 'xmpp', state: 'offline', reason: 'network: local address 10.1.0.2 is gone' });
    await clock.advance(100);
    expect(linkState(a, b)).toBe('up'); // nothing happens while signaling is down
    a.dp.emit({ event: 'xmpp', state: 'online' });
    await clock.advance(10_000);
    expect(a.dp.callsOf('trim_link').some((c) => c.params.uid === b.uid)).toBe(true);
    expect(linkState(a, b)).toBe('up');
    expect(linkState(b, a)).toBe('up');
    expect(a.ctl.counters.links_up).toBe(before + 1);
    expect(a.ctl.counters.link_failures).toBe(0);
  });
});

describe('GroupVpnController: on-demand policy', () => {
  it('an unmapped packet to a member address triggers one link, and the packet is injected once it is up', async () => {
    const a = await node(net, clock, '10.254.0.1');
    const b = await node(net, clock, '10.254.0.2');
    await clock.advance(1000);
    expect(a.dp.links.size).toBe(0); // nothing without traffic
    const frame = unmappedFrame(a.uid, a.ip4, b.ip4);
    for (let i = 0; i < 5; i++) a.dp.emitPacket(frame);
    await clock.advance(1000);
    expect(a.dp.callsOf('create_link').filter((c) => !c.params.remote).length).toBe(1); // one attempt in flight
    expect(linkState(a, b)).toBe('up');
    expect(linkState(b, a)).toBe('up');
    expect(a.dp.injected.length).toBe(5);
    const injected = a.dp.injected[0]!;
    expect(injected.subarray(20, 40).equals(uidToBytes(b.uid))).toBe(true);
    expect(injected.subarray(40).equals(frame.subarray(40))).toBe(true);
    expect(a.ctl.counters.packets_reinjected).toBe(5);
  });

  it('an IPv6 packet to a member\'s ULA address triggers the link too', async () => {
    const a = await node(net, clock, '10.254.0.1');
    const b = await node(net, clock, '10.254.0.2');
    await clock.advance(100);
    const ip6 = Buffer.alloc(40);
    ip6[0] = 0x60;
    ip6[6] = 58; // ICMPv6
    ip6[7] = 64;
    ip6ToBytes(ip6FromUid(a.uid)).copy(ip6, 8);
    ip6ToBytes(ip6FromUid(b.uid)).copy(ip6, 24);
    a.dp.emitPacket(Buffer.concat([uidToBytes(a.uid), Buffer.alloc(20), ip6]));
    await clock.advance(1000);
    expect(linkState(a, b)).toBe('up');
    expect(a.dp.map4.get(b.ip4)).toBe(b.uid); // learned from b's con_resp, checked against its UID
    expect(a.dp.injected.length).toBe(1);
  });

  it('ignores packets to non-members, broadcast and other subnets, and transit frames', async () => {
    const a = await node(net, clock, '10.254.0.1');
    await clock.advance(100);
    a.dp.emitPacket(unmappedFrame(a.uid, a.ip4, '10.254.9.9'));
    a.dp.emitPacket(unmappedFrame(a.uid, a.ip4, '10.254.255.255'));
    a.dp.emitPacket(unmappedFrame(a.uid, a.ip4, '8.8.8.8'));
    a.dp.emitPacket(unmappedFrame(uidFromIp4('10.254.0.7'), '10.254.0.7', '10.254.0.8'));
    a.dp.emitPacket(Buffer.alloc(10));
    await clock.advance(100);
    expect(a.ctl.counters).toMatchObject({
      unmapped_packets: 5, unmapped_not_member: 1, unmapped_outside_subnet: 2, transit_dropped: 1, unmapped_malformed: 1,
    });
    expect(a.dp.callsOf('create_link').length).toBe(0);
  });

  it('trims the least recently used link when max_links is reached', async () => {
    const cfg = { max_links: 2 } as const;
    const a = await node(net, clock, '10.254.0.1', cfg);
    const b = await node(net, clock, '10.254.0.2', cfg);
    const c = await node(net, clock, '10.254.0.3', cfg);
    const d = await node(net, clock, '10.254.0.4', cfg);
    a.dp.emitPacket(unmappedFrame(a.uid, a.ip4, b.ip4));
    await clock.advance(2000);
    a.dp.emitPacket(unmappedFrame(a.uid, a.ip4, c.ip4));
    await clock.advance(2000);
    expect(linkState(a, b)).toBe('up');
    expect(linkState(a, c)).toBe('up');
    a.dp.traffic(c.uid); // c is busy, b is not
    await clock.advance(5000);
    a.dp.emitPacket(unmappedFrame(a.uid, a.ip4, d.ip4));
    await clock.advance(2000);
    expect(linkState(a, b)).toBe('idle');
    expect(linkState(a, c)).toBe('up');
    expect(linkState(a, d)).toBe('up');
    expect(a.dp.links.has(b.uid)).toBe(false);
    expect(a.dp.map4.has(b.ip4)).toBe(false);
    expect(a.ctl.counters.links_trimmed_lru).toBe(1);
    expect(a.ctl.signaling.activeCount()).toBe(2);
  });

  it('answers an incoming request at max_links by trimming its LRU link', async () => {
    const a = await node(net, clock, '10.254.0.1', { max_links: 1 });
    const b = await node(net, clock, '10.254.0.2');
    const c = await node(net, clock, '10.254.0.3');
    a.dp.emitPacket(unmappedFrame(a.uid, a.ip4, b.ip4));
    await clock.advance(2000);
    c.dp.emitPacket(unmappedFrame(c.uid, c.ip4, a.ip4));
    await clock.advance(2000);
    expect(linkState(a, c)).toBe('up');
    expect(linkState(a, b)).toBe('idle');
  });

  it('rejects an incoming request at max_links in proactive mode', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive', max_links: 1 });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    await clock.advance(7000);
    expect(linkState(a, b)).toBe('up');
    const c = await node(net, clock, '10.254.0.3', { link_policy: 'proactive' });
    await clock.advance(7000);
    expect(linkState(a, c)).toBe('idle');
    expect(a.ctl.counters.con_reject_sent).toBeGreaterThanOrEqual(1);
    expect(linkState(a, b)).toBe('up');
  });

  it('trims links idle for longer than idle_timeout_s; traffic keeps them', async () => {
    const a = await node(net, clock, '10.254.0.1', { idle_timeout_s: 60 });
    const b = await node(net, clock, '10.254.0.2', { idle_timeout_s: 600 });
    const c = await node(net, clock, '10.254.0.3', { idle_timeout_s: 600 });
    a.dp.emitPacket(unmappedFrame(a.uid, a.ip4, b.ip4));
    a.dp.emitPacket(unmappedFrame(a.uid, a.ip4, c.ip4));
    await clock.advance(2000);
    expect(linkState(a, b)).toBe('up');
    expect(linkState(a, c)).toBe('up');
    for (let i = 0; i < 14; i++) {
      a.dp.traffic(c.uid);
      await clock.advance(5000);
    }
    expect(linkState(a, b)).toBe('idle');
    expect(linkState(a, c)).toBe('up');
    expect(a.ctl.counters.links_trimmed_idle).toBe(1);
    expect(a.dp.links.has(b.uid)).toBe(false);
    // the other end sees its link go down and does not retry on its own (no demand there)
    await clock.advance(30_000);
    expect(linkState(b, a)).toBe('idle');
  });
});

describe('GroupVpnController: admission', () => {
  it('refuses signals from other overlays, unknown JIDs, wrong JIDs and bad UID/ip4 bindings; logs rate-limited', async () => {
    const a = await node(net, clock, '10.254.0.1');
    const b = await node(net, clock, '10.254.0.2');
    const other = await node(net, clock, '10.254.0.3', { network_id: 'other' });
    await clock.advance(500);
    expect(a.ctl.peers.member(other.uid)).toBeUndefined();
    const bKey = `v=0\na=fingerprint:sha-256 ${certFingerprint(b.dp.cert!)}`;
    const req = (ip4: string, sdp = bKey) => ({
      overlay: 'lab', ip4, attempt: '00112233445566ff', description: { type: 'offer', sdp },
    });
    // a node of another overlay (its presence was refused)
    a.dp.emit({ event: 'signal', uid: other.uid, jid: other.dp.jid, type: 'con_req', data: req(other.ip4) });
    a.dp.emit({ event: 'signal', uid: other.uid, jid: other.dp.jid, type: 'con_req', data: req(other.ip4) });
    // a JID we never saw
    const stranger = uidFromIp4('10.254.0.66');
    a.dp.emit({ event: 'signal', uid: stranger, jid: 'mallory@evil.test/x', type: 'con_req', data: req('10.254.0.66') });
    // a member's UID from another JID
    a.dp.emit({ event: 'signal', uid: b.uid, jid: 'b-imposter@vpn.test/x', type: 'con_req', data: req(b.ip4) });
    // a member claiming an address that is not bound to its UID
    a.dp.emit({ event: 'signal', uid: b.uid, jid: b.dp.jid, type: 'con_req', data: req('10.254.0.9') });
    // a member in our overlay but announcing another overlay in the message
    a.dp.emit({ event: 'signal', uid: b.uid, jid: b.dp.jid, type: 'con_req', data: { ...req(b.ip4), overlay: 'other' } });
    // a member's offer for another key than the one its presence carried (and we trust), or for none
    a.dp.emit({ event: 'signal', uid: b.uid, jid: b.dp.jid, type: 'con_req', data: req(b.ip4, `v=0\na=fingerprint:sha-256 ${certFingerprint('AAAA')}`) });
    a.dp.emit({ event: 'signal', uid: b.uid, jid: b.dp.jid, type: 'con_req', data: req(b.ip4, 'v=0') });
    await clock.advance(500);
    expect(a.ctl.refusals).toEqual({
      not_admitted: 2, unknown_sender: 1, jid_mismatch: 1, binding_mismatch: 1, overlay_mismatch: 1, fingerprint_mismatch: 2,
    });
    expect(a.ctl.counters.signals_refused).toBe(8);
    expect(warnings(a.lines, 'signal refused').length).toBe(6); // the repeated ones are rate-limited
    expect(a.dp.callsOf('create_link').length).toBe(0);
    expect(a.dp.map4.size).toBe(0);
    // the member whose binding was wrong gets a con_reject; nobody else hears from us
    expect(net.signals.filter((s) => s.type === 'con_reject').map((s) => s.to)).toEqual([b.dp.jid, b.dp.jid, b.dp.jid, b.dp.jid]);
  });

  it('never crashes on garbage signal payloads; counts them; still links afterwards', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    const garbage: unknown[] = [
      null, 42, 'x', [], {}, { overlay: 'lab' }, { overlay: 'lab', ip4: b.ip4, attempt: 'zz', description: { type: 'offer', sdp: 'x' } },
      { overlay: 'lab', ip4: b.ip4, attempt: '0011223344556677', description: { type: 'answer', sdp: 'x' } },
      { overlay: 'lab', ip4: 'x'.repeat(10_000), attempt: '0011223344556677', description: { type: 'offer', sdp: 'x' } },
      { reason: 'BAD REASON' },
    ];
    for (const [i, data] of garbage.entries()) {
      a.dp.emit({ event: 'signal', uid: b.uid, jid: b.dp.jid, type: i === garbage.length - 1 ? 'con_reject' : 'con_req', data: data as never });
    }
    a.dp.emit({ event: 'signal', uid: b.uid, jid: b.dp.jid, type: 'whatever', data: {} });
    a.dp.emit({ event: 'signal', uid: a.uid, jid: a.dp.jid, type: 'con_req', data: {} }); // our own, bounced
    await clock.advance(100);
    expect(a.ctl.counters.signals_malformed).toBe(garbage.length);
    expect(a.ctl.counters.signals_unknown_type).toBe(1);
    expect(a.ctl.counters.signals_bounced).toBe(1);
    await clock.advance(10_000);
    expect(linkState(a, b)).toBe('up');
  });

  it('trickle ICE: candidates go out as con_cand and are applied; garbage and stale con_cand are counted drops', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    const { lo, hi } = order(a, b);
    await clock.advance(1000);
    expect(linkState(lo, hi)).toBe('up');
    // Both announced trickle in presence: even the first link trickles both ways, and the fake needs
    // the candidates.
    expect(a.dp.callsOf('register_svc')[0]!.params.caps).toEqual(['trickle']);
    const cands = net.signals.filter((s) => s.type === 'con_cand');
    expect(cands.map((s) => s.from).sort()).toEqual([lo.uid, hi.uid].sort());
    const described = (n: TestNode) => n.dp.callsOf('create_link').filter((c) => (c.params.remote as { type?: string } | undefined)?.type !== 'answer');
    expect([...described(lo), ...described(hi)].map((c) => c.params.trickle)).toEqual([true, true]);
    expect(lo.dp.callsOf('add_candidate').length).toBe(1);
    const garbage: unknown[] = [null, {}, { attempt: 'zz' }, { attempt: '0011223344556677', candidates: [{ candidate: 'x', mid: '0' }] },
      { attempt: '0011223344556677', candidates: 'no' }];
    for (const data of garbage) lo.dp.emit({ event: 'signal', uid: hi.uid, jid: hi.dp.jid, type: 'con_cand', data: data as never });
    lo.dp.emit({ event: 'signal', uid: hi.uid, jid: hi.dp.jid, type: 'con_cand', data: cands[0]!.data as never }); // late: up already
    await clock.advance(100);
    expect(lo.ctl.counters.signals_malformed).toBe(garbage.length);
    expect(lo.ctl.counters.signals_duplicate).toBe(1);
    expect(lo.dp.callsOf('add_candidate').length).toBe(1);
    expect(linkState(lo, hi)).toBe('up');
    // The status file carries the trickle counters.
    expect(hi.ctl.status().trickle.con_cand_sent).toBe(1);
    expect(hi.ctl.status().trickle.candidates_sent).toBeGreaterThan(0);
    expect(lo.ctl.status().trickle.candidates_applied).toBe(hi.ctl.status().trickle.candidates_sent);
    expect(lo.ctl.status().trickle.con_cand_sent).toBe(1);
  });

  it('a restarted controller learns what peers announced from get_state, with no presence event', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    await clock.advance(1000);
    expect(linkState(a, b)).toBe('up');
    // The fake, like the datapath, sends no presence event again to a new controller: only get_state's
    // peers (read as the controller attaches, then every 5 s) carry b's capabilities.
    await a.restartController();
    await clock.advance(100);
    expect(a.ctl.signaling.offersTrickled(b.uid)).toBe(true);
  });

  it('a failed link makes the next offer gather in full, although the peer announced trickle and get_state still says so', async () => {
    net.linksWork = false;
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    const { lo } = order(a, b);
    await clock.advance(40_000);
    const offers = lo.dp.callsOf('create_link').filter((c) => c.params.remote === undefined);
    // The first offer trickles (b announced it); every retry after a failure gathers in full, although
    // get_state's peers, polled every 5 s, still show b's announcement.
    expect(offers.length).toBeGreaterThanOrEqual(3);
    expect(offers.map((c) => c.params.trickle === true)).toEqual([true, ...offers.slice(1).map(() => false)]);
  });

  it('a datapath older than presence capabilities: registered without them; peers\' first offers to it wait for gathering', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const old = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' }, {}, (dp) => {
      dp.refusesCaps = true;
    });
    await clock.advance(1000);
    expect(old.dp.callsOf('register_svc').map((c) => c.params.caps)).toEqual([['trickle'], undefined]);
    expect(old.dp.xmppState).toBe('online');
    expect(old.lines.some((l) => String(l.msg).startsWith('the datapath takes no capabilities'))).toBe(true);
    expect(linkState(a, old)).toBe('up');
    // Whoever offered: an offer to `old` is whole (it announced nothing); an answer to a con_req that
    // said trickle is trickled.
    const offerer = a.uid < old.uid ? a : old;
    const offers = offerer.dp.callsOf('create_link').filter((c) => c.params.remote === undefined);
    expect(offers.map((c) => c.params.trickle === true)).toEqual([offerer !== a]);
  });

  it('a second JID announcing a member\'s address is refused (uid_taken): the holder keeps its link; the claimant waits for it to leave', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    await clock.advance(7000);
    expect(linkState(a, b)).toBe('up');
    // A second node is (mis)configured with b's address, or someone copies b's presence.
    const dup = await node(net, clock, '10.254.0.2', { link_policy: 'proactive', xmpp: { host: 'x', port: 5222, jid: 'dup@vpn.test', password: 'p', mechanism: 'PLAIN' } });
    await clock.advance(100);
    expect(a.ctl.peers.member(b.uid)?.jid).toBe(b.dp.jid);
    expect(a.ctl.status().membership.refusals).toMatchObject({ uid_taken: 1 });
    expect(a.lines.some((l) => l.level === 50 && l.reason === 'uid_taken' && l.jid === dup.dp.jid)).toBe(true);
    // b refuses someone claiming its own address too, and keeps its link
    expect(b.ctl.status().membership.refusals).toMatchObject({ uid_taken: 1 });
    await clock.advance(20_000);
    expect(linkState(a, b)).toBe('up');
    expect(a.ctl.status().conflicts).toEqual([]);
    expect(net.signals.some((s) => s.to === dup.dp.jid)).toBe(false);
    // the holder leaves: the waiting claimant is judged again (first use of its key for that address)
    net.offline(b.dp);
    await clock.advance(100);
    expect(a.ctl.peers.member(b.uid)?.jid).toBe(dup.dp.jid);
  });

  it('pins the first key per (JID, UID), refuses a changed one (key_changed) until the operator accepts it; set_peer_cert follows', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    await clock.advance(7000);
    expect(linkState(a, b)).toBe('up');
    expect(a.dp.peerCerts.get(b.uid)).toBe(b.dp.cert);
    // b's node gets a new key (its state directory was lost, or someone else signs in as b)
    net.offline(b.dp);
    await clock.advance(100);
    b.dp.cert = Buffer.from('another key').toString('base64');
    b.dp.goOnline();
    await clock.advance(30_000);
    expect(a.ctl.peers.member(b.uid)).toBeUndefined();
    expect(linkState(a, b)).toBe('idle');
    const st = a.ctl.status().membership;
    expect(st.mode).toBe('pinning');
    expect(st.refusals).toMatchObject({ key_changed: 1 });
    expect(st.pending_keys).toEqual([expect.objectContaining({ jid: '10-254-0-2@vpn.test', uid: b.uid, fingerprint: certFingerprint(b.dp.cert) })]);
    expect(net.signals.filter((s) => s.from === a.uid && s.to === b.dp.jid && s.type === 'con_req').length).toBeLessThanOrEqual(1);
    // accepting another fingerprint than the pending one changes nothing
    expect(a.ctl.core.membership.accept(`10-254-0-2@vpn.test ${b.uid}`, certFingerprint('AAAA'))).toBe(false);
    expect(a.ctl.core.membership.accept(`10-254-0-2@vpn.test ${b.uid}`, certFingerprint(b.dp.cert))).toBe(true);
    a.ctl.core.handlePresence(a.ctl.peers.rejudge((p) => p.uid === b.uid, clock.now()));
    await clock.advance(10_000);
    expect(a.ctl.peers.member(b.uid)?.jid).toBe(b.dp.jid);
    expect(linkState(a, b)).toBe('up');
    expect(a.dp.peerCerts.get(b.uid)).toBe(b.dp.cert);
    expect(a.ctl.status().membership.pending_keys).toEqual([]);
  });

  it('a presence without a node certificate is refused (no_cert)', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' }, {}, (dp) => {
      dp.cert = undefined;
    });
    await clock.advance(10_000);
    expect(a.ctl.peers.member(b.uid)).toBeUndefined();
    expect(a.ctl.status().membership.refusals).toMatchObject({ no_cert: 1 });
    expect(linkState(a, b)).toBe('idle');
  });
});

describe('GroupVpnController: membership CA', () => {
  const caPair = generateMemberCa();
  const caPriv = parseCaPrivateKey(caPair.privatePem);
  const other = parseCaPrivateKey(generateMemberCa().privatePem);
  const nowS = Math.floor(new ManualClock().now() / 1000);
  /** The fake datapath's node certificate for the node of `ip4` (its JID is derived from the address). */
  const fpOf = (ip4: string) => certFingerprint(Buffer.from(`fake node certificate of ${ip4.replace(/\./g, '-')}@vpn.test/tincan`).toString('base64'));
  const cert = (ip4: string, over: Partial<MemberCertPayload> = {}, key = caPriv) =>
    signMemberCert(key, { v: 1, net: 'lab', jid: `${ip4.replace(/\./g, '-')}@vpn.test`, fp: fpOf(ip4), ip4, subnets: [], nbf: nowS - 60, exp: nowS + 86_400, ...over });
  const withCa = (ip4: string, memberCert: string | null) => ({
    link_policy: 'proactive' as const,
    membership: { ca_key: caPair.publicKey, cert_file: 'unused' },
    member_cert: memberCert ?? null,
  });

  it('links members with valid certificates, refuses the others by reason, and grants what the certificate says', async () => {
    const a = await node(net, clock, '10.254.0.1', withCa('10.254.0.1', cert('10.254.0.1')));
    const b = await node(net, clock, '10.254.0.2', withCa('10.254.0.2', cert('10.254.0.2', { subnets: ['10.88.0.0/24'], exp: nowS + 3600 })));
    const bad = [
      await node(net, clock, '10.254.0.3', withCa('10.254.0.3', null)),
      await node(net, clock, '10.254.0.4', withCa('10.254.0.4', cert('10.254.0.4', {}, other))),
      await node(net, clock, '10.254.0.5', withCa('10.254.0.5', cert('10.254.0.5', { fp: fpOf('10.254.0.9') }))),
      await node(net, clock, '10.254.0.6', withCa('10.254.0.6', cert('10.254.0.7'))), // another member's certificate
      await node(net, clock, '10.254.0.8', withCa('10.254.0.8', cert('10.254.0.8', { nbf: nowS - 7200, exp: nowS - 3600 }))),
    ];
    await clock.advance(7000);
    expect(linkState(a, b)).toBe('up');
    for (const n of bad) expect(linkState(a, n)).toBe('idle');
    expect(a.dp.callsOf('register_svc')[0]!.params.member_cert).toBe(cert('10.254.0.1'));
    expect(a.ctl.status().membership).toMatchObject({
      mode: 'ca',
      refusals: { no_member_cert: 1, member_cert_bad_signature: 1, member_cert_wrong_key: 1, member_cert_wrong_jid: 1, member_cert_expired: 1 },
      own_cert: { problem: null, warning: expect.stringMatching(/^expires in 24 h/) }, // a day left: within the warning week
      expiring: [{ uid: b.uid, jid: b.dp.jid, expires_ms: (nowS + 3600) * 1000 }],
    });
    expect(bad[0]!.ctl.status().membership.own_cert?.problem).toMatch(/no membership certificate/);
    expect(a.ctl.grantedSubnets(b.uid)).toEqual(['10.88.0.0/24']);
    expect(a.ctl.grantedSubnets(bad[0]!.uid)).toEqual([]);
    expect(b.ctl.grantedSubnets(a.uid)).toEqual([]);
    // no pins are made with a CA
    expect(a.ctl.status().membership.pinned).toBe(0);
    // b's certificate expires: b is refused from then on, and its link trimmed
    await clock.advance(3600_000 + 5_000); // its expiry and the next poll: refused, so no grace for its link
    expect(a.ctl.peers.member(b.uid)).toBeUndefined();
    expect(linkState(a, b)).toBe('idle');
    expect(a.ctl.status().membership.refusals.member_cert_expired).toBe(2);
    expect(a.ctl.grantedSubnets(b.uid)).toEqual([]);
  });

  it('without a CA, certificates restrict nothing: grantedSubnets is null', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    await clock.advance(7000);
    expect(linkState(a, b)).toBe('up');
    expect(a.ctl.grantedSubnets(b.uid)).toBeNull();
  });
});

describe('GroupVpnController: restarts', () => {
  it('a restarted controller adopts the up links (re-learning addresses from get_state) and recreates nothing', async () => {
    const a = await node(net, clock, '10.254.0.1');
    const b = await node(net, clock, '10.254.0.2');
    a.dp.emitPacket(unmappedFrame(a.uid, a.ip4, b.ip4));
    await clock.advance(2000);
    expect(linkState(a, b)).toBe('up');
    const link = a.dp.links.get(b.uid);
    a.dp.calls.length = 0;
    const ctl = await a.restartController();
    await clock.advance(30_000);
    expect(ctl.signaling.state(b.uid)).toBe('up');
    expect(ctl.signaling.session(b.uid)?.adopted).toBe(true);
    expect(ctl.peers.get(b.uid)?.ip4).toBe(b.ip4);
    expect(ctl.counters.links_adopted).toBe(1);
    expect(a.dp.links.get(b.uid)).toBe(link);
    expect(a.dp.callsOf('create_link')).toEqual([]);
    expect(a.dp.callsOf('trim_link')).toEqual([]);
    expect(linkState(b, a)).toBe('up');
  });

  it('a restarted controller trims half-made links it cannot own', async () => {
    const a = await node(net, clock, '10.254.0.1');
    const b = await node(net, clock, '10.254.0.2');
    await a.ctl.stop();
    await a.dp.port().call('create_link', { uid: b.uid }); // an offer the old controller never sent
    const ctl = await a.restartController();
    await clock.advance(100);
    expect(a.dp.links.has(b.uid)).toBe(false);
    expect(ctl.counters.orphan_links_trimmed).toBe(1);
  });

  it('a restarted datapath (new token) is re-driven: vNIC, XMPP, links', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    await clock.advance(7000);
    expect(linkState(a, b)).toBe('up');
    a.dp.restart();
    await clock.advance(30_000);
    expect(a.dp.callsOf('set_local_ip').length).toBe(2);
    expect(a.dp.callsOf('register_svc').length).toBe(2);
    expect(a.ctl.counters.datapath_restarts).toBe(1);
    expect(a.ctl.status().datapath).toMatchObject({ status: 'attached', restarts: 1 });
    expect(linkState(a, b)).toBe('up');
    expect(linkState(b, a)).toBe('up');
    expect(a.dp.links.get(b.uid)?.state).toBe('up');
  });

  it('survives a datapath that stops answering for a while, without re-driving it', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    await clock.advance(7000);
    a.dp.unreachable = true;
    await clock.advance(20_000);
    expect(a.ctl.status().datapath.status).toBe('unreachable');
    a.dp.unreachable = false;
    await clock.advance(6000);
    expect(a.ctl.status().datapath).toMatchObject({ status: 'attached', restarts: 0, outages: 1 });
    expect(a.dp.callsOf('set_local_ip').length).toBe(1);
    expect(linkState(a, b)).toBe('up');
  });

  it('stop() leaves the links up in the datapath', async () => {
    const a = await node(net, clock, '10.254.0.1', { link_policy: 'proactive' });
    const b = await node(net, clock, '10.254.0.2', { link_policy: 'proactive' });
    await clock.advance(7000);
    await a.ctl.stop();
    await clock.advance(60_000);
    expect(a.dp.links.get(b.uid)?.state).toBe('up');
    expect(a.dp.callsOf('trim_link')).toEqual([]);
  });
});
