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

/** Feeds `w` seconds of `sent` probes per second, `lost` of them unanswered; the verdict at the end. */
function feed(w: LossWatch, c: { out: number; answered: number }, seconds: number, sent: number, lost: number): boolean {
  let v = w.lossy;
  for (let i = 0; i < seconds; i++) {
    c.out += sent;
    c.answered += sent - lost;
    v = w.sample(c.out, c.answered);
  }
  return v;
}

/** A LossWatch that has seen its path clean (a new one starts lossy), and its counters. */
function cleanWatch(): { w: LossWatch; c: { out: number; answered: number } } {
  const w = new LossWatch();
  const c = { out: 0, answered: 0 };
  w.sample(0, 0);
  feed(w, c, LOSS_WINDOW_S, 100, 0);
  expect(w.lossy).toBe(false);
  return { w, c };
}

describe('LossWatch', () => {
  it('starts lossy and is clean once its first probes came back, none lost (one may be in flight)', () => {
    const w = new LossWatch();
    const c = { out: 0, answered: 0 };
    expect(w.lossy).toBe(true);
    w.sample(0, 0);
    expect(feed(w, c, 1, LOSS_MIN_PROBES - 1, 0)).toBe(true); // too few to tell
    expect(feed(w, c, 1, 20, 1)).toBe(false);
    const lossy = new LossWatch();
    const d = { out: 0, answered: 0 };
    lossy.sample(0, 0);
    expect(feed(lossy, d, 10, 100, 2)).toBe(true); // 2 % round trip: never clean
  });

  it('a new link is clean at the echo that brings its first probes back, at most one missing', () => {
    const w = new LossWatch();
    expect(w.firstEchoes(10, 10)).toBe(true);
    expect(w.firstEchoes(LOSS_FIRST_PROBES, LOSS_FIRST_PROBES - 2)).toBe(true); // two missing
    expect(w.firstEchoes(LOSS_FIRST_PROBES + 1, LOSS_FIRST_PROBES)).toBe(false);
    const late = new LossWatch(); // a verdict from a window first: echoes no longer decide
    late.sample(0, 0);
    feed(late, { out: 0, answered: 0 }, 3, 100, 4);
    expect(late.firstEchoes(1000, 1000)).toBe(true);
  });

  it('becomes lossy once ≥ 0.5 % of the probes (and at least 3) go unanswered', () => {
    const { w, c } = cleanWatch();
    expect(feed(w, c, 10, 200, 0)).toBe(false);
    expect(feed(w, c, 1, 200, 1)).toBe(false); // one late echo is no loss
    expect(feed(w, c, 1, 200, 2)).toBe(false); // 3 of 1,000 in the window: 0.3 %
    expect(feed(w, c, 3, 200, 4)).toBe(true); // 2 % round trip: 1 % of the probes each way
  });

  it('needs both the count and the share', () => {
    const { w, c } = cleanWatch();
    expect(feed(w, c, LOSS_WINDOW_S, 1000, 1)).toBe(false); // 5 lost of 5,000: 0.1 %
    const few = cleanWatch();
    feed(few.w, few.c, LOSS_WINDOW_S, 0, 0); // idle: the window empties
    expect(feed(few.w, few.c, 1, 20, LOSS_ENTER_PROBES - 1)).toBe(false); // 10 % of a few probes, but 2 of them
    expect(feed(few.w, few.c, 1, 20, 1)).toBe(true);
  });

  it('stays lossy while the loss lasts and while idle; clean again after a window with no loss', () => {
    const { w, c } = cleanWatch();
    expect(feed(w, c, 3, 100, 4)).toBe(true);
    expect(feed(w, c, 20, 100, 3)).toBe(true);
    expect(feed(w, c, 30, 0, 0)).toBe(true); // idle: nothing to judge by
    expect(feed(w, c, 1, LOSS_MIN_PROBES - 1, 0)).toBe(true); // too few probes to call it clean
    expect(feed(w, c, LOSS_WINDOW_S, 100, 0)).toBe(false);
  });

  it('does not count the probes that may still be in flight as lost', () => {
    const { w, c } = cleanWatch();
    c.out += 200; // six of them still in flight at the sample
    c.answered += 194;
    expect(w.sample(c.out, c.answered, 7)).toBe(false);
    expect(w.sample(c.out, c.answered + 6, 7)).toBe(false);
    const d = cleanWatch();
    d.c.out += 200;
    d.c.answered += 194;
    expect(d.w.sample(d.c.out, d.c.answered, 1)).toBe(true); // the same with nothing in flight: lost
  });

  it('takes counters that go backwards (a new link) as a fresh start, and echoes beyond probes as no loss', () => {
    const { w } = cleanWatch(); // at 500 probes, 500 echoes
    expect(w.sample(10, 5)).toBe(false); // backwards: taken as the new start, nothing lost
    expect(w.sample(10, 10)).toBe(false);
    expect(w.sample(20, 30)).toBe(false); // more echoes than probes in a second: none lost
    expect(w.sample(30, 31)).toBe(false);
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
