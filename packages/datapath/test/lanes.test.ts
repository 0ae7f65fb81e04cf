import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { LANE_CONTROL_CHANNEL_ID, uidFromIp4, type SessionDescription, type Uid } from '@tincan/protocol';
import { ForwardingTable } from '../src/forwarding-table.js';
import type { Link } from '../src/link.js';
import { FromLane, ToLane, applyTableOp, snapshotOps, type TableOp } from '../src/lanes/lane-ipc.js';
import { LaneWorker } from '../src/lanes/lane-worker.js';
import { PeerLanes, type LaneIce, type PeerLanesHost } from '../src/lanes/peer-lanes.js';

const A = uidFromIp4('10.254.0.2');
const B = uidFromIp4('10.254.0.3');
const C = uidFromIp4('10.254.0.4');
const log = pino({ level: 'silent' });

/** Everything a get_state or a lookup can see of a table, for comparing a replica with its primary. */
function view(t: ForwardingTable) {
  const peers = [...t.allPeers()].map((p) => ({
    uid: p.uid, ip4: [...p.ip4].sort(), ip6: [...p.ip6].sort(), subnets: [...p.subnets].sort(),
    via: p.via?.uid ?? null, translate4: p.translate4,
  })).sort((x, y) => x.uid.localeCompare(y.uid));
  const probe = (ip: string) => {
    const b = Buffer.from(ip.split('.').map(Number));
    return t.lookup4(b, 0)?.uid ?? null;
  };
  return { peers, routes: t.routes(), subnets: t.subnets(), probes: ['10.254.0.2', '10.254.0.9', '10.44.0.7', '10.44.1.7'].map(probe) };
}

/** Applies ops to a primary table the way Datapath's verbs do, and collects them for replication. */
const OPS: TableOp[] = [
  { op: 'map4', uid: A, ip: '10.254.0.2', translate: false },
  { op: 'map6', uid: A, ip: 'fd50::2' },
  { op: 'map4', uid: B, ip: '10.254.0.9', translate: true },
  { op: 'subnet', uid: B, cidr: '10.44.0.0/16', remove: false },
  { op: 'subnet', uid: C, cidr: '10.44.1.0/24', remove: false },
  { op: 'route', uid: C, via: A },
  { op: 'map4', uid: C, ip: '10.254.0.2', translate: false }, // moves A's address to C
  { op: 'unmap6', uid: A, ip: 'fd50::2' },
  { op: 'route', uid: B, via: C },
  { op: 'subnet', uid: C, cidr: '10.44.1.0/24', remove: true },
  { op: 'subnet', uid: B, cidr: '10.44.1.0/24', remove: false },
  { op: 'transit', enabled: true },
];

describe('forwarding-table replication to lanes', () => {
  it('replaying the operations in order gives the replica the primary\'s table', () => {
    const primary = new ForwardingTable();
    const replica = new ForwardingTable();
    for (const op of OPS) {
      applyTableOp(primary, op);
      // Each op crosses the IPC as data: it must survive the schema on the lane's side.
      const msg = ToLane.parse({ t: 'table', ops: [structuredClone(op)] });
      if (msg.t !== 'table') throw new Error('not a table message');
      applyTableOp(replica, msg.ops[0]!);
      expect(view(replica)).toEqual(view(primary));
    }
    expect(view(primary).probes).toEqual([C, B, B, B]);
  });

  it('a snapshot rebuilds a restarted lane\'s replica from empty, translation and routes included', () => {
    const primary = new ForwardingTable();
    for (const op of OPS) applyTableOp(primary, op);
    const ops = snapshotOps(primary, true);
    expect(ops.at(-1)).toEqual({ op: 'transit', enabled: true });
    const replica = new ForwardingTable();
    for (const op of ops) applyTableOp(replica, op);
    expect(view(replica)).toEqual(view(primary));
    expect(replica.peer(B)?.translate4).not.toBeNull();
  });
});

