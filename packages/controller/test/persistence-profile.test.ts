import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it, onTestFinished } from 'vitest';
import { AddressPool } from '../src/address-pool.js';
import { ManualClock } from '../src/clock.js';
import { PersistentJsonFile, StateFileError, readStateFileSync } from '../src/state-file.js';
import { Subnet4 } from '../src/subnet.js';
import { TrafficProfile, utcDay } from '../src/traffic-profile.js';

const DAY = 86_400_000;

describe('AddressPool', () => {
  it('hands out host addresses round-robin, never our own, the network or the broadcast address', () => {
    const pool = new AddressPool(new Subnet4('10.0.0.2/29')); // hosts .1–.6, ours .2
    const got = ['a', 'b', 'c', 'd', 'e'].map((k) => pool.allocate(k));
    expect(got).toEqual(['10.0.0.1', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6']);
    expect(pool.allocate('f')).toBeNull();
    expect(pool.allocate('a')).toBe('10.0.0.1'); // already has one
    expect(pool.capacity).toBe(5);
    pool.release('c');
    expect(pool.allocate('f')).toBe('10.0.0.4');
    expect(pool.ownerOf(0x0a000004)).toBe('f');
  });

  it('reuses freed addresses last (the cursor moves on) and restores assignments', () => {
    const pool = new AddressPool(new Subnet4('172.31.0.1/24'));
    expect(pool.allocate('a')).toBe('172.31.0.2');
    expect(pool.allocate('b')).toBe('172.31.0.3');
    pool.release('a');
    expect(pool.allocate('c')).toBe('172.31.0.4');
    const again = new AddressPool(new Subnet4('172.31.0.1/24'), pool.cursor);
    expect(again.assign('b', '172.31.0.3')).toBe(true);
    expect(again.assign('c', '172.31.0.4')).toBe(true);
    expect(again.assign('x', '172.31.0.4')).toBe(false); // taken
    expect(again.assign('y', '172.31.0.1')).toBe(false); // ours
    expect(again.assign('z', '10.0.0.1')).toBe(false); // outside
    expect(again.allocate('d')).toBe('172.31.0.5');
  });
});

describe('TrafficProfile', () => {
  const t0 = Date.parse('2025-03-10T12:00:00Z');

  it('counts only new traffic from cumulative link counters, per UTC day', () => {
    const p = new TrafficProfile({ halfLifeDays: 7, activeDayPackets: 50 });
    expect(p.observe('a', { created_ms: 1, bytes: 1000, packets: 10 }, t0)).toBe(true);
    expect(p.observe('a', { created_ms: 1, bytes: 1000, packets: 10 }, t0)).toBe(false);
    p.observe('a', { created_ms: 1, bytes: 5000, packets: 60 }, t0);
    expect(p.summary('a', t0).today).toEqual({ bytes: 5000, packets: 60 });
    // a new link (restart) starts from zero again
    p.observe('a', { created_ms: 2, bytes: 100, packets: 5 }, t0 + DAY);
    expect(p.toJSON().a!.days).toEqual({ '2025-03-10': { bytes: 5000, packets: 60 }, '2025-03-11': { bytes: 100, packets: 5 } });
  });

  it('scores decayed active days, ranks the top k above a minimum, and forgets old days', () => {
    const p = new TrafficProfile({ halfLifeDays: 7, activeDayPackets: 50 });
    for (const d of [0, 7, 14]) p.add('weekly', 0, 100, t0 - d * DAY);
    for (let d = 0; d < 10; d++) p.add('daily', 0, 100, t0 - d * DAY);
    p.add('once', 0, 100, t0 - 3 * DAY);
    p.add('noise', 0, 10, t0); // below active_day_packets
    expect(p.score('weekly', t0)).toBeCloseTo(1.75, 2);
    expect(p.score('once', t0)).toBeCloseTo(0.5 ** (3 / 7), 2);
    expect(p.score('noise', t0)).toBe(0);
    expect(p.score('daily', t0)).toBeGreaterThan(6);
    expect([...p.top(['weekly', 'daily', 'once', 'noise'], 2, 0.5, t0)]).toEqual(['daily', 'weekly']);
    expect([...p.top(['weekly', 'daily', 'once'], 5, 1.5, t0)]).toEqual(['daily', 'weekly']);
    expect(p.top(['daily'], 0, 0, t0).size).toBe(0);
    expect(p.keepDays).toBe(42);
    p.pruneAll(t0 + 40 * DAY);
    expect(Object.keys(p.toJSON().weekly!.days)).toEqual([utcDay(t0)]);
  });
});

describe('PersistentJsonFile', () => {
  it('writes atomically (0600), coalescing updates; reads back; rejects broken files', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'state-file-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'sub', 'state.json');
    const clock = new ManualClock();
    const f = new PersistentJsonFile(path, clock, pino({ level: 'silent' }));
    let n = 0;
    f.update(() => ({ n: ++n }), 'later');
    f.update(() => ({ n: ++n }), 'soon');
    await f.flush();
    expect(JSON.parse(readFileSync(path, 'utf8'))).toEqual({ n: 1 });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(f.writes).toBe(1);
    const parse = (d: unknown) =>
      typeof d === 'object' && d !== null && 'n' in d ? { ok: true as const, value: d as { n: number } } : { ok: false as const, problem: 'no n' };
    expect(readStateFileSync(path, parse)).toEqual({ n: 1 });
    expect(readStateFileSync(join(dir, 'absent.json'), parse)).toBeNull();
    writeFileSync(path, '{"m": 1}');
    expect(() => readStateFileSync(path, parse)).toThrow(StateFileError);
    expect(() => readStateFileSync(path, parse)).toThrow(/unexpected content \(no n\)/);
    writeFileSync(path, '{');
    expect(() => readStateFileSync(path, parse)).toThrow(/not valid JSON/);
  });
});
