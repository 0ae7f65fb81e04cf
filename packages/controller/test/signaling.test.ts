import pino from 'pino';
import { beforeEach, describe, expect, it } from 'vitest';
import { parseControllerSignal, uidFromIp4, type Uid } from '@tincan/protocol';
import { ManualClock } from '../src/clock.js';
import { Signaling, type CloseReason, type SignalOutcome } from '../src/signaling.js';
import { FakeDatapath, FakeNet, type FakePort } from './fake-datapath.js';

const logger = pino({ level: 'silent' });

interface Side {
  ip4: string;
  uid: Uid;
  dp: FakeDatapath;
  port: FakePort;
  sig: Signaling;
  ups: Uid[];
  closed: { uid: Uid; reason: CloseReason; detail: string }[];
  repaired: Uid[];
  repairFailed: Uid[];
  outcomes: SignalOutcome[];
}

let clock: ManualClock;
let net: FakeNet;

async function side(ip4: string, opts: { trickle?: boolean } = {}): Promise<Side> {
  const uid = uidFromIp4(ip4);
  const dp = new FakeDatapath(net, `${ip4.replace(/\./g, '-')}@vpn.test/tincan`);
  const port = dp.port();
  let seq = 0;
  const rpc = {
    call: ((m: never, p: never) => {
      seq++;
      return port.call(m, p);
    }) as FakePort['call'],
  };
  const s: Side = { ip4, uid, dp, port, sig: null as unknown as Signaling, ups: [], closed: [], outcomes: [], repaired: [], repairFailed: [] };
  s.sig = new Signaling({
    localUid: uid,
    rpc,
    clock,
    logger,
    seq: () => seq,
    trickle: opts.trickle ?? false,
    hooks: {
      identity: () => ({ overlay: 'lab', ip4 }),
      ice: () => ({ stun: [], turn: [] }),
      prepare: async (peer, msg) => {
        await port.call('set_remote_ip', { uid: peer, ip4: msg.ip4 });
      },
      onUp: (peer) => s.ups.push(peer),
      onClosed: (peer, reason, detail) => s.closed.push({ uid: peer, reason, detail }),
      onRepaired: (peer) => s.repaired.push(peer),
      onRepairFailed: (peer) => s.repairFailed.push(peer),
    },
  });
  port.onEvent((e) => {
    if (e.event === 'signal') {
      const p = parseControllerSignal(e.type, e.data);
      if (!p.ok) return;
      if (p.type === 'con_req') s.outcomes.push(s.sig.handleConReq(e.uid, p.msg));
      else if (p.type === 'con_resp') s.outcomes.push(s.sig.handleConResp(e.uid, p.msg));
      else if (p.type === 'con_cand') s.outcomes.push(s.sig.handleConCand(e.uid, p.msg));
      else s.outcomes.push(s.sig.handleConReject(e.uid, p.msg));
    } else if (e.event === 'link') {
      s.sig.handleLinkEvent(e.uid, e.state, e.reason, e.repair === true);
    } else if (e.event === 'candidate') {
      s.sig.handleLocalCandidate(e.uid, e.candidate ?? null);
    }
  });
  await port.subscribe();
  await port.call('set_local_ip', { uid, name: 'tincan0', ip4: `${ip4}/16` });
  await port.call('register_svc', { xmpp: { host: 'x', port: 5222, jid: dp.jid, password: 'p', mechanism: 'PLAIN' }, overlay: 'lab' });
  return s;
}

/** Two sides, `lo` with the lower UID (without trickle ICE unless asked). */
async function pair(opts: { trickle?: boolean } = {}): Promise<{ lo: Side; hi: Side }> {
  const a = await side('10.9.0.1', opts);
  const b = await side('10.9.0.2', opts);
  await clock.settle();
  return a.uid < b.uid ? { lo: a, hi: b } : { lo: b, hi: a };
}

beforeEach(() => {
  clock = new ManualClock();
  net = new FakeNet(clock);
});