describe('lane IPC', () => {
  it('a lane process ignores and counts messages that are not ones it knows, without throwing', () => {
    const sent: FromLane[] = [];
    const w = new LaneWorker((m) => sent.push(m), log);
    for (const bad of [null, 42, 'init', {}, { t: 'init' }, { t: 'table', ops: [{ op: 'map4', uid: 'nope', ip: '1.2.3.4', translate: false }] },
      { t: 'link', peer: A }, { t: 'close', peer: A, extra: 1 }]) {
      expect(() => w.onMessage(bad)).not.toThrow();
    }
    expect(w.badMessages).toBe(8);
    // Before init it has no vNIC: a link request is ignored rather than half-made.
    w.onMessage({ t: 'link', peer: A, attempt: 1, stun: [], turn: [], rtcMtu: 1444 });
    expect(sent).toEqual([]);
    w.stop();
  });

  it('the primary rejects fallback batches whose layout is not the schema\'s', () => {
    expect(FromLane.safeParse({ t: 'fallback', kind: 'inside', buffer: 'AAAA', offsets: [40], lengths: [20] }).success).toBe(false);
    expect(FromLane.safeParse({ t: 'fallback', kind: 'sideways', buffer: new Uint8Array(60), offsets: [40], lengths: [20] }).success).toBe(false);
    expect(FromLane.safeParse({ t: 'fallback', kind: 'inside', buffer: new Uint8Array(60), offsets: [40], lengths: [20] }).success).toBe(true);
  });
});

/** A stand-in for the primary link's control channel; the lab test (test/lanes.test.ts) runs the real one. */
class FakeChannel {
  sent: string[] = [];
  open: () => void = () => undefined;
  message: (m: string | Buffer) => void = () => undefined;
  onOpen(cb: () => void) { this.open = cb; }
  onMessage(cb: (m: string | Buffer) => void) { this.message = cb; }
  onError() {}
  isOpen() { return true; }
  sendMessage(m: string) { this.sent.push(m); return true; }
  close() {}
}

function peerLanes(role: 'offerer' | 'answerer', candidate: 'host' | 'relay' = 'host') {
  const channel = new FakeChannel();
  const channelInit: unknown[] = [];
  const link = {
    uid: B, role, state: 'up' as string,
    createControlChannel: (_label: string, init: unknown) => { channelInit.push(init); return channel; },
    info: () => ({ local_candidate: candidate, remote_candidate: 'srflx' }),
  };
  const made: { lane: number; peer: Uid; attempt: number; remote?: SessionDescription }[] = [];
  const answers: { lane: number; attempt: number }[] = [];
  const host: PeerLanesHost & { bad: number } = {
    ourLanes: 3, bad: 0,
    rtcMtu: () => 1444,
    makeLaneLink: (lane, peer, attempt, _ice: LaneIce, remote) => { made.push({ lane, peer, attempt, ...(remote ? { remote } : {}) }); return true; },
    acceptLaneAnswer: (lane, _peer, attempt) => { answers.push({ lane, attempt }); },
    countBadControl() { this.bad++; },
  };
  const p = new PeerLanes(link as unknown as Link, { stun: [], turn: [] }, host, log);
  return { p, link, channel, channelInit, made, answers, host };
}

const fp = (x: string) => `v=0\r\na=fingerprint:sha-256 ${x}\r\n`;
const PEER_FP = 'AA:BB:CC';

