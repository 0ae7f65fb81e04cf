// Loss on a link's path (docs/architecture.md, "Loss"): LossWatch's verdict from probe counters, and
// RtcLibrary keeping usrsctp's congestion window through loss in the real node-datachannel addon (or
// not, with --sctp-loss-backoff), read back in get_state's sctp. test/loss.test.ts runs both in the lab.
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { LaneInit } from '../src/lanes/lane-ipc.js';
import { LOSS_ENTER_PROBES, LOSS_FIRST_PROBES, LOSS_MIN_PROBES, LOSS_WINDOW_S, LossWatch } from '../src/loss-watch.js';
import { RtcLibrary, type UsrsctpLossResponse } from '../src/rtc.js';
import { VALID_LANE_INIT } from './fixtures/lane-init.js';

/** A prober's side of a LossWatch: numbered probes, each echoed unless lost (or not sent). */
class Prober {
  seq = 0;
  constructor(readonly w: LossWatch) {}
  /** `n` probes, those whose index is in `lost` never echoed, those in `notSent` not sent; returns lossy. */
  probes(n: number, lost: (i: number) => boolean = () => false, notSent: (i: number) => boolean = () => false): boolean {
    for (let i = 0; i < n; i++) {
      const s = this.seq++;
      if (notSent(i)) this.w.probeNotSent(s);
      else if (!lost(i)) this.w.echo(s);
    }
    return this.w.lossy;
  }
  /** `seconds` seconds of `perSecond` probes, `lostPerSecond` of them lost each second, sampled each second. */
  seconds(seconds: number, perSecond: number, lostPerSecond = 0): boolean {
    for (let t = 0; t < seconds; t++) {
      this.probes(perSecond, (i) => i < lostPerSecond);
      this.w.sample();
    }
    return this.w.lossy;
  }
}

/** A prober whose LossWatch has seen its path clean (a new one starts lossy). */
function clean(): Prober {
  const p = new Prober(new LossWatch());
  p.probes(LOSS_FIRST_PROBES);
  p.w.sample();
  expect(p.w.lossy).toBe(false);
  return p;
}

describe('LossWatch', () => {
  it('starts lossy and is clean at the echo that settles its first probes, none lost', () => {
    const p = new Prober(new LossWatch());
    expect(p.w.lossy).toBe(true);
    expect(p.probes(LOSS_FIRST_PROBES - 1)).toBe(true);
    expect(p.probes(1)).toBe(false);
    const q = new Prober(new LossWatch());
    expect(q.probes(LOSS_FIRST_PROBES, (i) => i % 25 === 0)).toBe(true); // 4 % lost: stays lossy
    expect(q.seconds(10, 100, 4)).toBe(true);
    const r = new Prober(new LossWatch()); // a lucky clean second early on is not enough
    expect(r.probes(LOSS_FIRST_PROBES, (i) => i === 7)).toBe(true);
    expect(r.seconds(1, 60)).toBe(true);
    expect(r.seconds(1, LOSS_MIN_PROBES - 61)).toBe(true);
  });

  it('does not count probes still in flight (above the last echo) as lost', () => {
    const p = clean();
    p.probes(100);
    p.seq += 6; // six sent, echoes not back yet
    expect(p.w.sample()).toBe(false);
    expect(p.w.sample()).toBe(false);
  });

  it('does not count probes the link could not send as lost', () => {
    const p = clean();
    expect(p.probes(300, () => false, (i) => i >= 100 && i < 150)).toBe(false);
    expect(p.w.sample()).toBe(false);
    const q = clean(); // more not sent than it remembers: the oldest count as lost, the rest do not
    q.probes(200, () => false, (i) => i < 100);
    expect(q.w.sample()).toBe(true);
  });

  it('becomes lossy once ≥ 0.5 % of the probes (and at least 3) went unanswered over the window', () => {
    const p = clean();
    expect(p.seconds(10, 200)).toBe(false);
    expect(p.seconds(1, 200, 1)).toBe(false); // one lost
    expect(p.seconds(1, 200, 2)).toBe(false); // 3 of 1,000 in the window: 0.3 %
    expect(p.seconds(3, 200, 4)).toBe(true); // 2 % round trip: 1 % each way
    const few = clean();
    expect(few.seconds(LOSS_WINDOW_S, 1000, 1)).toBe(false); // 5 of 5,000: 0.1 %
  });

  it('stays lossy while the loss lasts and while idle; clean after a window with no loss; a late echo is no loss', () => {
    const p = clean();
    expect(p.seconds(3, 100, 4)).toBe(true);
    expect(p.seconds(20, 100, 3)).toBe(true);
    expect(p.seconds(30, 0)).toBe(true); // idle: nothing to judge by
    expect(p.seconds(1, LOSS_MIN_PROBES - 1)).toBe(true); // too few settled to call it clean
    expect(p.seconds(LOSS_WINDOW_S, 100)).toBe(false);
    const q = clean();
    q.probes(100, (i) => i >= 10 && i < 14); // four missing…
    q.w.echo(q.seq - 90); // …one of them came late
    q.w.echo(q.seq - 89);
    expect(q.w.sample()).toBe(false); // two lost of 100: not yet 3
    expect(LOSS_ENTER_PROBES).toBe(3);
  });
});

describe('--sctp-loss-backoff', () => {
  it('by default keeps the congestion window through loss in node-datachannel, and says so in get_state', () => {
    const rtc = new RtcLibrary('Warning', pino({ level: 'silent' }));
    expect(rtc.sctpState().loss_backoff).toBeNull();
    try {
      rtc.get();
      expect(rtc.sctpState()).toMatchObject({ loss_backoff: false, timeouts: 0 });
    } finally {
      rtc.cleanup();
    }
    const backoff = new RtcLibrary('Warning', pino({ level: 'silent' }), undefined, undefined, undefined, true);
    try {
      backoff.get();
      expect(backoff.sctpState()).toMatchObject({ loss_backoff: true, timeouts: 0 });
    } finally {
      backoff.cleanup();
    }
  });

  it('warns and reports usrsctp\'s own response when the window cannot be kept', () => {
    const lines: { msg: string }[] = [];
    const sink = new Writable({ write(chunk: Buffer, _e, done) { lines.push(JSON.parse(chunk.toString())); done(); } });
    const unreachable: UsrsctpLossResponse = { state: () => null, keep: () => false };
    const rtc = new RtcLibrary('Warning', pino({ level: 'warn' }, sink), undefined, undefined, undefined, false, unreachable);
    try {
      rtc.get();
      expect(rtc.sctpState()).toMatchObject({ loss_backoff: true, timeouts: null });
    } finally {
      rtc.cleanup();
    }
    expect(lines.some((l) => /could not keep usrsctp's congestion window/.test(l.msg))).toBe(true);
  });

  it('reaches lane processes in their init, with segmenting on loss, validated', () => {
    expect(LaneInit.safeParse(VALID_LANE_INIT).success).toBe(true);
    for (const bad of [undefined, 0, 'yes']) {
      expect(LaneInit.safeParse({ ...VALID_LANE_INIT, sctpLossBackoff: bad }).success, String(bad)).toBe(false);
      expect(LaneInit.safeParse({ ...VALID_LANE_INIT, segmentOnLoss: bad }).success, String(bad)).toBe(false);
    }
  });
});
