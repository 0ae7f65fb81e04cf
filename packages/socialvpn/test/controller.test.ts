import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { SOCIAL_OVERLAY, SocialVpnState, ip6FromUid, uidToBytes, type Uid } from '@tincan/protocol';
import { ManualClock, StateFileError, utcDay } from '@tincan/controller';
import { SocialVpnController, STATE_FILE } from '../src/controller.js';
import { FakeDatapath, FakeNet, captureLogger, jidOf, logged, removeStateDirs, settings, socialNode, unmappedFrame, type SocialNode } from './helpers.js';

let clock: ManualClock;
let net: FakeNet;

beforeEach(() => {
  clock = new ManualClock();
  net = new FakeNet(clock);
});

afterAll(removeStateDirs);

function linkState(n: SocialNode, peer: SocialNode): string {
  return n.ctl.signaling.state(peer.uid);
}

async function readState(n: SocialNode): Promise<SocialVpnState> {
  await n.ctl.flushState();
  return SocialVpnState.parse(JSON.parse(readFileSync(join(n.config.state_dir, STATE_FILE), 'utf8')));
}

function remoteIpCalls(n: SocialNode, uid: Uid): Record<string, unknown>[] {
  return n.dp.callsOf('set_remote_ip').map((c) => c.params).filter((p) => p.uid === uid);
}

/** alice ↔ bob mutual friends (both run SocialVPN). */
async function pair(o: { alice?: Parameters<typeof socialNode>[3]; bob?: Parameters<typeof socialNode>[3] } = {}) {
  const alice = await socialNode(net, clock, 'alice', { roster: { bob: 'both' }, ...o.alice });
  const bob = await socialNode(net, clock, 'bob', { roster: { alice: 'both' }, ...o.bob });
  await clock.advance(500);
  return { alice, bob };
}

describe('SocialVpnController: identity and the datapath', () => {
  it('makes a random UID, persists it before driving the datapath, and keeps it across restarts', async () => {
    const a = await socialNode(net, clock, 'alice');
    const b = await socialNode(net, clock, 'bob');
    expect(a.uid).toMatch(/^[0-9a-f]{40}$/);
    expect(a.uid).not.toBe(b.uid);
    expect((await readState(a)).uid).toBe(a.uid);
    expect(a.dp.callsOf('set_local_ip')[0]!.params).toEqual({
      uid: a.uid, name: 'tincan0', ip4: '172.31.0.1/16', ip6: `${ip6FromUid(a.uid)}/64`, mtu: 1280,
    });
    expect(a.dp.callsOf('register_svc')[0]!.params).toMatchObject({ overlay: SOCIAL_OVERLAY, xmpp: { jid: 'alice@social.test' } });
    const ctl = await a.restartController();
    expect(ctl.uid).toBe(a.uid);
    expect(a.dp.callsOf('set_local_ip').length).toBe(2); // the same call again: accepted by the datapath
  });

  it('uses "address" when given, and never hands it to a friend', async () => {
    const { alice, bob } = await pair({ alice: { roster: { bob: 'both' }, config: { address: '172.31.0.2' } } });
    expect(alice.dp.callsOf('set_local_ip')[0]!.params.ip4).toBe('172.31.0.2/16');
    expect(alice.ctl.addressOf(bob.uid)).toBe('172.31.0.1');
    expect(bob.ctl.addressOf(alice.uid)).toBe('172.31.0.2'); // bob's own subnet: he is .1, alice the next free
  });
});