describe('PeerLanes (in-band lane control of one primary link)', () => {
  it('says hello with its lane count on a negotiated channel 2 and, as offerer, offers min(ours, theirs) - 1 lane links', () => {
    const { p, channel, channelInit, made } = peerLanes('offerer');
    expect(channelInit).toEqual([{ negotiated: true, id: LANE_CONTROL_CHANNEL_ID }]);
    channel.open();
    expect(JSON.parse(channel.sent[0]!)).toEqual({ t: 'hello', lanes: 3 });
    p.setRemoteDescription(fp(PEER_FP));
    channel.message(JSON.stringify({ t: 'hello', lanes: 2 }));
    expect(p.agreed).toBe(2);
    expect(made).toEqual([{ lane: 1, peer: B, attempt: 1 }]);
    p.onLaneDescription(1, 1, { type: 'offer', sdp: fp('MINE') });
    expect(JSON.parse(channel.sent[1]!)).toMatchObject({ t: 'offer', lane: 1, attempt: 1 });
  });

  it('signals no lane link while the primary link is down, and retries', async () => {
    const { p, link, channel, made } = peerLanes('offerer');
    link.state = 'down';
    channel.message(JSON.stringify({ t: 'hello', lanes: 2 }));
    expect(made).toEqual([]);
    link.state = 'up';
    await new Promise((r) => setTimeout(r, 1600));
    expect(made.map((m) => m.lane)).toEqual([1]);
    p.close();
  });

  it('makes no lane links over a relayed primary link', () => {
    const { channel, made } = peerLanes('offerer', 'relay');
    channel.message(JSON.stringify({ t: 'hello', lanes: 3 }));
    expect(made).toEqual([]);
  });

  it('answers offers only with the primary link\'s fingerprint, for agreed lanes, and counts the rest', () => {
    const { p, channel, made, host } = peerLanes('answerer');
    p.setRemoteDescription(fp(PEER_FP));
    channel.message(JSON.stringify({ t: 'offer', lane: 1, attempt: 1, sdp: fp(PEER_FP) })); // before hello: lane 1 not agreed
    channel.message(JSON.stringify({ t: 'hello', lanes: 8 }));
    channel.message(JSON.stringify({ t: 'offer', lane: 1, attempt: 2, sdp: fp('EV:IL') })); // another certificate
    channel.message(JSON.stringify({ t: 'offer', lane: 1, attempt: 3, sdp: 'v=0\r\n' })); // no fingerprint
    channel.message(JSON.stringify({ t: 'offer', lane: 3, attempt: 4, sdp: fp(PEER_FP) })); // beyond min(3, 8)
    channel.message('{"t":"offer",'); // garbage
    channel.message(Buffer.from('binary'));
    channel.message(JSON.stringify({ t: 'renew', lane: 1 })); // only the offerer is asked to renew
    channel.message(JSON.stringify({ t: 'answer', lane: 1, attempt: 1, sdp: fp(PEER_FP) })); // an answerer gets no answers
    expect(made).toEqual([]);
    expect(host.bad).toBe(8);
    channel.message(JSON.stringify({ t: 'offer', lane: 2, attempt: 7, sdp: fp(PEER_FP) }));
    expect(made).toEqual([{ lane: 2, peer: B, attempt: 7, remote: { type: 'offer', sdp: fp(PEER_FP) } }]);
    p.onLaneDescription(2, 7, { type: 'answer', sdp: fp('MINE') });
    expect(JSON.parse(channel.sent.at(-1)!)).toMatchObject({ t: 'answer', lane: 2, attempt: 7 });
  });

  it('as offerer, ignores answers to older offers and re-offers when the peer asks', async () => {
    const { p, channel, made, answers } = peerLanes('offerer');
    p.setRemoteDescription(fp(PEER_FP));
    channel.message(JSON.stringify({ t: 'hello', lanes: 2 }));
    p.onLaneRestarted(1); // lane process restarted: attempt 2
    expect(made.map((m) => m.attempt)).toEqual([1, 2]);
    channel.message(JSON.stringify({ t: 'answer', lane: 1, attempt: 1, sdp: fp(PEER_FP) }));
    expect(answers).toEqual([]);
    channel.message(JSON.stringify({ t: 'answer', lane: 1, attempt: 2, sdp: fp(PEER_FP) }));
    expect(answers).toEqual([{ lane: 1, attempt: 2 }]);
    channel.message(JSON.stringify({ t: 'renew', lane: 1 }));
    await new Promise((r) => setTimeout(r, 1600)); // first retry after ~1 s (jittered ±25%)
    expect(made.map((m) => m.attempt)).toEqual([1, 2, 3]);
    p.close();
  });
});