describe('Signaling', () => {
  it('makes a link in one round trip: con_req (offer) → con_resp (answer) → up on both sides', async () => {
    const { lo, hi } = await pair();
    expect(hi.sig.connect(lo.uid)).toBe(true);
    expect(hi.sig.connect(lo.uid)).toBe(false); // one attempt in flight per peer
    await clock.advance(1000);
    expect(net.signals.map((s) => s.type)).toEqual(['con_req', 'con_resp']);
    expect(hi.sig.state(lo.uid)).toBe('up');
    expect(lo.sig.state(hi.uid)).toBe('up');
    expect(hi.sig.session(lo.uid)?.role).toBe('offerer');
    expect(lo.sig.session(hi.uid)?.role).toBe('answerer');
    expect(hi.ups).toEqual([lo.uid]);
    expect(lo.dp.map4.get(hi.ip4)).toBe(hi.uid); // prepare() mapped the peer before the link
  });

  it('glare: both offer at once, the lower UID stays offerer and exactly one link results', async () => {
    const { lo, hi } = await pair();
    lo.sig.connect(hi.uid);
    hi.sig.connect(lo.uid);
    await clock.advance(2000);
    expect(hi.outcomes).toContain('glare_yielded');
    expect(lo.outcomes).toContain('glare_kept');
    expect(lo.sig.state(hi.uid)).toBe('up');
    expect(hi.sig.state(lo.uid)).toBe('up');
    expect(lo.dp.links.get(hi.uid)?.role).toBe('offerer');
    expect(hi.dp.links.get(lo.uid)?.role).toBe('answerer');
    expect(lo.closed).toEqual([]);
    expect(hi.closed).toEqual([]);
    // Nothing is left to time out and tear the link down later.
    await clock.advance(120_000);
    expect(lo.sig.state(hi.uid)).toBe('up');
    expect(hi.sig.state(lo.uid)).toBe('up');
  });

  it('glare where the lower UID\'s first con_req is lost: its resend completes the link', async () => {
    const { lo, hi } = await pair();
    let dropped = false;
    net.drop = (s) => {
      if (!dropped && s.from === lo.uid && s.type === 'con_req') return (dropped = true);
      return false;
    };
    lo.sig.connect(hi.uid);
    hi.sig.connect(lo.uid);
    await clock.advance(3000);
    expect(dropped).toBe(true);
    expect(lo.sig.state(hi.uid)).toBe('up');
    expect(hi.sig.state(lo.uid)).toBe('up');
    expect(lo.dp.links.get(hi.uid)?.role).toBe('offerer');
  });

  it('a duplicate con_req does not tear an up link down; its con_resp is sent again', async () => {
    const { lo, hi } = await pair();
    lo.sig.connect(hi.uid);
    await clock.advance(3000); // past the resend rate limit
    const req = net.signals.find((s) => s.type === 'con_req')!;
    const link = hi.dp.links.get(lo.uid);
    const before = net.signals.length;
    hi.dp.emit({ event: 'signal', uid: lo.uid, jid: lo.dp.jid, type: 'con_req', data: req.data as never });
    await clock.advance(1000);
    hi.dp.emit({ event: 'signal', uid: lo.uid, jid: lo.dp.jid, type: 'con_req', data: req.data as never });
    await clock.advance(1000);
    expect(hi.outcomes.slice(-2)).toEqual(['duplicate', 'duplicate']);
    expect(hi.dp.links.get(lo.uid)).toBe(link);
    expect(hi.sig.state(lo.uid)).toBe('up');
    expect(net.signals.slice(before).map((s) => s.type)).toEqual(['con_resp']); // once: rate-limited
    // and the offerer ignores the repeated answer
    expect(lo.outcomes.at(-1)).toBe('duplicate');
    expect(lo.sig.state(hi.uid)).toBe('up');
  });

  it('a con_req with a new attempt (the peer restarted) replaces the link', async () => {
    const { lo, hi } = await pair();
    lo.sig.connect(hi.uid);
    await clock.advance(1000);
    const old = hi.dp.links.get(lo.uid);
    // lo's controller restarts: a fresh Signaling offers again with a new attempt.
    lo.sig.trim(hi.uid, 'test restart');
    await clock.advance(2000);
    lo.sig.connect(hi.uid);
    await clock.advance(2000);
    expect(hi.outcomes.filter((o) => o === 'answered').length).toBe(2);
    expect(hi.dp.links.get(lo.uid)).not.toBe(old);
    expect(hi.sig.state(lo.uid)).toBe('up');
    expect(lo.sig.state(hi.uid)).toBe('up');
  });

  it('late con_resp / con_reject for another attempt are ignored', async () => {
    const { lo, hi } = await pair();
    lo.sig.connect(hi.uid);
    await clock.advance(1000);
    const resp = net.signals.find((s) => s.type === 'con_resp')!;
    const data = { ...(resp.data as object), attempt: '0123456789abcdef' };
    lo.dp.emit({ event: 'signal', uid: hi.uid, jid: hi.dp.jid, type: 'con_resp', data });
    lo.dp.emit({ event: 'signal', uid: hi.uid, jid: hi.dp.jid, type: 'con_reject', data: { reason: 'max_links', attempt: '0123456789abcdef' } });
    await clock.advance(100);
    expect(lo.outcomes.slice(-2)).toEqual(['stale', 'stale']);
    expect(lo.sig.state(hi.uid)).toBe('up');
  });

  it('a con_reject ends our offer (trimmed, reported as rejected)', async () => {
    const { lo, hi } = await pair();
    net.drop = (s) => s.type === 'con_req';
    lo.sig.connect(hi.uid);
    await clock.advance(10);
    const attempt = lo.sig.session(hi.uid)!.myAttempt!;
    lo.dp.emit({ event: 'signal', uid: hi.uid, jid: hi.dp.jid, type: 'con_reject', data: { reason: 'max_links', attempt } });
    await clock.advance(10);
    expect(lo.sig.state(hi.uid)).toBe('idle');
    expect(lo.closed).toEqual([{ uid: hi.uid, reason: 'rejected', detail: 'max_links' }]);
    expect(lo.dp.links.has(hi.uid)).toBe(false);
  });

  it('a lost con_resp is recovered: the con_req is sent again and answered again', async () => {
    const { lo, hi } = await pair();
    let lost = 0;
    net.drop = (s) => s.type === 'con_resp' && lost++ === 0;
    lo.sig.connect(hi.uid);
    await clock.advance(4000);
    expect(lo.sig.state(hi.uid)).toBe('offering');
    await clock.advance(2000);
    expect(net.signals.map((s) => s.type)).toEqual(['con_req', 'con_req', 'con_resp']);
    expect(hi.outcomes).toEqual(['answered', 'duplicate']);
    expect(lo.sig.state(hi.uid)).toBe('up');
    expect(hi.sig.state(lo.uid)).toBe('up');
  });

  it('an unanswered offer times out and is trimmed', async () => {
    const { lo, hi } = await pair();
    net.drop = () => true;
    lo.sig.connect(hi.uid);
    await clock.advance(15_001);
    expect(lo.closed.map((c) => c.reason)).toEqual(['timeout']);
    expect(lo.dp.links.size).toBe(0);
    expect(lo.dp.callsOf('trim_link').length).toBe(1);
  });

  it('a failed link closes both sessions as failed; a transient down recovers within the grace', async () => {
    const { lo, hi } = await pair();
    lo.sig.connect(hi.uid);
    await clock.advance(1000);
    lo.dp.setLinkState(hi.uid, 'down', 'ICE disconnected');
    await clock.advance(3000);
    lo.dp.setLinkState(hi.uid, 'up');
    await clock.advance(20_000);
    expect(lo.sig.state(hi.uid)).toBe('up');
    expect(lo.ups.length).toBe(1);
    lo.dp.setLinkState(hi.uid, 'failed', 'ICE failed');
    await clock.advance(100);
    expect(lo.closed.map((c) => c.reason)).toEqual(['failed']);
    expect(lo.sig.state(hi.uid)).toBe('idle');
  });

  it('links that never connect time out on both sides', async () => {
    const { lo, hi } = await pair();
    net.linksWork = false;
    net.failAfterMs = 100_000;
    lo.sig.connect(hi.uid);
    await clock.advance(46_000);
    expect(lo.closed.map((c) => c.reason)).toEqual(['timeout']);
    expect(hi.closed.map((c) => c.reason)).toEqual(['timeout']);
  });

  it('adopt / lost / reset move sessions without RPCs', async () => {
    const { lo, hi } = await pair();
    lo.sig.adopt(hi.uid, clock.now());
    expect(lo.sig.state(hi.uid)).toBe('up');
    expect(lo.sig.activeCount()).toBe(1);
    lo.sig.reset('datapath restarted');
    expect(lo.sig.state(hi.uid)).toBe('idle');
    expect(lo.closed.map((c) => c.reason)).toEqual(['lost']);
    expect(lo.dp.callsOf('trim_link')).toEqual([]);
  });
});

