// The datapath's side of the liveness watchdog (src/watchdog.ts): its options and the fatal line it
// hands the native thread. The native thread itself (a really blocked main thread, the real SIGKILL,
// stop, a paused process) is tested in packages/watchdog/test; the lab test (test/watchdog.test.ts)
// hangs a real tincan-datapath and a lane process with gdb and parses the real line.
import { hostname } from 'node:os';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { LaneInit } from '../src/lanes/lane-ipc.js';
import { VALID_LANE_INIT } from './fixtures/lane-init.js';
import { fatalLine, Watchdog, WatchdogSeconds } from '../src/watchdog.js';

const log = pino({ level: 'silent' });

describe('watchdog: the fatal line', () => {
  it('is a pino fatal line once the native thread has put "time" and "stalledS" in', () => {
    const { linePrefix, lineSuffix } = fatalLine({ name: 'tincan-datapath', lane: '1', quote: 'a "b"\n' }, 3);
    // What native/watchdog.c writes between the two.
    const line = `${linePrefix}"time":1000,"stalledS":3.1,${lineSuffix}`;
    expect(line.endsWith('}\n')).toBe(true);
    expect(line.slice(0, -1)).not.toContain('\n');
    const o = JSON.parse(line) as Record<string, unknown>;
    expect(o).toMatchObject({
      level: 60, time: 1000, pid: process.pid, hostname: hostname(), name: 'tincan-datapath', lane: '1', quote: 'a "b"\n',
      component: 'watchdog', stalledS: 3.1, timeoutS: 3,
    });
    expect(o.msg).toMatch(/stalled for the timeout \(3 s\).*SIGKILL/);
  });
});

describe('watchdog: options', () => {
  it('0 disables it: no thread, nothing to stop', () => {
    expect(Watchdog.start({ timeoutS: 0, logger: log })).toBeNull();
  });

  it('takes whole seconds, 0..3600, and nothing else', () => {
    for (const bad of [-1, 1.5, 3601, NaN, '30']) expect(WatchdogSeconds.safeParse(bad).success).toBe(false);
    for (const good of [0, 1, 30, 3600]) expect(WatchdogSeconds.safeParse(good).success).toBe(true);
    expect(() => Watchdog.start({ timeoutS: -5, logger: log })).toThrow();
  });

  it('a lane init carries the timeout, validated the same way', () => {
    const { watchdogS: _, ...init } = VALID_LANE_INIT;
    expect(LaneInit.safeParse({ ...init, watchdogS: 30 }).success).toBe(true);
    expect(LaneInit.safeParse(init).success).toBe(false);
    expect(LaneInit.safeParse({ ...init, watchdogS: -1 }).success).toBe(false);
  });
});
