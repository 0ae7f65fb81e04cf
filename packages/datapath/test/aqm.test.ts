// The delay-based limit (aqm.ts) on a fake clock: the control law, the probes and their echoes, and
// what a hostile peer's probe messages can do. The lab test (test/aqm.test.ts) runs it on real links.
import { describe, expect, it } from 'vitest';
import { PROBE_ECHO_TYPE, PROBE_LEN, PROBE_TYPE, readProbe, writeProbe } from '@tincan/protocol';
import {
  AQM_MIN_DROP_BYTES, BASELINE_WINDOW_MS, DelayControl, LinkAqm, MIN_AQM_INTERVAL_MS, PROBE_EVERY_BYTES, PROBE_MIN_SPACING_MS,
  zeroProbeCounters, type AqmSettings,
} from '../src/aqm.js';

const SETTINGS: AqmSettings = { targetMs: 2, intervalMs: 100 };

/** Samples every `stepMs` from `from` to `to` (exclusive), each with round trip `rtt(t)`. */
function feed(c: DelayControl, from: number, to: number, stepMs: number, rtt: (t: number) => number): void {
  for (let t = from; t < to; t += stepMs) c.sample(rtt(t), t);
}

/** The times (ms) at which dropDue said yes, asking every `stepMs` from `from` to `to`. */
function drops(c: DelayControl, from: number, to: number, stepMs: number, rtt: (t: number) => number): number[] {
  const out: number[] = [];
  for (let t = from; t < to; t += stepMs) {
    c.sample(rtt(t), t);
    if (c.dropDue(t)) out.push(t);
  }
  return out;
}