describe('Signaling with trickle ICE', () => {
  const types = (): string[] => net.signals.map((s) => s.type);
  const trickledCreates = (x: Side): boolean[] =>
    x.dp.callsOf('create_link').filter((c) => c.params.remote === undefined || (c.params.remote as { type: string }).type === 'offer')
      .map((c) => c.params.trickle === true);

  it('first link: the offer waits for gathering, the answer trickles (con_req said trickle); the next link trickles both', async () => {
    const { lo, hi } = await pair({ trickle: true });
    lo.sig.connect(hi.uid);
    await clock.advance(1000);
    expect(lo.sig.state(hi.uid)).toBe('up');
    expect(hi.sig.state(lo.uid)).toBe('up');
    expect(trickledCreates(lo)).toEqual([false]);
    expect(trickledCreates(hi)).toEqual([true]);
    // srflx + relay + end of gathering reported together: one con_cand.
    expect(types()).toEqual(['con_req', 'con_resp', 'con_cand']);
    const cand = net.signals[2]!.data as { attempt: string; candidates: unknown[]; done?: boolean };
    expect(cand.attempt).toBe(lo.sig.session(hi.uid)!.myAttempt);
    expect(cand.candidates.length).toBe(2);
    expect(cand.done).toBe(true);
    expect(lo.dp.callsOf('add_candidate').length).toBe(1);
    expect(lo.sig.trickleCounters.candidates_applied).toBe(2);

    lo.sig.trim(hi.uid, 'test');
    await clock.advance(2000);
    net.signals.length = 0;
    lo.sig.connect(hi.uid);
    await clock.advance(1000);
    expect(trickledCreates(lo)).toEqual([false, true]);
    expect(types().filter((t) => t === 'con_cand').length).toBe(2); // one each way
    expect(lo.sig.state(hi.uid)).toBe('up');
    expect(hi.sig.state(lo.uid)).toBe('up');
    expect(lo.closed.map((c) => c.reason)).toEqual(['policy']);
    expect(hi.closed).toEqual([]);
  });

  it('a peer that announced trickle in presence gets a trickled offer from the first link on; one that announces none, a whole one', async () => {
    const { lo, hi } = await pair({ trickle: true });
    expect(lo.sig.caps()).toEqual(['trickle']);
    lo.sig.peerAnnounced(hi.uid, ['trickle']);
    lo.sig.connect(hi.uid);
    await clock.advance(1000);
    expect(trickledCreates(lo)).toEqual([true]);
    expect(trickledCreates(hi)).toEqual([true]);
    expect(types().filter((t) => t === 'con_cand').length).toBe(2); // one each way
    expect(lo.sig.state(hi.uid)).toBe('up');
    expect(hi.sig.state(lo.uid)).toBe('up');

    expect(lo.sig.trickleCounters).toMatchObject({ descriptions_trickled: 1, descriptions_whole: 0 });
    expect(hi.sig.trickleCounters).toMatchObject({ descriptions_trickled: 1, descriptions_whole: 0 });
  });

  it('announcing nothing (or something else) teaches nothing: the first offer to such a peer is whole', async () => {
    const { lo, hi } = await pair({ trickle: true });
    lo.sig.peerAnnounced(hi.uid, ['x-other']);
    lo.sig.connect(hi.uid);
    await clock.advance(1000);
    expect(trickledCreates(lo)).toEqual([false]);
    expect(lo.sig.state(hi.uid)).toBe('up');
    expect(lo.sig.trickleCounters).toMatchObject({ descriptions_trickled: 0, descriptions_whole: 1 });
  });

  it('without trickle, nothing is announced and announcements change nothing', async () => {
    const { lo, hi } = await pair();
    expect(lo.sig.caps()).toEqual([]);
    lo.sig.peerAnnounced(hi.uid, ['trickle']);
    lo.sig.connect(hi.uid);
    await clock.advance(1000);
    expect(trickledCreates(lo)).toEqual([false]);
    expect(types()).toEqual(['con_req', 'con_resp']);
    expect(lo.sig.state(hi.uid)).toBe('up');
  });

  it('the link needs the trickled candidates: without con_cand it never comes up (the fake is strict)', async () => {
    const { lo, hi } = await pair({ trickle: true });
    net.drop = (s) => s.type === 'con_cand';
    lo.sig.connect(hi.uid);
    await clock.advance(5000);
    expect(lo.sig.state(hi.uid)).toBe('connecting');
    expect(hi.sig.state(lo.uid)).toBe('connecting');
  });

  it('the answerer\'s candidates that overtake its con_resp are held and applied after the answer', async () => {
    const { lo, hi } = await pair({ trickle: true });
    net.delayOf = (s) => (s.type === 'con_resp' ? 300 : undefined);
    net.gatherMs = 0;
    lo.sig.connect(hi.uid);
    await clock.advance(1000);
    expect(lo.outcomes).toEqual(['buffered', 'applied']);
    expect(lo.sig.trickleCounters.candidates_buffered).toBe(2);
    const calls = lo.dp.calls.map((c) => c.m).filter((m) => m === 'create_link' || m === 'add_candidate');
    expect(calls).toEqual(['create_link', 'create_link', 'add_candidate']);
    expect(lo.sig.state(hi.uid)).toBe('up');
  });

  it('the offerer\'s candidates that overtake its con_req are held for that attempt, then applied', async () => {
    const { lo, hi } = await pair({ trickle: true });
    lo.sig.connect(hi.uid);
    await clock.advance(1000);
    lo.sig.trim(hi.uid, 'test');
    await clock.advance(2000);
    hi.outcomes.length = 0;
    net.delayOf = (s) => (s.type === 'con_req' ? 300 : undefined);
    lo.sig.connect(hi.uid); // trickled now: lo learned that hi takes con_cand
    await clock.advance(1000);
    expect(hi.outcomes.slice(0, 2)).toEqual(['buffered', 'answered']);
    expect(hi.dp.callsOf('add_candidate').at(-1)!.params.candidates).toHaveLength(2);
    expect(hi.sig.state(lo.uid)).toBe('up');
    expect(lo.sig.state(hi.uid)).toBe('up');
  });

  it('stale, duplicate, over-bound and post-up candidates are counted drops, never applied twice', async () => {
    const { lo, hi } = await pair({ trickle: true });
    lo.sig.connect(hi.uid);
    await clock.advance(1000);
    const cand = net.signals.find((s) => s.type === 'con_cand')!;
    const applied = lo.dp.callsOf('add_candidate').length;
    // The same con_cand again once the link is up: dropped.
    lo.dp.emit({ event: 'signal', uid: hi.uid, jid: hi.dp.jid, type: 'con_cand', data: cand.data as never });
    await clock.advance(100);
    expect(lo.outcomes.at(-1)).toBe('duplicate');
    expect(lo.dp.callsOf('add_candidate').length).toBe(applied);
    // An attempt of the peer's we saw before (hi's old con_req to lo is none here: use lo's offer
    // attempt seen by hi) is stale at hi.
    const attempt = lo.sig.session(hi.uid)!.myAttempt!;
    hi.sig.trim(lo.uid, 'test');
    await clock.advance(2000);
    hi.dp.emit({ event: 'signal', uid: lo.uid, jid: lo.dp.jid, type: 'con_cand', data: { attempt, candidates: [] } });
    await clock.advance(10);
    expect(hi.outcomes.at(-1)).toBe('stale');
    // Unknown attempts: at most 2 held, 32 candidates each; the rest counted.
    const many = Array.from({ length: 16 }, (_, i) => ({ candidate: `candidate:${i} 1 UDP 1 198.51.100.7 ${1000 + i} typ host`, mid: '0' }));
    const before = hi.sig.trickleCounters.candidates_dropped;
    for (const a of ['1111111111111111', '2222222222222222', '3333333333333333']) {
      for (let k = 0; k < 3; k++) hi.sig.handleConCand(lo.uid, { attempt: a, candidates: many });
    }
    expect(hi.sig.session(lo.uid)!.early.size).toBe(2);
    expect([...hi.sig.session(lo.uid)!.early.values()].every((c) => c.length === 32)).toBe(true);
    expect(hi.sig.trickleCounters.candidates_dropped - before).toBe(3 * 48 - 2 * 32);
  });

  it('local candidates of an old link (before the new create_link answered) are not sent under the new attempt', async () => {
    const { lo, hi } = await pair({ trickle: true });
    lo.sig.connect(hi.uid);
    await clock.advance(1000);
    const sent = lo.sig.trickleCounters.con_cand_sent;
    // A candidate event for the link, while no session link is described (idle): dropped.
    lo.sig.trim(hi.uid, 'test');
    lo.sig.handleLocalCandidate(hi.uid, { candidate: 'a=candidate:9 1 UDP 1 198.51.100.9 9 typ srflx', mid: '0' });
    await clock.advance(100);
    expect(lo.sig.trickleCounters.local_candidates_dropped).toBeGreaterThan(0);
    expect(lo.sig.trickleCounters.con_cand_sent).toBe(sent);
  });

  it('the end of gathering alone is no stanza', async () => {
    const { lo, hi } = await pair({ trickle: true });
    net.connectMs = 5000;
    lo.sig.connect(hi.uid);
    await clock.advance(1000);
    expect(types()).toEqual(['con_req', 'con_resp', 'con_cand']);
    hi.sig.handleLocalCandidate(lo.uid, null);
    await clock.advance(100);
    expect(types()).toEqual(['con_req', 'con_resp', 'con_cand']);
    hi.sig.handleLocalCandidate(lo.uid, { candidate: 'a=candidate:7 1 UDP 1 198.51.100.77 7 typ relay', mid: '0' });
    await clock.advance(100);
    expect(types()).toEqual(['con_req', 'con_resp', 'con_cand', 'con_cand']);
  });

  it('a resent con_req carries the candidates gathered so far again (the first con_cand may be lost)', async () => {
    const { lo, hi } = await pair({ trickle: true });
    lo.sig.connect(hi.uid);
    await clock.advance(1000);
    lo.sig.trim(hi.uid, 'test');
    await clock.advance(2000);
    net.signals.length = 0;
    let lost = 0;
    net.drop = (s) => (s.type === 'con_req' || s.type === 'con_cand') && s.from === lo.uid && lost++ < 2;
    lo.sig.connect(hi.uid);
    await clock.advance(7000);
    expect(types().slice(0, 2)).toEqual(['con_req', 'con_cand']); // the resend (the first two were lost)
    const resent = net.signals[1]!.data as { candidates: unknown[]; done?: boolean };
    expect(resent.candidates).toHaveLength(2);
    expect(resent.done).toBe(true);
    expect(lo.sig.state(hi.uid)).toBe('up');
    expect(hi.sig.state(lo.uid)).toBe('up');
  });

  it('a peer without trickle gets full descriptions and no con_cand; after a failed link the offer is full again', async () => {
    const a = await side('10.9.0.1', { trickle: true });
    const b = await side('10.9.0.2', { trickle: false });
    await clock.settle();
    a.sig.connect(b.uid);
    await clock.advance(1000);
    expect(types()).toEqual(['con_req', 'con_resp']);
    expect((net.signals[1]!.data as { trickle?: boolean }).trickle).toBeUndefined();
    expect(a.sig.state(b.uid)).toBe('up');
    expect(trickledCreates(b)).toEqual([false]);
    expect(a.sig.session(b.uid)!.peerTrickles).toBe(false);

    const c = await side('10.9.0.3', { trickle: true });
    await clock.settle();
    c.sig.connect(a.uid);
    await clock.advance(1000);
    expect(c.sig.session(a.uid)!.peerTrickles).toBe(true);
    c.dp.setLinkState(a.uid, 'failed', 'ICE failed');
    await clock.advance(100);
    expect(c.sig.session(a.uid)!.peerTrickles).toBe(false);
  });

  it('garbage con_cand never parses: wrong attempt, too many candidates, not a candidate line', () => {
    const ok = { candidate: 'a=candidate:1 1 UDP 2122317823 10.1.0.2 5000 typ host', mid: '0' };
    expect(parseControllerSignal('con_cand', { attempt: '0123456789abcdef', candidates: [ok] }).ok).toBe(true);
    expect(parseControllerSignal('con_cand', { attempt: 'nope', candidates: [ok] }).ok).toBe(false);
    expect(parseControllerSignal('con_cand', { attempt: '0123456789abcdef', candidates: Array(17).fill(ok) }).ok).toBe(false);
    expect(parseControllerSignal('con_cand', { attempt: '0123456789abcdef', candidates: [{ candidate: 'rm -rf /', mid: '0' }] }).ok).toBe(false);
    expect(parseControllerSignal('con_cand', { attempt: '0123456789abcdef', candidates: [{ ...ok, mid: '' }] }).ok).toBe(false);
    expect(parseControllerSignal('con_cand', 'garbage').ok).toBe(false);
    expect(parseControllerSignal('con_cand', null).ok).toBe(false);
  });
});