describe('SocialVpnController: roster → peers', () => {
  it('only contacts with a mutual subscription are peers; each gets the next free address, sent with translate', async () => {
    const alice = await socialNode(net, clock, 'alice', {
      roster: { bob: 'both', carol: 'to', dave: 'from', eve: 'none', frank: 'both' },
    });
    const bob = await socialNode(net, clock, 'bob', { roster: { alice: 'both' } });
    const carol = await socialNode(net, clock, 'carol', { roster: { alice: 'from' } });
    const dave = await socialNode(net, clock, 'dave', { roster: { alice: 'to' } });
    const eve = await socialNode(net, clock, 'eve', { roster: { alice: 'none' } });
    const frank = await socialNode(net, clock, 'frank', { roster: { alice: 'both' } });
    await clock.advance(1000);
    const members = [...alice.ctl.peers.members()].map((p) => p.uid).sort();
    expect(members).toEqual([bob.uid, frank.uid].sort());
    for (const n of [carol, dave, eve]) {
      expect(alice.ctl.peers.member(n.uid)).toBeUndefined();
      expect(alice.ctl.addressOf(n.uid)).toBeNull();
    }
    // Addresses in order of appearance, after alice's own .1.
    expect(alice.ctl.addressOf(bob.uid)).toBe('172.31.0.2');
    expect(alice.ctl.addressOf(frank.uid)).toBe('172.31.0.3');
    expect(remoteIpCalls(alice, bob.uid)).toEqual([{ uid: bob.uid, ip4: '172.31.0.2', ip6: ip6FromUid(bob.uid), translate: true }]);
    expect(alice.dp.map4.get('172.31.0.2')).toBe(bob.uid);
    // The status file shows the mappings with the friends' JIDs.
    const st = alice.ctl.status();
    expect(st.mappings.map((m) => [m.jid, m.ip4, m.status, m.device_jid])).toEqual([
      [jidOf('bob'), '172.31.0.2', 'online', bob.dp.jid],
      [jidOf('frank'), '172.31.0.3', 'online', frank.dp.jid],
    ]);
    expect(st.roster).toMatchObject({ source: 'xmpp', contacts: 5, friends: [jidOf('bob'), jidOf('frank')] });
    expect((await readState(alice)).mappings[bob.uid]).toMatchObject({ jid: jidOf('bob'), ip4: '172.31.0.2' });
    // No link without traffic (bob is not a frequent friend yet).
    expect(alice.dp.links.size).toBe(0);
  });

  it('a GroupVPN node of a friend (another overlay) is not a SocialVPN peer', async () => {
    const alice = await socialNode(net, clock, 'alice', { roster: { bob: 'both' } });
    const groupNode = new FakeDatapath(net, `${jidOf('bob')}/lab`);
    await groupNode.port().call('set_local_ip', { uid: 'ab'.repeat(20), name: 'tincan0' });
    await groupNode.port().call('register_svc', { xmpp: { host: 'x', jid: jidOf('bob'), password: 'p' }, overlay: 'lab' });
    await clock.advance(500);
    expect(alice.ctl.peers.member('ab'.repeat(20))).toBeUndefined();
    expect(alice.ctl.status().mappings).toEqual([]);
  });

  it('links this account\'s other devices (own_devices), not with own_devices false', async () => {
    const laptop = await socialNode(net, clock, 'alice', { resource: 'laptop' });
    const phone = await socialNode(net, clock, 'alice', { resource: 'phone', config: { own_devices: false } });
    await clock.advance(500);
    expect(laptop.ctl.addressOf(phone.uid)).toBe('172.31.0.2');
    expect(phone.ctl.addressOf(laptop.uid)).toBeNull();
  });

  it('a friend added by a roster push becomes a peer at once', async () => {
    const alice = await socialNode(net, clock, 'alice', { roster: { bob: 'to' } });
    const bob = await socialNode(net, clock, 'bob', { roster: { alice: 'from' } });
    await clock.advance(500);
    expect(alice.ctl.peers.member(bob.uid)).toBeUndefined();
    alice.dp.rosterPush([{ jid: jidOf('bob'), subscription: 'both' }]);
    bob.dp.rosterPush([{ jid: jidOf('alice'), subscription: 'both' }]);
    await clock.advance(100);
    expect(alice.ctl.peers.member(bob.uid)).toBeDefined();
    expect(alice.ctl.addressOf(bob.uid)).toBe('172.31.0.2');
    alice.dp.emitPacket(unmappedFrame(alice.uid, '172.31.0.1', '172.31.0.2'));
    await clock.advance(2000);
    expect(linkState(alice, bob)).toBe('up');
    expect(linkState(bob, alice)).toBe('up');
  });
});

describe('SocialVpnController: membership', () => {
  it('members narrows friends to roster groups (a push that adds the group admits); keys are pinned in the state directory', async () => {
    const alice = await socialNode(net, clock, 'alice', { roster: { bob: 'both', carol: 'both' }, config: { members: { groups: ['family'], jids: [], domains: [] } } });
    const bob = await socialNode(net, clock, 'bob', { roster: { alice: 'both' } });
    const carol = await socialNode(net, clock, 'carol', { roster: { alice: 'both' } });
    await clock.advance(500);
    expect(alice.ctl.peers.member(bob.uid)).toBeUndefined();
    expect(alice.ctl.status().membership.refusals).toMatchObject({ not_member: 2 });
    alice.dp.rosterPush([{ jid: jidOf('bob'), subscription: 'both', groups: ['family'] }]);
    await clock.advance(100);
    expect(alice.ctl.peers.member(bob.uid)).toBeDefined();
    expect(alice.ctl.peers.member(carol.uid)).toBeUndefined();
    expect(alice.dp.peerCerts.get(bob.uid)).toBe(bob.dp.cert);
    // bob's pinned key is in alice's state directory
    await alice.ctl.stop();
    const pins = JSON.parse(readFileSync(join(alice.config.state_dir, 'socialvpn-pins.json'), 'utf8')) as { pins: Record<string, { fingerprint: string }> };
    expect(Object.keys(pins.pins)).toEqual([`${jidOf('bob')} ${bob.uid}`]);
    // and a restarted controller that attaches to the running datapath asks it for the roster (groups)
    const ctl = await alice.restartController();
    await clock.advance(6000);
    expect(alice.dp.callsOf('get_roster').length).toBeGreaterThanOrEqual(1);
    expect(ctl.peers.member(bob.uid)).toBeDefined();
  });
});