describe('DelayControl: CoDel\'s control law on probe round trips', () => {
  it('never drops while the delay over the baseline stays under target', () => {
    const c = new DelayControl(SETTINGS);
    expect(drops(c, 0, 5000, 5, (t) => 30 + (t % 20 === 0 ? 1.9 : 0))).toEqual([]);
    expect(c.baselineMs).toBe(30);
    expect(c.dropping).toBe(false);
  });

  it('drops once the interval\'s mean delay is above target, then at interval / √n while it stays', () => {
    const c = new DelayControl(SETTINGS);
    feed(c, 0, 100, 5, () => 30); // baseline 30 ms: interval min(100, 4 × 30) = 100
    expect(c.intervalMs).toBe(100);
    const at = drops(c, 100, 1200, 1, () => 40);
    // The first interval above target (100–200) ends at its first sample at or after 200 ms.
    expect(at[0]).toBeGreaterThanOrEqual(200);
    expect(at[0]).toBeLessThanOrEqual(202);
    const gaps = at.slice(1).map((t, i) => t - at[i]!);
    // 100, 100/√2, 100/√3 … (the clock steps 1 ms)
    expect(gaps[0]).toBeCloseTo(100, -0.5);
    expect(gaps[1]).toBeCloseTo(100 / Math.sqrt(2), -0.5);
    expect(gaps[2]).toBeCloseTo(100 / Math.sqrt(3), -0.5);
    for (let i = 1; i < gaps.length; i++) expect(gaps[i]!).toBeLessThanOrEqual(gaps[i - 1]! + 1);
  });

  it('acts on the interval\'s mean: single quick probes among slow ones do not stop it', () => {
    const c = new DelayControl(SETTINGS);
    feed(c, 0, 100, 5, () => 10);
    const at = drops(c, 100, 1000, 5, (t) => (t % 50 === 0 ? 10 : 25));
    expect(at.length).toBeGreaterThan(5);
  });

  it('stops dropping after an interval whose mean is under target, and does not start before a whole one above', () => {
    const c = new DelayControl(SETTINGS);
    feed(c, 0, 100, 5, () => 30);
    expect(drops(c, 100, 600, 5, () => 50).length).toBeGreaterThan(3);
    feed(c, 600, 800, 5, () => 30);
    expect(c.dropping).toBe(false);
    expect(drops(c, 800, 900, 5, () => 30)).toEqual([]);
    // Above again: no drop in its first interval.
    expect(drops(c, 900, 1000, 5, () => 50)).toEqual([]);
  });

  it('the interval follows a short path\'s baseline (4 round trips, at least MIN_AQM_INTERVAL_MS) and never exceeds the setting', () => {
    const c = new DelayControl(SETTINGS);
    expect(c.intervalMs).toBe(100); // no baseline yet
    c.sample(0.7, 0);
    expect(c.intervalMs).toBe(MIN_AQM_INTERVAL_MS);
    const d = new DelayControl(SETTINGS);
    d.sample(15, 0);
    expect(d.intervalMs).toBe(60);
    const e = new DelayControl({ targetMs: 2, intervalMs: 40 });
    e.sample(30, 0);
    expect(e.intervalMs).toBe(40);
  });

  it('the target is the setting, or 5% of the interval on a longer path', () => {
    const short = new DelayControl(SETTINGS);
    short.sample(0.7, 0);
    expect(short.targetMs).toBe(2);
    const long = new DelayControl(SETTINGS);
    long.sample(42, 0);
    expect(long.intervalMs).toBe(100);
    expect(long.targetMs).toBeCloseTo(5);
    // 4 ms above a 42-ms baseline: under target, no drops; 6 ms: drops.
    expect(drops(long, 5, 1000, 5, () => 46)).toEqual([]);
    expect(drops(long, 1000, 2000, 5, () => 48).length).toBeGreaterThan(3);
  });

  it('a back-pressure drop while dropping stands for the drop that was due (the flows get one, not two)', () => {
    const c = new DelayControl(SETTINGS);
    feed(c, 0, 100, 5, () => 30);
    feed(c, 100, 200, 5, () => 60);
    c.sample(60, 200);
    expect(c.dropping).toBe(true);
    c.otherDrop(201); // the first drop, due at 200, was a back-pressure drop
    expect(c.dropDue(202)).toBe(false);
    expect(c.dropDue(301)).toBe(true); // one interval later (100/√1)
    c.otherDrop(302); // not due yet: changes nothing
    expect(c.dropDue(301 + 100 / Math.sqrt(2) + 1)).toBe(true);
  });

  it('without samples for four intervals it stops dropping (echoes lost, peer gone quiet)', () => {
    const c = new DelayControl(SETTINGS);
    feed(c, 0, 100, 5, () => 30);
    expect(drops(c, 100, 400, 5, () => 60).length).toBeGreaterThan(0);
    expect(c.dropping).toBe(true);
    expect(c.dropDue(400 + 4 * 100 + 1)).toBe(false);
    expect(c.dropping).toBe(false);
  });

  it('idle() forgets the interval above target: the next busy spell starts afresh', () => {
    const c = new DelayControl(SETTINGS);
    feed(c, 0, 100, 5, () => 30);
    feed(c, 100, 300, 5, () => 60);
    expect(c.dropping).toBe(true);
    c.idle();
    expect(c.dropping).toBe(false);
    expect(drops(c, 300, 395, 5, () => 60)).toEqual([]);
  });

  it('the baseline is a windowed minimum: a lower path delay is taken at once, a higher one after one to two windows', () => {
    const c = new DelayControl(SETTINGS);
    c.sample(10, 0);
    c.sample(5, 10);
    expect(c.baselineMs).toBe(5);
    feed(c, 20, 2 * BASELINE_WINDOW_MS + 100, 50, () => 20);
    expect(c.baselineMs).toBe(20);
    expect(c.lastDelayMs).toBe(0);
    // After a long idle gap both windows are stale: the first new sample is the baseline.
    c.sample(40, 10 * BASELINE_WINDOW_MS);
    expect(c.baselineMs).toBe(40);
  });
});

