import { describe, expect, it } from 'vitest';
import { uidFromIp4 } from '@tincan/protocol';
import { Backoff } from '../src/backoff.js';
import { LinkPolicy } from '../src/link-policy.js';
import { LogLimiter } from '../src/rate-limit.js';
import { ManualClock } from '../src/clock.js';
import { PacketQueue } from '../src/packet-queue.js';
import { Subnet4 } from '../src/subnet.js';
import type { Peer } from '../src/peer-table.js';

describe('Backoff', () => {
  it('doubles per failure up to the ceiling, per key, and resets', () => {
    const b = new Backoff({ initialMs: 1000, maxMs: 5000, jitter: 0, random: () => 0.5 });
    expect([1, 2, 3, 4, 5].map(() => b.fail('a', 0))).toEqual([1000, 2000, 4000, 5000, 5000]);
    expect(b.readyAt('a')).toBe(5000);
    expect(b.fail('b', 100)).toBe(1000);
    b.reset('a');
    expect(b.readyAt('a')).toBe(0);
    expect(b.fail('a', 0)).toBe(1000);
  });

  it('spreads delays by the jitter fraction', () => {
    const lo = new Backoff({ initialMs: 1000, maxMs: 60_000, jitter: 0.2, random: () => 0 });
    const hi = new Backoff({ initialMs: 1000, maxMs: 60_000, jitter: 0.2, random: () => 0.999999 });
    expect(lo.fail('x', 0)).toBe(800);
    expect(hi.fail('x', 0)).toBe(1200);
  });
});

describe('LogLimiter', () => {
  it('allows one line per key and interval and counts the rest', async () => {
    const clock = new ManualClock(0);
    const l = new LogLimiter(clock, 1000);
    expect(l.allow('k')).toEqual({ ok: true, suppressed: 0 });
    expect(l.allow('k').ok).toBe(false);
    expect(l.allow('k').ok).toBe(false);
    expect(l.allow('other').ok).toBe(true);
    await clock.advance(1000);
    expect(l.allow('k')).toEqual({ ok: true, suppressed: 2 });
  });
});

function peer(uid: string, over: Partial<Peer> = {}): Peer {
  return { uid, claims: new Map(), status: 'member', jid: 'x@y/z', onlineSinceMs: 0, ip4: null, demandMs: null, ...over };
}

describe('LinkPolicy', () => {
  const a = uidFromIp4('10.0.0.1');
  const b = uidFromIp4('10.0.0.2');
  const [lo, hi] = a < b ? [a, b] : [b, a];

  it('proactive wants every member; on-demand only recent demand', () => {
    const pro = new LinkPolicy({ mode: 'proactive', maxLinks: 4, idleTimeoutMs: 0 });
    const od = new LinkPolicy({ mode: 'on-demand', maxLinks: 4, idleTimeoutMs: 0, demandWindowMs: 1000 });
    expect(pro.wants(peer(a), 0)).toBe(true);
    expect(od.wants(peer(a), 0)).toBe(false);
    expect(od.wants(peer(a, { demandMs: 500 }), 1000)).toBe(true);
    expect(od.wants(peer(a, { demandMs: 500 }), 1500)).toBe(false);
  });

  it('proactive: the lower UID offers at once, the higher one waits for its offer', () => {
    const pro = new LinkPolicy({ mode: 'proactive', maxLinks: 4, idleTimeoutMs: 0, proactiveWaitMs: 5000 });
    expect(pro.offerDelay(lo, peer(hi, { onlineSinceMs: 1000 }), 1000)).toBe(0);
    expect(pro.offerDelay(hi, peer(lo, { onlineSinceMs: 1000 }), 2000)).toBe(4000);
    expect(pro.offerDelay(hi, peer(lo, { onlineSinceMs: 1000 }), 7000)).toBe(0);
    const od = new LinkPolicy({ mode: 'on-demand', maxLinks: 4, idleTimeoutMs: 0 });
    expect(od.offerDelay(hi, peer(lo, { onlineSinceMs: 1000 }), 1000)).toBe(0);
  });

  it('trims idle up links (on-demand only) and the least recently used beyond maxLinks', () => {
    const od = new LinkPolicy({ mode: 'on-demand', maxLinks: 2, idleTimeoutMs: 1000 });
    const links = [
      { uid: 'c', state: 'up' as const, lastActiveMs: 300 },
      { uid: 'a', state: 'up' as const, lastActiveMs: 100 },
      { uid: 'b', state: 'connecting' as const, lastActiveMs: 0 },
    ];
    expect(od.idleVictims(links, 1200)).toEqual(['a']);
    expect(od.lruVictims(links)).toEqual(['a']);
    expect(od.lruVictims(links, 1)).toEqual(['a', 'c']);
    expect(new LinkPolicy({ mode: 'proactive', maxLinks: 2, idleTimeoutMs: 1000 }).idleVictims(links, 1e9)).toEqual([]);
    expect(new LinkPolicy({ mode: 'on-demand', maxLinks: 2, idleTimeoutMs: 0 }).idleVictims(links, 1e9)).toEqual([]);
  });
});

describe('PacketQueue', () => {
  it('keeps the last few frames per peer, briefly', () => {
    const q = new PacketQueue({ perPeer: 2, maxAgeMs: 100 });
    q.push('p', Buffer.from([1]), 0);
    q.push('p', Buffer.from([2]), 10);
    q.push('p', Buffer.from([3]), 20);
    expect(q.take('p', 50).map((b) => b[0])).toEqual([2, 3]);
    expect(q.dropped).toBe(1);
    q.push('p', Buffer.from([4]), 0);
    expect(q.take('p', 500)).toEqual([]);
  });
});

describe('Subnet4', () => {
  it('knows peer hosts from network, broadcast, self and strangers', () => {
    const s = new Subnet4('10.254.0.1/16');
    expect(s.isPeerAddress('10.254.3.4')).toBe(true);
    expect(s.isPeerAddress('10.254.0.1')).toBe(false);
    expect(s.isPeerAddress('10.254.0.0')).toBe(false);
    expect(s.isPeerAddress('10.254.255.255')).toBe(false);
    expect(s.isPeerAddress('10.253.0.9')).toBe(false);
    expect(s.isPeerAddress('garbage')).toBe(false);
    expect(s.cidr).toBe('10.254.0.0/16');
  });
});