describe('SocialVpnController: addresses are stable', () => {
  it('across controller restarts, datapath restarts and friends coming and going', async () => {
    const alice = await socialNode(net, clock, 'alice', { roster: { bob: 'both', carol: 'both', dave: 'both' } });
    const bob = await socialNode(net, clock, 'bob', { roster: { alice: 'both' } });
    const carol = await socialNode(net, clock, 'carol', { roster: { alice: 'both' } });
    await clock.advance(500);
    expect(alice.ctl.addressOf(bob.uid)).toBe('172.31.0.2');
    expect(alice.ctl.addressOf(carol.uid)).toBe('172.31.0.3');
    await clock.advance(2000); // state written
    // Controller restart: the state file gives the same addresses back, before any presence.
    const ctl = await alice.restartController();
    expect(ctl.addressOf(bob.uid)).toBe('172.31.0.2');
    expect(ctl.addressOf(carol.uid)).toBe('172.31.0.3');
    // bob goes offline and comes back: same address; dave appears meanwhile and gets the next one.
    net.offline(bob.dp);
    await clock.advance(100);
    const dave = await socialNode(net, clock, 'dave', { roster: { alice: 'both' } });
    await clock.advance(100);
    expect(ctl.addressOf(dave.uid)).toBe('172.31.0.4');
    bob.dp.goOnline();
    await clock.advance(100);
    expect(ctl.addressOf(bob.uid)).toBe('172.31.0.2');
    // Datapath restart: re-driven, mappings sent again, still the same.
    alice.dp.restart();
    await clock.advance(30_000);
    expect(alice.ctl.counters.datapath_restarts).toBe(1);
    expect(alice.dp.map4.get('172.31.0.2')).toBe(bob.uid);
    expect(alice.dp.map4.get('172.31.0.3')).toBe(carol.uid);
    expect(alice.dp.map4.get('172.31.0.4')).toBe(dave.uid);
    // A brand-new controller object on the same state directory agrees.
    await alice.ctl.flushState();
    const again = new SocialVpnController({
      config: alice.config, client: alice.dp.port(), logger: captureLogger().logger, clock, statusFile: null,
    });
    expect(again.uid).toBe(alice.uid);
    expect(again.addressOf(dave.uid)).toBe('172.31.0.4');
  });

  it('a /30 has room for one friend device: the one seen longest ago gives its address up', async () => {
    const cfg = { subnet: '10.9.9.0/30' };
    const alice = await socialNode(net, clock, 'alice', { roster: { bob: 'both', carol: 'both' }, config: cfg });
    const bob = await socialNode(net, clock, 'bob', { roster: { alice: 'both' } });
    await clock.advance(500);
    expect(alice.ctl.addressOf(bob.uid)).toBe('10.9.9.2');
    const carol = await socialNode(net, clock, 'carol', { roster: { alice: 'both' } });
    await clock.advance(500);
    expect(alice.ctl.addressOf(carol.uid)).toBeNull(); // bob is online: no room
    expect(alice.ctl.counters.address_pool_exhausted).toBe(1);
    net.offline(bob.dp);
    await clock.advance(100);
    carol.dp.restart(); // carol comes back
    await carol.ctl.stop();
    const c2 = await carol.restartController();
    await clock.advance(30_000);
    expect(c2.uid).toBe(carol.uid);
    expect(alice.ctl.addressOf(carol.uid)).toBe('10.9.9.2');
    expect(alice.ctl.addressOf(bob.uid)).toBeNull();
    expect(alice.ctl.counters.mappings_evicted).toBe(1);
  });

  it('refuses a state file it cannot read, naming it', async () => {
    const config = settings('alice');
    writeFileSync(join(config.state_dir, STATE_FILE), '{ "version": 1, "uid": "nope" }');
    const make = () => new SocialVpnController({ config, client: new FakeDatapath(net, 'a@x/y').port(), logger: captureLogger().logger, clock });
    expect(make).toThrow(StateFileError);
    expect(make).toThrow(/socialvpn-state\.json: unexpected content \(uid: /);
    writeFileSync(join(config.state_dir, STATE_FILE), '{ "version": 1,');
    expect(make).toThrow(/not valid JSON/);
  });
});

describe('SocialVpnController: on-demand links', () => {
  it('a packet to a friend\'s address makes the link; the packet is delivered once it is up; idle links are trimmed', async () => {
    const { alice, bob } = await pair({ alice: { roster: { bob: 'both' }, config: { idle_timeout_s: 60 } } });
    const bobAddr = alice.ctl.addressOf(bob.uid)!;
    const frame = unmappedFrame(alice.uid, '172.31.0.1', bobAddr);
    for (let i = 0; i < 3; i++) alice.dp.emitPacket(frame);
    await clock.advance(2000);
    expect(linkState(alice, bob)).toBe('up');
    expect(linkState(bob, alice)).toBe('up');
    expect(alice.dp.injected.length).toBe(3);
    expect(alice.dp.injected[0]!.subarray(20, 40).equals(uidToBytes(bob.uid))).toBe(true);
    // Both sides mapped the other into their own subnet, with translation.
    expect(remoteIpCalls(bob, alice.uid).at(-1)).toEqual({ uid: alice.uid, ip4: '172.31.0.2', ip6: ip6FromUid(alice.uid), translate: true });
    // The con_req carries the social overlay; ip4 is the sender's own address (not used by the receiver).
    const req = net.signals.find((s) => s.type === 'con_req')!;
    expect(req.data).toMatchObject({ overlay: SOCIAL_OVERLAY, ip4: '172.31.0.1', proactive: false });
    await clock.advance(70_000);
    expect(linkState(alice, bob)).toBe('idle');
    expect(alice.ctl.counters.links_trimmed_idle).toBe(1);
    expect(alice.dp.map4.get(bobAddr)).toBe(bob.uid); // the mapping stays while bob is online
  });

  it('counts packets to unassigned addresses, broadcast, offline friends and transit frames; makes no link', async () => {
    const alice = await socialNode(net, clock, 'alice', { roster: { bob: 'both' } });
    const bob = await socialNode(net, clock, 'bob', { roster: { alice: 'both' } });
    await clock.advance(500);
    net.offline(bob.dp);
    await clock.advance(100);
    alice.dp.emitPacket(unmappedFrame(alice.uid, '172.31.0.1', '172.31.0.99'));
    alice.dp.emitPacket(unmappedFrame(alice.uid, '172.31.0.1', '172.31.255.255'));
    alice.dp.emitPacket(unmappedFrame(alice.uid, '172.31.0.1', '8.8.8.8'));
    alice.dp.emitPacket(unmappedFrame(alice.uid, '172.31.0.1', '172.31.0.2')); // bob: offline
    alice.dp.emitPacket(unmappedFrame('cd'.repeat(20), '10.0.0.1', '10.0.0.2'));
    alice.dp.emitPacket(Buffer.alloc(10));
    await clock.advance(100);
    expect(alice.ctl.counters).toMatchObject({
      unmapped_packets: 6, unmapped_not_friend: 1, unmapped_outside_subnet: 2, unmapped_offline: 1, transit_dropped: 1, unmapped_malformed: 1,
    });
    expect(alice.dp.callsOf('create_link').length).toBe(0);
  });
});

describe('SocialVpnController: removal from the roster', () => {
  it('trims the link at once, removes the mappings, and refuses the ex-friend afterwards', async () => {
    const { alice, bob } = await pair();
    alice.dp.emitPacket(unmappedFrame(alice.uid, '172.31.0.1', '172.31.0.2'));
    await clock.advance(2000);
    expect(linkState(alice, bob)).toBe('up');
    await clock.advance(1000);
    alice.dp.calls.length = 0;
    alice.dp.rosterPush([{ jid: jidOf('bob'), subscription: 'remove' }]);
    await clock.settle(); // no poll, no timer: at once
    expect(linkState(alice, bob)).toBe('idle');
    expect(alice.dp.links.has(bob.uid)).toBe(false);
    expect(alice.dp.callsOf('trim_link').map((c) => c.params.uid)).toEqual([bob.uid]);
    expect(alice.dp.map4.has('172.31.0.2')).toBe(false);
    expect(alice.dp.map6.has(ip6FromUid(bob.uid))).toBe(false);
    expect(alice.ctl.addressOf(bob.uid)).toBeNull();
    expect(alice.ctl.counters.links_trimmed_unfriended).toBe(1);
    expect(alice.ctl.peers.member(bob.uid)).toBeUndefined();
    await clock.advance(2000);
    expect((await readState(alice)).mappings[bob.uid]).toBeUndefined();
    expect((await readState(alice)).roster?.items[jidOf('bob')]).toBeUndefined();
    // bob still wants the link: his offers are refused, and nothing is made.
    bob.dp.emitPacket(unmappedFrame(bob.uid, '172.31.0.1', '172.31.0.2'));
    await clock.advance(30_000);
    expect(alice.ctl.refusals.not_friend).toBeGreaterThanOrEqual(1);
    expect(alice.dp.callsOf('create_link')).toEqual([]);
    expect(linkState(alice, bob)).toBe('idle');
    // a packet to bob's old address starts nothing either
    alice.dp.emitPacket(unmappedFrame(alice.uid, '172.31.0.1', '172.31.0.2'));
    await clock.advance(5000);
    expect(alice.dp.callsOf('create_link')).toEqual([]);
  });

  it('a downgraded subscription (both → to) counts as removal too', async () => {
    const { alice, bob } = await pair();
    alice.dp.rosterPush([{ jid: jidOf('bob'), subscription: 'to' }]);
    await clock.settle();
    expect(alice.ctl.addressOf(bob.uid)).toBeNull();
    expect(alice.ctl.peers.member(bob.uid)).toBeUndefined();
  });

  it('a removal missed while the controller was down is applied by the next full roster', async () => {
    const { alice, bob } = await pair();
    await clock.advance(2000);
    await alice.ctl.stop();
    alice.dp.roster = [];
    alice.dp.refusesGetRoster = true; // an older datapath: get_roster would give the new roster at once
    // The controller comes back with the stored roster (bob still a friend) ...
    const ctl = await alice.restartController();
    expect(ctl.roster.source).toBe('state');
    expect(ctl.addressOf(bob.uid)).toBe('172.31.0.2');
    // ... and the next login's full roster removes him.
    net.offline(alice.dp);
    alice.dp.goOnline();
    await clock.advance(100);
    expect(ctl.addressOf(bob.uid)).toBeNull();
  });
});

describe('SocialVpnController: admission', () => {
  it('a friend of a friend is not admitted, and the common friend forwards nothing', async () => {
    // alice – bob – carol: alice and carol are not friends.
    const alice = await socialNode(net, clock, 'alice', { roster: { bob: 'both' } });
    const bob = await socialNode(net, clock, 'bob', { roster: { alice: 'both', carol: 'both' } });
    const carol = await socialNode(net, clock, 'carol', { roster: { bob: 'both' } });
    await clock.advance(500);
    expect(alice.ctl.peers.member(carol.uid)).toBeUndefined();
    expect(alice.ctl.addressOf(carol.uid)).toBeNull();
    expect(carol.ctl.addressOf(alice.uid)).toBeNull();
    // carol (a stranger to alice) offers a link directly: refused, no answer, no link.
    const req = { overlay: SOCIAL_OVERLAY, ip4: '172.31.0.1', attempt: '00112233445566ff', description: { type: 'offer', sdp: 'v=0' } };
    alice.dp.emit({ event: 'signal', uid: carol.uid, jid: carol.dp.jid, type: 'con_req', data: req });
    alice.dp.emit({ event: 'signal', uid: carol.uid, jid: carol.dp.jid, type: 'con_req', data: req });
    await clock.advance(100);
    expect(alice.ctl.refusals).toEqual({ not_friend: 2 });
    expect(logged(alice.lines, 'signal refused').length).toBe(1); // rate-limited
    expect(alice.dp.callsOf('create_link')).toEqual([]);
    expect(net.signals.filter((s) => s.type === 'con_reject')).toEqual([]);
    // bob links with both; then a frame from carol's link addressed to alice reaches bob's controller
    // as transit: dropped, never injected.
    bob.dp.emitPacket(unmappedFrame(bob.uid, '172.31.0.1', bob.ctl.addressOf(alice.uid)!));
    bob.dp.emitPacket(unmappedFrame(bob.uid, '172.31.0.1', bob.ctl.addressOf(carol.uid)!));
    await clock.advance(2000);
    expect(linkState(bob, alice)).toBe('up');
    expect(linkState(bob, carol)).toBe('up');
    const injectedBefore = bob.dp.injected.length;
    const transit = Buffer.concat([uidToBytes(carol.uid), uidToBytes(alice.uid), unmappedFrame(carol.uid, '172.31.0.1', '172.31.0.3').subarray(40)]);
    bob.dp.emitPacket(transit);
    await clock.advance(100);
    expect(bob.ctl.counters.transit_dropped).toBe(1);
    expect(bob.dp.injected.length).toBe(injectedBefore);
  });

  it('refuses a friend device announcing another friend\'s UID, wrong JIDs and foreign overlays in signals', async () => {
    const alice = await socialNode(net, clock, 'alice', { roster: { bob: 'both', mallory: 'both' } });
    const bob = await socialNode(net, clock, 'bob', { roster: { alice: 'both' } });
    await clock.advance(500);
    // mallory (a friend) announces bob's UID: bob's address stays bob's, mallory is not admitted.
    alice.dp.presence({ uid: bob.uid, jid: `${jidOf('mallory')}/evil`, overlay: SOCIAL_OVERLAY, online: true });
    await clock.advance(100);
    expect(alice.ctl.peers.get(bob.uid)?.status).toBe('member');
    expect(alice.ctl.peers.get(bob.uid)?.jid).toBe(bob.dp.jid);
    const req = (over: object = {}) => ({ overlay: SOCIAL_OVERLAY, ip4: '10.0.0.1', attempt: '00112233445566ff', description: { type: 'offer', sdp: 'v=0' }, ...over });
    alice.dp.emit({ event: 'signal', uid: bob.uid, jid: `${jidOf('mallory')}/evil`, type: 'con_req', data: req() });
    alice.dp.emit({ event: 'signal', uid: bob.uid, jid: `${jidOf('bob')}/other`, type: 'con_req', data: req() });
    alice.dp.emit({ event: 'signal', uid: bob.uid, jid: bob.dp.jid, type: 'con_req', data: req({ overlay: 'lab' }) });
    await clock.advance(100);
    expect(alice.ctl.refusals).toEqual({ uid_of_other_jid: 1, jid_mismatch: 1, overlay_mismatch: 1 });
    expect(alice.dp.callsOf('create_link')).toEqual([]);
    expect(net.signals.filter((s) => s.type === 'con_reject').map((s) => s.to)).toEqual([bob.dp.jid]);
  });

  it('never crashes on garbage signals from a friend; still links afterwards', async () => {
    const { alice, bob } = await pair();
    for (const data of [null, 42, 'x', [], {}, { overlay: SOCIAL_OVERLAY }]) {
      alice.dp.emit({ event: 'signal', uid: bob.uid, jid: bob.dp.jid, type: 'con_req', data: data as never });
    }
    alice.dp.emit({ event: 'signal', uid: bob.uid, jid: bob.dp.jid, type: 'whatever', data: {} });
    alice.dp.emit({ event: 'signal', uid: alice.uid, jid: alice.dp.jid, type: 'con_req', data: {} });
    await clock.advance(100);
    expect(alice.ctl.counters).toMatchObject({ signals_malformed: 6, signals_unknown_type: 1, signals_bounced: 1 });
    alice.dp.emitPacket(unmappedFrame(alice.uid, '172.31.0.1', '172.31.0.2'));
    await clock.advance(2000);
    expect(linkState(alice, bob)).toBe('up');
  });
});

/** A state file with `uid`, `mappings` and a traffic history (uid → days ago with 500 packets each). */
function stateWith(uid: Uid, mappings: SocialVpnState['mappings'], history: Record<Uid, number[]>): SocialVpnState {
  const now = clock.now();
  const traffic: SocialVpnState['traffic'] = {};
  for (const [u, daysAgo] of Object.entries(history)) {
    traffic[u] = { days: Object.fromEntries(daysAgo.map((d) => [utcDay(now - d * 86_400_000), { bytes: 100_000, packets: 500 }])), link: null };
  }
  return { version: 1, uid, subnet: '172.31.0.0/16', address: '172.31.0.1', next_ip4: null, mappings, roster: null, traffic };
}

const randomUid = (): Uid => randomBytes(20).toString('hex');

describe('SocialVpnController: social profile', () => {
  it('a frequent friend gets a proactive link; the others stay on demand; the proactive link is never idle-trimmed', async () => {
    // bob and carol first, so that alice's history can name their UIDs.
    const bob = await socialNode(net, clock, 'bob', { roster: { alice: 'both' }, config: { idle_timeout_s: 60 } });
    const carol = await socialNode(net, clock, 'carol', { roster: { alice: 'both' }, config: { idle_timeout_s: 60 } });
    const aliceUid = randomUid();
    const now = clock.now();
    const state = stateWith(aliceUid, {
      [bob.uid]: { jid: jidOf('bob'), ip4: '172.31.0.7', since_ms: now - 1e9, last_seen_ms: now - 1e6 },
      [carol.uid]: { jid: jidOf('carol'), ip4: '172.31.0.8', since_ms: now - 1e9, last_seen_ms: now - 1e6 },
    }, {
      [bob.uid]: [0, 1, 2, 3, 5, 8], // talks to bob most days
      [carol.uid]: [20], // carol, once, weeks ago
    });
    const alice = await socialNode(net, clock, 'alice', { roster: { bob: 'both', carol: 'both' }, config: { idle_timeout_s: 60 }, state });
    const ctl = alice.ctl;
    expect(ctl.uid).toBe(aliceUid);
    await clock.advance(8000);
    expect(ctl.isProactive(bob.uid)).toBe(true);
    expect(ctl.isProactive(carol.uid)).toBe(false);
    expect(ctl.signaling.state(bob.uid)).toBe('up'); // no packet needed
    expect(ctl.signaling.state(carol.uid)).toBe('idle');
    expect(ctl.counters.offers_proactive + bob.ctl.counters.offers_proactive).toBe(1);
    // The proactive offer said so; bob (for whom alice is not frequent) keeps it for alice.
    expect(bob.ctl.status().mappings.find((m) => m.uid === aliceUid)).toMatchObject({ proactive: false, peer_keeps: true, link: 'up' });
    // The answer trickled (a first link): the status files count what went out and was applied.
    const [sent, applied] = [ctl, bob.ctl].map((c) => c.status().trickle).reduce((acc, t) => [acc[0]! + t.candidates_sent, acc[1]! + t.candidates_applied], [0, 0]);
    expect(sent).toBeGreaterThan(0);
    expect(applied).toBe(sent);
    // carol on demand:
    alice.dp.emitPacket(unmappedFrame(aliceUid, '172.31.0.1', '172.31.0.8'));
    await clock.advance(2000);
    expect(ctl.signaling.state(carol.uid)).toBe('up');
    // Idle for two minutes: carol's link goes, bob's stays on both ends.
    await clock.advance(120_000);
    expect(ctl.signaling.state(carol.uid)).toBe('idle');
    expect(ctl.signaling.state(bob.uid)).toBe('up');
    expect(bob.ctl.signaling.state(aliceUid)).toBe('up');
    expect(ctl.status().mappings.map((m) => [m.jid, m.ip4, m.proactive, m.link])).toEqual([
      [jidOf('bob'), '172.31.0.7', true, 'up'],
      [jidOf('carol'), '172.31.0.8', false, 'idle'],
    ]);
  });

  it('the proactive set is the top proactive_links by score; proactive_links 0 links nothing', async () => {
    const friends = await Promise.all(['b1', 'b2', 'b3'].map((u) => socialNode(net, clock, u, { roster: { alice: 'both' } })));
    const now = clock.now();
    const mappings: SocialVpnState['mappings'] = {};
    friends.forEach((f, i) => (mappings[f.uid] = { jid: f.jid, ip4: `172.31.0.${i + 2}`, since_ms: now, last_seen_ms: now }));
    const state = stateWith(randomUid(), mappings, {
      [friends[0]!.uid]: [0, 1, 2],
      [friends[1]!.uid]: [0, 1, 2, 3, 4],
      [friends[2]!.uid]: [0, 1],
    });
    const alice = await socialNode(net, clock, 'alice', {
      roster: { b1: 'both', b2: 'both', b3: 'both' },
      config: { social_profile: { proactive_links: 2, min_score: 1.5, half_life_days: 7, active_day_packets: 50 } },
      state,
    });
    const ctl = alice.ctl;
    await clock.advance(8000);
    expect([ctl.isProactive(friends[0]!.uid), ctl.isProactive(friends[1]!.uid), ctl.isProactive(friends[2]!.uid)]).toEqual([true, true, false]);
    expect(ctl.signaling.activeCount()).toBe(2);

    const quiet = await socialNode(net, clock, 'quiet', {
      roster: { b1: 'both' }, config: { social_profile: { proactive_links: 0, min_score: 0, half_life_days: 7, active_day_packets: 1 } },
    });
    friends[0]!.dp.rosterPush([{ jid: jidOf('quiet'), subscription: 'both' }]);
    await clock.advance(10_000);
    expect(quiet.ctl.signaling.activeCount()).toBe(0);
  });

  it('at max_links, on-demand links make room (least recently used first); the proactive link never does', async () => {
    const [bob, carol, dave] = await Promise.all(['bob', 'carol', 'dave'].map((u) => socialNode(net, clock, u, { roster: { alice: 'both' } })));
    const now = clock.now();
    const mappings: SocialVpnState['mappings'] = {};
    [bob!, carol!, dave!].forEach((f, i) => (mappings[f.uid] = { jid: f.jid, ip4: `172.31.0.${i + 2}`, since_ms: now, last_seen_ms: now }));
    const alice = await socialNode(net, clock, 'alice', {
      roster: { bob: 'both', carol: 'both', dave: 'both' },
      config: { max_links: 2, social_profile: { proactive_links: 1, min_score: 1.5, half_life_days: 7, active_day_packets: 50 } },
      state: stateWith(randomUid(), mappings, { [bob!.uid]: [0, 1, 2] }),
    });
    await clock.advance(8000);
    expect(alice.ctl.signaling.state(bob!.uid)).toBe('up');
    alice.dp.emitPacket(unmappedFrame(alice.uid, '172.31.0.1', '172.31.0.3')); // carol
    await clock.advance(2000);
    expect(alice.ctl.signaling.state(carol!.uid)).toBe('up');
    await clock.advance(10_000);
    alice.dp.emitPacket(unmappedFrame(alice.uid, '172.31.0.1', '172.31.0.4')); // dave: carol makes room
    await clock.advance(2000);
    expect(alice.ctl.signaling.state(dave!.uid)).toBe('up');
    expect(alice.ctl.signaling.state(carol!.uid)).toBe('idle');
    expect(alice.ctl.signaling.state(bob!.uid)).toBe('up');
    expect(alice.ctl.counters.links_trimmed_lru).toBe(1);
  });

  it('keeps a per-friend traffic history from the link counters; enough active days make a friend proactive', async () => {
    const never = { idle_timeout_s: 0 };
    const { alice, bob } = await pair({ alice: { roster: { bob: 'both' }, config: never }, bob: { roster: { alice: 'both' }, config: never } });
    alice.dp.emitPacket(unmappedFrame(alice.uid, '172.31.0.1', '172.31.0.2'));
    await clock.advance(2000);
    expect(linkState(alice, bob)).toBe('up');
    alice.dp.traffic(bob.uid, 40, 40_000); // 80 packets, 80 kB
    await clock.advance(5000);
    expect(alice.ctl.status().mappings[0]).toMatchObject({ traffic_today: { packets: 80, bytes: 80_000 }, active_days: 1, score: 1, proactive: false });
    alice.dp.traffic(bob.uid, 10, 0);
    await clock.advance(5000);
    expect(alice.ctl.status().mappings[0]!.traffic_today.packets).toBe(100); // counted once, not again
    // The next day, more traffic: two active days → score 1.9 ≥ 1.5: proactive.
    await clock.advance(86_400_000);
    alice.dp.traffic(bob.uid, 30, 0);
    await clock.advance(5000);
    expect(alice.ctl.isProactive(bob.uid)).toBe(true);
    await clock.advance(61_000); // lazy write of the traffic history
    const days = (await readState(alice)).traffic[bob.uid]!.days;
    expect(Object.values(days).map((d) => d.packets)).toEqual([100, 60]);
    // A controller restart does not count the link's counters twice.
    const ctl = await alice.restartController();
    await clock.advance(10_000);
    expect(ctl.status().mappings[0]!.traffic_today.packets).toBe(60);
    expect(ctl.isProactive(bob.uid)).toBe(true);
  });
});

describe('SocialVpnController: restarts', () => {
  it('a restarted controller adopts the up links (mapping from the state file) and recreates nothing', async () => {
    const { alice, bob } = await pair();
    alice.dp.emitPacket(unmappedFrame(alice.uid, '172.31.0.1', '172.31.0.2'));
    await clock.advance(3000);
    expect(linkState(alice, bob)).toBe('up');
    const link = alice.dp.links.get(bob.uid);
    alice.dp.calls.length = 0;
    const ctl = await alice.restartController();
    await clock.advance(30_000);
    expect(ctl.signaling.state(bob.uid)).toBe('up');
    expect(ctl.signaling.session(bob.uid)?.adopted).toBe(true);
    expect(ctl.counters.links_adopted).toBe(1);
    expect(alice.dp.links.get(bob.uid)).toBe(link);
    expect(alice.dp.callsOf('create_link')).toEqual([]);
    expect(alice.dp.callsOf('trim_link')).toEqual([]);
    expect(ctl.addressOf(bob.uid)).toBe('172.31.0.2');
    expect(linkState(bob, alice)).toBe('up');
  });

  it('a restarted controller trims a link to someone who is no longer a friend', async () => {
    const { alice, bob } = await pair();
    alice.dp.emitPacket(unmappedFrame(alice.uid, '172.31.0.1', '172.31.0.2'));
    await clock.advance(3000);
    await alice.ctl.stop();
    // While the controller is down, the roster changes (and a new login reports it).
    alice.dp.roster = [];
    const ctl = await alice.restartController();
    net.offline(alice.dp);
    alice.dp.goOnline();
    await clock.advance(10_000);
    expect(alice.dp.links.has(bob.uid)).toBe(false);
    expect(ctl.addressOf(bob.uid)).toBeNull();
  });

  it('a friend removed while the controller is down loses link and address at its restart, with no new login (get_roster)', async () => {
    const { alice, bob } = await pair();
    alice.dp.emitPacket(unmappedFrame(alice.uid, '172.31.0.1', '172.31.0.2'));
    await clock.advance(3000);
    expect(linkState(alice, bob)).toBe('up');
    await alice.ctl.stop();
    alice.dp.rosterPush([{ jid: jidOf('bob'), subscription: 'remove' }]); // nobody listens
    const ctl = await alice.restartController();
    expect(ctl.addressOf(bob.uid)).toBeNull(); // at attach, before any link could be adopted
    await clock.advance(5_000);
    expect(alice.dp.links.has(bob.uid)).toBe(false);
    expect(ctl.counters.links_adopted).toBe(0);
    expect(ctl.status().roster).toMatchObject({ source: 'xmpp', friends: [] });
  });

  it('a datapath without get_roster: the controller still starts, on the roster it kept', async () => {
    const { alice, bob } = await pair();
    await alice.ctl.stop();
    alice.dp.refusesGetRoster = true;
    const ctl = await alice.restartController();
    await clock.advance(5_000);
    expect(ctl.addressOf(bob.uid)).toBe('172.31.0.2');
    expect(alice.lines.some((l) => String(l.msg).includes('no get_roster'))).toBe(true);
  });

  it('a restarted datapath (new token) is re-driven: vNIC, XMPP, roster, mappings, proactive links', async () => {
    const bob = await socialNode(net, clock, 'bob', { roster: { alice: 'both' } });
    const now = clock.now();
    const state = stateWith(randomUid(), { [bob.uid]: { jid: bob.jid, ip4: '172.31.0.2', since_ms: now, last_seen_ms: now } }, { [bob.uid]: [0, 1, 2] });
    const alice = await socialNode(net, clock, 'alice', { roster: { bob: 'both' }, state });
    await clock.advance(8000);
    expect(linkState(alice, bob)).toBe('up');
    alice.dp.restart();
    await clock.advance(30_000);
    expect(alice.dp.callsOf('set_local_ip').length).toBe(2);
    expect(alice.dp.callsOf('register_svc').length).toBe(2);
    expect(alice.ctl.counters.datapath_restarts).toBe(1);
    expect(alice.dp.map4.get('172.31.0.2')).toBe(bob.uid);
    expect(linkState(alice, bob)).toBe('up');
    expect(linkState(bob, alice)).toBe('up');
  });

  it('refuses to drive a datapath whose vNIC belongs to another UID', async () => {
    const dp = new FakeDatapath(net, `${jidOf('alice')}/tincan`);
    await dp.port().call('set_local_ip', { uid: 'ef'.repeat(20), name: 'tincan0' });
    const { logger } = captureLogger();
    const ctl = new SocialVpnController({ config: settings('alice'), client: dp.port(), logger, clock, statusFile: null });
    void ctl.start();
    await vi.waitFor(() => expect(ctl.supervisor.lastError).toMatch(/belongs to node efef.*restart the datapath/));
    await ctl.stop();
  });
});