/** A LinkAqm whose messages go to `sent`, on a clock the test moves. */
function harness(settings = SETTINGS) {
  const clock = { now: 1000 };
  const sent: Buffer[] = [];
  let sendOk = true;
  const counters = zeroProbeCounters();
  const aqm = new LinkAqm(settings, counters, (m) => {
    if (sendOk) sent.push(Buffer.from(m));
    return sendOk;
  }, () => clock.now);
  aqm.active = true;
  return { aqm, clock, sent, counters, failSends: (fail: boolean) => { sendOk = !fail; } };
}

function echoOf(probe: Buffer): Buffer {
  const e = Buffer.alloc(PROBE_LEN);
  writeProbe(e, PROBE_ECHO_TYPE, readProbe(probe, PROBE_TYPE));
  return e;
}

describe('LinkAqm: probes and echoes', () => {
  it('probes at once after idle, then every PROBE_EVERY_BYTES but no sooner than PROBE_MIN_SPACING_MS', () => {
    const { aqm, clock, sent, counters } = harness();
    expect(aqm.beforeSend(1200)).toBe(false);
    expect(sent.length).toBe(1);
    expect(readProbe(sent[0]!, PROBE_TYPE)).toBe(0);
    for (let i = 0; i < 100; i++) aqm.beforeSend(1200); // 117 KB at once: spacing holds it back
    expect(sent.length).toBe(1);
    clock.now += PROBE_MIN_SPACING_MS;
    aqm.beforeSend(1200);
    expect(sent.length).toBe(2);
    clock.now += 1000;
    for (let i = 0; i < Math.ceil(PROBE_EVERY_BYTES / 1200) - 1; i++) aqm.beforeSend(1200);
    expect(sent.length).toBe(2); // not enough bytes yet
    aqm.beforeSend(1200);
    expect(sent.length).toBe(3);
    aqm.idle();
    clock.now += PROBE_MIN_SPACING_MS;
    aqm.beforeSend(60);
    expect(sent.length).toBe(4);
    expect(counters.probesOut).toBe(4);
  });

  it('an echo of ours is one round-trip sample; the peer\'s probe is echoed with its sequence number', () => {
    const { aqm, clock, sent, counters } = harness();
    aqm.beforeSend(1200);
    clock.now += 3;
    aqm.onMessage(echoOf(sent[0]!));
    expect(counters.probesAnswered).toBe(1);
    expect(aqm.control.baselineMs).toBe(3);
    const probe = Buffer.alloc(PROBE_LEN);
    writeProbe(probe, PROBE_TYPE, 0xdeadbeef);
    aqm.onMessage(probe);
    expect(counters.probesEchoed).toBe(1);
    expect(readProbe(sent.at(-1)!, PROBE_ECHO_TYPE)).toBe(0xdeadbeef);
    expect(counters.probesBad).toBe(0);
  });

  it('a probe that could not be sent is not awaited', () => {
    const { aqm, sent, counters, failSends } = harness();
    failSends(true);
    aqm.beforeSend(1200);
    expect(counters.probesOut).toBe(0);
    const forged = Buffer.alloc(PROBE_LEN);
    writeProbe(forged, PROBE_ECHO_TYPE, 0);
    aqm.onMessage(forged);
    expect(counters.probesBad).toBe(1);
    expect(sent.length).toBe(0);
  });

  it('drops large packets only, while dropping, and counts them', () => {
    const { aqm, clock, sent, counters } = harness();
    const probeAndEcho = (rttMs: number) => {
      clock.now += PROBE_MIN_SPACING_MS;
      aqm.beforeSend(PROBE_EVERY_BYTES);
      const p = sent.at(-1)!;
      clock.now += rttMs;
      aqm.onMessage(echoOf(p));
    };
    probeAndEcho(1);
    for (let i = 0; i < 40; i++) probeAndEcho(20);
    expect(aqm.control.dropping).toBe(true);
    expect(aqm.control.intervalMs).toBe(MIN_AQM_INTERVAL_MS); // a 1-ms baseline
    clock.now += MIN_AQM_INTERVAL_MS; // the next drop is due by now
    const before = counters.dropsAqm;
    expect(aqm.beforeSend(AQM_MIN_DROP_BYTES - 1)).toBe(false); // an ACK or a ping goes
    expect(aqm.beforeSend(AQM_MIN_DROP_BYTES)).toBe(true);
    expect(counters.dropsAqm).toBe(before + 1);
    expect(aqm.beforeSend(AQM_MIN_DROP_BYTES)).toBe(false); // the next one is a control-law step away
  });
});