describe('Signaling: repairs (make-before-break)', () => {
  it('a repair makes a new link beside the up one: the session stays up on both sides and the new link replaces the old', async () => {
    const { lo, hi } = await pair();
    hi.sig.connect(lo.uid);
    await clock.advance(1000);
    const oldHi = hi.dp.links.get(lo.uid);
    const oldLo = lo.dp.links.get(hi.uid);
    expect(hi.sig.repair(lo.uid, 'test')).toBe(true);
    expect(hi.sig.repair(lo.uid, 'test')).toBe(false); // one at a time
    expect(hi.sig.repairing(lo.uid)).toBe(true);
    await clock.advance(100);
    // Meanwhile the old links carry on.
    expect(hi.dp.links.get(lo.uid)).toBe(oldHi);
    expect(hi.dp.spares.has(lo.uid)).toBe(true);
    await clock.advance(1000);
    const req = net.signals.filter((x) => x.type === 'con_req').at(-1)!.data as { repair?: boolean };
    expect(req.repair).toBe(true);
    expect(hi.dp.callsOf('create_link').at(-2)?.params.repair).toBe(true); // the offer; the last completes it
    expect(lo.dp.callsOf('create_link').at(-1)?.params.repair).toBe(true);
    expect(hi.sig.state(lo.uid)).toBe('up');
    expect(lo.sig.state(hi.uid)).toBe('up');
    expect(hi.dp.links.get(lo.uid)).not.toBe(oldHi);
    expect(lo.dp.links.get(hi.uid)).not.toBe(oldLo);
    expect(hi.dp.links.get(lo.uid)?.state).toBe('up');
    expect(hi.repaired).toEqual([lo.uid]);
    expect(lo.repaired).toEqual([hi.uid]);
    expect(hi.ups).toEqual([lo.uid]); // never down, never up again
    expect(hi.closed).toEqual([]);
    expect(lo.closed).toEqual([]);
    expect(hi.sig.repairing(lo.uid)).toBe(false);
    expect(hi.dp.callsOf('trim_link')).toEqual([]);
  });

  it('both sides repair at once (both NATs moved): the lower UID\'s offer stands, one new link each', async () => {
    const { lo, hi } = await pair();
    hi.sig.connect(lo.uid);
    await clock.advance(1000);
    hi.sig.repair(lo.uid, 'test');
    lo.sig.repair(hi.uid, 'test');
    await clock.advance(2000);
    expect(lo.outcomes).toContain('glare_kept');
    expect(hi.outcomes).toContain('glare_yielded');
    expect(hi.sig.state(lo.uid)).toBe('up');
    expect(lo.sig.state(hi.uid)).toBe('up');
    expect(lo.sig.session(hi.uid)?.role).toBe('offerer');
    expect(hi.dp.spares.size + lo.dp.spares.size).toBe(0);
    expect(lo.repaired).toEqual([hi.uid]);
    expect(hi.repaired).toEqual([lo.uid]);
    expect(hi.closed).toEqual([]);
  });

  it('a repair that gets no answer goes back to the old link: only the new link is trimmed, the session stays up', async () => {
    const { lo, hi } = await pair();
    hi.sig.connect(lo.uid);
    await clock.advance(1000);
    const old = hi.dp.links.get(lo.uid);
    net.drop = (x) => x.type === 'con_req';
    hi.sig.repair(lo.uid, 'test');
    await clock.advance(16_000);
    expect(hi.repairFailed).toEqual([lo.uid]);
    expect(hi.sig.state(lo.uid)).toBe('up');
    expect(hi.sig.repairing(lo.uid)).toBe(false);
    expect(hi.dp.callsOf('trim_link').map((c) => c.params)).toEqual([{ uid: lo.uid, spare: true }]);
    expect(hi.dp.links.get(lo.uid)).toBe(old);
    expect(hi.dp.spares.has(lo.uid)).toBe(false);
    expect(hi.closed).toEqual([]);
  });

  it('a repair\'s con_req that cannot be sent (signaling down) waits for resendOffers, not a failure', async () => {
    const { lo, hi } = await pair();
    hi.sig.connect(lo.uid);
    await clock.advance(1000);
    hi.dp.failNext.set('send_signal', 'bad_state');
    hi.sig.repair(lo.uid, 'test');
    await clock.advance(200);
    expect(hi.sig.state(lo.uid)).toBe('offering');
    hi.sig.resendOffers();
    await clock.advance(1000);
    expect(hi.repaired).toEqual([lo.uid]);
    expect(hi.closed).toEqual([]);
  });

  it('a repair\'s link that fails (event with repair: true) ends the repair only; a failed event of no repair is ignored as such', async () => {
    const { lo, hi } = await pair();
    hi.sig.connect(lo.uid);
    await clock.advance(1000);
    hi.sig.handleLinkEvent(lo.uid, 'failed', 'repair failed: x', true); // no repair under way: nothing
    expect(hi.sig.state(lo.uid)).toBe('up');
    net.drop = (x) => x.type === 'con_resp';
    hi.sig.repair(lo.uid, 'test');
    await clock.advance(500);
    hi.sig.handleLinkEvent(lo.uid, 'failed', 'repair failed: ICE failed', true);
    expect(hi.repairFailed).toEqual([lo.uid]);
    expect(hi.sig.state(lo.uid)).toBe('up');
    expect(hi.closed).toEqual([]);
  });

  it('a garbage repair flag in a con_req never parses', () => {
    const base = { overlay: 'lab', ip4: '10.9.0.1', attempt: '0123456789abcdef', description: { type: 'offer', sdp: 'v=0' } };
    expect(parseControllerSignal('con_req', { ...base, repair: true }).ok).toBe(true);
    for (const repair of ['yes', 1, null, {}]) expect(parseControllerSignal('con_req', { ...base, repair }).ok).toBe(false);
  });
});
