// The path-health state machine (link-health.ts) on a fake clock: the lab (test/survive.test.ts) runs
// it on real links whose NAT moves.
import { describe, expect, it } from 'vitest';
import { DEFAULT_HEALTH_TIMING, HEALTH_TRANSITIONS, LinkHealthMonitor, holdsPackets, type HealthInput } from '../src/link-health.js';

const T = DEFAULT_HEALTH_TIMING;

/** A monitor and the counters it reads: `heard` (from the peer), `traffic` (packets either way). */
function monitor() {
  const changes: { state: string; input: HealthInput }[] = [];
  const m = new LinkHealthMonitor(T, 0, (state, input) => changes.push({ state, input }));
  const c = { heard: 0, traffic: 0, now: 0, probes: 0 };
  const tick = (ms: number, step: (n: number) => void = () => undefined) => {
    for (let t = 0; t < ms; t += T.tickMs) {
      c.now += T.tickMs;
      step(c.now);
      if (m.tick(c.now, c.heard, c.traffic)) c.probes++;
    }
  };
  m.tick(0, 0, 0);
  return { m, c, tick, changes };
}

describe('link health', () => {
  it('one table: every state has a way back to ok, and packets are held only while suspect or repairing', () => {
    for (const s of Object.keys(HEALTH_TRANSITIONS) as (keyof typeof HEALTH_TRANSITIONS)[]) {
      if (s !== 'ok') expect(HEALTH_TRANSITIONS[s].heard).toBe('ok');
    }
    expect(['ok', 'checking', 'suspect', 'repairing'].filter((s) => holdsPackets(s as never))).toEqual(['suspect', 'repairing']);
  });

  it('a link whose traffic gets answers stays ok and sends no probe', () => {
    const { m, c, tick } = monitor();
    tick(5000, () => { c.traffic++; c.heard++; });
    expect(m.state).toBe('ok');
    expect(c.probes).toBe(0);
  });

  it('an idle link is never probed (lazily checked, when traffic starts or on a hint)', () => {
    const { m, c, tick } = monitor();
    tick(10_000);
    expect(m.state).toBe('ok');
    expect(c.probes).toBe(0);
  });

  it('traffic out and nothing back: checking after checkAfterMs, probes each tick, suspect after about a second', () => {
    const { m, c, tick, changes } = monitor();
    tick(1000, () => { c.traffic++; c.heard++; });
    const deadAt = c.now;
    tick(3000, () => { c.traffic++; }); // the path died: our packets go, nothing comes back
    expect(changes.map((x) => x.state)).toEqual(['checking', 'suspect']);
    expect(m.state).toBe('suspect');
    expect(c.probes).toBeGreaterThan(5);
    // Suspect no sooner than suspectAfterMs after the last thing heard, and not much later.
    const suspectAfter = (() => {
      const { m: m2, c: c2, tick: tick2 } = monitor();
      tick2(1000, () => { c2.traffic++; c2.heard++; });
      const t0 = c2.now;
      while (m2.state !== 'suspect') tick2(T.tickMs, () => { c2.traffic++; });
      return c2.now - t0;
    })();
    expect(suspectAfter).toBeGreaterThanOrEqual(T.suspectAfterMs);
    expect(suspectAfter).toBeLessThanOrEqual(T.suspectAfterMs + 2 * T.tickMs);
    expect(deadAt).toBe(1000);
  });

  it('an echo brings a checking or suspect link back to ok (probes answered: the path carries)', () => {
    const { m, c, tick } = monitor();
    tick(1000, () => { c.traffic++; c.heard++; });
    tick(T.checkAfterMs + T.tickMs, () => { c.traffic++; });
    expect(m.state).toBe('checking');
    c.heard++; // the echo
    tick(T.tickMs);
    expect(m.state).toBe('ok');
    tick(3000, () => { c.traffic++; });
    expect(m.state).toBe('suspect');
    c.heard++;
    tick(T.tickMs);
    expect(m.state).toBe('ok');
  });

  it('a hint checks even an idle link; repair and repair_failed move as the table says; other inputs change nothing', () => {
    const { m, c, tick } = monitor();
    expect(m.apply('hint', c.now)).toBe(true);
    expect(m.state).toBe('checking');
    tick(T.suspectAfterMs + T.tickMs);
    expect(m.state).toBe('suspect');
    expect(m.apply('silent', c.now)).toBe(false);
    expect(m.apply('hint', c.now)).toBe(false);
    expect(m.apply('repair', c.now)).toBe(true);
    expect(m.state).toBe('repairing');
    expect(m.apply('no_answer', c.now)).toBe(false);
    expect(m.apply('repair_failed', c.now)).toBe(true);
    expect(m.state).toBe('suspect');
    expect(m.apply('bogus' as HealthInput, c.now)).toBe(false);
    expect(m.state).toBe('suspect');
  });

  it('a hinted link that answers at once is ok again, never suspect', () => {
    const { m, c, tick, changes } = monitor();
    m.apply('hint', c.now);
    tick(T.tickMs, () => { c.heard++; });
    expect(m.state).toBe('ok');
    expect(changes.map((x) => x.state)).toEqual(['checking', 'ok']);
  });
});