describe('LinkAqm: hostile probe messages', () => {
  it('echoes of no probe, repeated echoes, malformed messages: counted, never a sample', () => {
    const { aqm, clock, sent, counters } = harness();
    aqm.beforeSend(1200);
    const echo = echoOf(sent[0]!);
    clock.now += 2;
    aqm.onMessage(echo);
    aqm.onMessage(echo); // the same echo again
    const unknown = Buffer.alloc(PROBE_LEN);
    writeProbe(unknown, PROBE_ECHO_TYPE, 12345);
    aqm.onMessage(unknown);
    // Seq 16 lands in probe 0's slot (PROBE_SLOTS = 16): still no match.
    writeProbe(unknown, PROBE_ECHO_TYPE, 16);
    aqm.onMessage(unknown);
    for (const m of [Buffer.from([0xf2]), Buffer.from([0xff, 0, 0, 0, 0, 0, 0, 0]), Buffer.alloc(9, 0xf1), Buffer.alloc(4096, 0xf2)]) aqm.onMessage(m);
    expect(counters.probesAnswered).toBe(1);
    expect(counters.probesBad).toBe(7);
    expect(aqm.control.baselineMs).toBe(2);
  });

  it('a flood of probes gets at most 64 echoes per 100 ms; the rest are counted', () => {
    const { aqm, clock, sent, counters } = harness();
    const probe = Buffer.alloc(PROBE_LEN);
    for (let i = 0; i < 1000; i++) {
      writeProbe(probe, PROBE_TYPE, i);
      aqm.onMessage(probe);
    }
    expect(sent.length).toBe(64);
    expect(counters.probesEchoed).toBe(64);
    expect(counters.probesBad).toBe(936);
    clock.now += 100;
    aqm.onMessage(probe);
    expect(counters.probesEchoed).toBe(65);
  });

  it('random bytes never throw and never leave it dropping', () => {
    const { aqm, clock, counters } = harness();
    let x = 12345;
    const rand = () => (x = (x * 1103515245 + 12345) >>> 0) / 2 ** 32;
    expect(() => {
      for (let i = 0; i < 20_000; i++) {
        const m = Buffer.alloc(1 + Math.floor(rand() * 24));
        for (let j = 0; j < m.length; j++) m[j] = Math.floor(rand() * 256);
        m[0] = 0xf0 | (m[0]! & 0x0f);
        if (rand() < 0.3) m[0] = rand() < 0.5 ? PROBE_TYPE : PROBE_ECHO_TYPE;
        clock.now += rand();
        aqm.onMessage(m);
      }
    }).not.toThrow();
    expect(counters.probesBad + counters.probesEchoed).toBe(20_000);
    expect(counters.probesAnswered).toBe(0);
    expect(aqm.control.dropping).toBe(false);
  });

  it('an inactive link (peer without probes, compact channel down) echoes but takes no samples', () => {
    const { aqm, clock, sent, counters } = harness();
    aqm.beforeSend(1200);
    aqm.active = false;
    clock.now += 5;
    aqm.onMessage(echoOf(sent[0]!));
    expect(counters.probesAnswered).toBe(1);
    expect(aqm.control.baselineMs).toBe(Infinity);
  });
});
