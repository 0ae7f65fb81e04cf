// The benchmark report renderer (scripts/bench/lib/report.mjs) on fixture result files: the
// headline table, per-bench sections with their analysis prose, carried-over results, and a
// regeneration after one bench alone that keeps the other sections.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { fmtNum, measured, renderReport, writeReport } from '../lib/report.mjs';
import { figure } from '../lib/results.mjs';
import { quantileOfAttempts, setupResults } from '../lib/setup-results.mjs';

const base = {
  version: 1,
  durationS: 60,
  commit: { describe: 'abc1234', sha: 'abc1234def5678', dirty: false, changed: [] },
  machine: { cpu: 'AMD EPYC', cores: 2, kernel: '6.1.0', os: 'Debian 12', node: 'v20.20.2' },
  settings: { runs: 3 },
  load: { start: [0.2, 0.3, 0.4], end: [1.5, 0.9, 0.6] },
  plots: [],
  csv: [],
  notes: [],
};

function linkResult(tcp) {
  return {
    ...base, name: 'link', bench: 'link', title: 'TCP through one link', date: '2026-11-24T08:30:00.000Z',
    command: { invocation: 'npm run bench -- link', alone: 'npm run bench -- link', env: {} },
    figures: [
      figure({ key: 'tcp_mbps', label: 'iperf3 TCP through the link', unit: 'Mbit/s', samples: tcp, baseline: { label: 'raw path', median: 11000 }, target: { op: '>=', value: 250 }, paper: '64 Mbit/s' }),
      figure({ key: 'rtt_added_ms', label: 'added median RTT', unit: 'ms', median: 1.03, n: 40, target: { op: '<=', value: 0.5 } }),
    ],
    plots: ['link.svg'],
    csv: ['link.csv'],
  };
}

const tunResult = {
  ...base, name: 'tun', bench: 'tun', title: 'TUN reflection', date: '2026-11-24T08:20:00.000Z',
  command: { invocation: 'npm run bench', alone: 'npm run bench -- tun', env: {} },
  load: { start: [0.5, 2, 1], end: [3, 2, 1], othersCpuPct: 35 },
  figures: [figure({ key: 'pps', label: '64-byte packets/s', unit: 'packets/s', samples: [96_600, 110_000, 101_000], target: { op: '>=', value: 100_000 } })],
};

const carried = {
  ...base, name: 'scale-structured', bench: 'scale', title: '50 nodes, structured', date: '2026-11-24',
  carriedOver: { from: 'scale-structured.csv', date: '2026-11-24 (run S)', commit: 'a7c0030', note: 'not rerun' },
  command: { invocation: 'BENCH_SCALE_TOPOLOGY=structured npm run bench -- scale', alone: 'BENCH_SCALE_TOPOLOGY=structured npm run bench -- scale', env: {} },
  figures: [figure({ key: 'rss', label: 'RSS per datapath', unit: 'MB', samples: [69, 75, 79.8], target: { op: '<=', value: 60, of: 'max' } })],
};

describe('figure()', () => {
  it('summarizes samples, takes the ratio to the same-run baseline and checks the target', () => {
    const f = figure({ key: 'k', label: 'l', unit: 'Mbit/s', samples: [140, 184, 135, NaN], baseline: { label: 'wg', median: 200 }, target: { op: '>=', value: 1, of: 'ratio' } });
    expect(f).toMatchObject({ median: 140, min: 135, max: 184, n: 3, ratio: 0.7 });
    expect(f.target).toMatchObject({ of: 'ratio', met: false, text: '≥ 1×' });
  });

  it('checks a target against the max or the p99 when told', () => {
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(figure({ key: 'a', label: 'a', unit: 'ms', samples: xs, withP99: true, target: { op: '<=', value: 99, of: 'p99' } }).target.met).toBe(true);
    expect(figure({ key: 'b', label: 'b', unit: 'ms', samples: xs, target: { op: '<=', value: 99, of: 'max' } }).target.met).toBe(false);
    expect(figure({ key: 'c', label: 'c', unit: 'ms', median: NaN, target: { op: '<=', value: 1 } }).target.met).toBeNull();
  });
});

describe('renderReport()', () => {
  it('formats numbers and spreads', () => {
    expect([fmtNum(11471.2), fmtNum(248), fmtNum(12.34), fmtNum(1.234), fmtNum(0.1234), fmtNum(NaN)]).toEqual(['11,471', '248', '12.3', '1.23', '0.123', '—']);
    expect(measured({ median: 248, min: 229, max: 281, n: 3, unit: 'Mbit/s' })).toBe('248 Mbit/s (229–281, n = 3)');
    expect(measured({ median: 141, n: 1, unit: 'B/s' })).toBe('141 B/s (n = 1)');
    expect(measured({ median: 309, min: 112, max: 334, p99: 330, n: 50, unit: 'ms', target: { of: 'p99' } })).toBe('p99 330 ms (median 309, n = 50)');
    expect(measured({ median: 75.2, min: 71.2, max: 79.3, n: 50, unit: 'MB', target: { of: 'max' } })).toBe('max 79.3 MB (median 75.2, n = 50)');
  });

  it('puts every target in the headline table with its verdict, baseline ratio and provenance', () => {
    const md = renderReport([carried, linkResult([250, 262, 281]), tunResult], {});
    const headline = md.slice(md.indexOf('## Targets'), md.indexOf('<a id='));
    const rows = headline.split('\n').filter((l) => l.startsWith('| ['));
    expect(rows).toHaveLength(4);
    // bench order: tun, link, scale
    expect(rows.map((r) => r.match(/\[`([\w-]+)`\]/)[1])).toEqual(['tun', 'link', 'link', 'scale-structured']);
    expect(rows[1]).toContain('262 Mbit/s (250–281, n = 3)');
    expect(rows[1]).toContain('raw path 11,000 Mbit/s: ×0.024');
    expect(rows[1]).toMatch(/\| met \| 64 Mbit\/s \| 2026-11-24 08:30 UTC, abc1234 \|$/);
    expect(rows[2]).toMatch(/\| \*\*not met\*\* \|/);
    expect(rows[3]).toContain('carried over: 2026-11-24 (run S), a7c0030');
    expect(rows[0]).toContain('¹'); // loaded at its start
    expect(rows[1]).not.toContain('¹');
  });

  it('gives each result a section with its facts, figures, plots and analysis; analysis without results still shows', () => {
    const md = renderReport([linkResult([250]), carried], {
      intro: 'INTRO TEXT', link: '**What bounds it:** the CPU (2026-11-24).', recovery: 'RECOVERY PROSE', idle: 'IDLE PROSE',
    });
    expect(md.startsWith('# Benchmarks')).toBe(true);
    expect(md.indexOf('INTRO TEXT')).toBeLessThan(md.indexOf('## Targets'));
    const link = md.slice(md.indexOf('## `link`'), md.indexOf('## `scale-structured`'));
    expect(link).toContain('command: `npm run bench -- link`');
    expect(link).toContain('commit abc1234def56 (no uncommitted changes but the bench outputs)');
    expect(link).toContain('AMD EPYC, 2 cores, Linux 6.1.0 (Debian 12), Node v20.20.2');
    expect(link).toContain('0.20 / 0.30 / 0.40 at the start (it still counts a bench run just before), 1.50 / 0.90 / 0.60 at the end');
    expect(link).not.toContain('noisy');
    expect(link).toContain('![link.svg](bench/link.svg)');
    expect(link).toContain('[`bench/link.csv`](bench/link.csv)');
    expect(link.indexOf('| iperf3 TCP through the link |')).toBeLessThan(link.indexOf('**What bounds it:**'));
    expect(md).toContain('**Carried over, not measured by the latest `npm run bench`:** not rerun');
    expect(md.indexOf('IDLE PROSE')).toBeLessThan(md.indexOf('RECOVERY PROSE')); // bench order, not alphabetical
    expect(md).toMatch(/## `recovery`\n\nNo result file \(docs\/bench\/recovery\.json\) yet[^\n]*\n\nRECOVERY PROSE/);
  });
});

describe('writeReport()', () => {
  let dir;
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('regenerates from the files present: one bench rerun alone refreshes its section and keeps the others', () => {
    dir = mkdtempSync(join(tmpdir(), 'tincan-report-test-'));
    const bench = join(dir, 'bench');
    mkdirSync(join(bench, 'analysis'), { recursive: true });
    writeFileSync(join(bench, 'link.json'), JSON.stringify(linkResult([200, 210, 220])));
    writeFileSync(join(bench, 'tun.json'), JSON.stringify(tunResult));
    writeFileSync(join(bench, 'not-a-result.json'), JSON.stringify({ something: 'else' }));
    writeFileSync(join(bench, 'analysis', 'link.md'), 'LINK PROSE\n');
    expect(writeReport(dir)).toBe(2);
    const first = readFileSync(join(dir, 'benchmarks.md'), 'utf8');
    expect(first).toContain('210 Mbit/s (200–220, n = 3)');
    expect(first).toMatch(/\| 210 Mbit\/s[^\n]*\| \*\*not met\*\* \|/);

    writeFileSync(join(bench, 'link.json'), JSON.stringify(linkResult([260, 270, 280])));
    writeReport(dir);
    const second = readFileSync(join(dir, 'benchmarks.md'), 'utf8');
    expect(second).toContain('270 Mbit/s (260–280, n = 3)');
    expect(second).not.toContain('210 Mbit/s');
    expect(second).toContain('LINK PROSE');
    const tunSection = (md) => md.slice(md.indexOf('## `tun`'), md.indexOf('## `link`'));
    expect(tunSection(second)).toBe(tunSection(first));
  });
});

describe('loaded()', () => {
  it('flags a run by the CPU others used during it, or by the load average where that is missing', async () => {
    const { loaded } = await import('../lib/report.mjs');
    expect(loaded({ load: { start: [5, 5, 5], othersCpuPct: 3 } })).toBe(false);
    expect(loaded({ load: { start: [0, 0, 0], othersCpuPct: 12 } })).toBe(true);
    expect(loaded({ load: { start: [1.2, 0, 0] } })).toBe(true);
    expect(loaded({})).toBe(false);
  });
});

describe('ownTreeCpuSeconds()', () => {
  it('counts the CPU time of a child this process ran', async () => {
    const { ownTreeCpuSeconds } = await import('../lib/results.mjs');
    const { spawnSync } = await import('node:child_process');
    const before = ownTreeCpuSeconds();
    // The child spins until it has used 0.4 s of CPU (not of wall time: on a loaded machine a
    // wall-clock loop gets less CPU than it lasts).
    spawnSync(process.execPath, ['-e', 'while (process.cpuUsage().user < 400_000);']);
    expect(ownTreeCpuSeconds() - before).toBeGreaterThan(0.2);
  });
});

describe('setupResults(): failed setups count', () => {
  // 99 setups of 300 ms and 1 that never came up (the bench gives up after 30 s).
  const ok = Array.from({ length: 99 }, (_, i) => 290 + (i % 20));
  const direct = { full: ok, trickle: ok, answer: Array.from({ length: 100 }, () => 310), failed: { full: 0, trickle: 1, answer: 0 } };
  const relayed = { full: [400, 410], trickle: [], answer: [390], failed: { full: 0, trickle: 2, answer: 0 } };
  const r = setupResults(direct, relayed, 30_000);
  const fig = (key) => r.figures.find((f) => f.key === key);

  it('takes the p99 over all attempts, a failure being longer than the timeout', () => {
    expect(quantileOfAttempts(ok, 1, 0.99, 30_000)).toEqual({ value: 30_000, beyondTimeout: true });
    expect(quantileOfAttempts(ok, 0, 0.99, 30_000).beyondTimeout).toBe(false);
    expect(quantileOfAttempts([], 0, 0.99, 30_000).value).toBeNaN();
    const p99 = fig('direct_trickle_p99_ms');
    expect(p99).toMatchObject({ p99: 30_000, p99BeyondTimeout: true, failed: 1, attempts: 100, n: 99 });
    expect(p99.target.met).toBe(false); // 1 % failures: the p99 target cannot be met
    expect(fig('direct_full_p99_ms').target.met).toBe(true);
    expect(fig('direct_full_p99_ms').p99BeyondTimeout).toBeUndefined();
  });

  it('keeps the median over the setups that came up and says how many of how many failed', () => {
    const median = fig('direct_trickle_ms');
    expect(median).toMatchObject({ n: 99, failed: 1, attempts: 100, timeoutMs: 30_000 });
    expect(median.median).toBeLessThan(310);
    expect(median.note).toMatch(/1 of 100 setups did not come up within 30 s/);
    expect(fig('direct_full_ms').failed).toBe(0);
    expect(fig('direct_full_ms').note).toBeUndefined();
    expect(r.settings.direct).toBe('trickle 99 + 1 failed, answer 100, full 99');
  });

  it('keeps a mode whose every setup failed, as failures with no median', () => {
    const all = fig('relayed_trickle_ms');
    expect(all).toMatchObject({ n: 0, failed: 2, attempts: 2 });
    expect(all.target.met).toBeNull();
    expect(fig('relayed_trickle_p99_ms')).toMatchObject({ p99: 30_000, p99BeyondTimeout: true });
  });

  it('renders the failures and a p99 beyond the timeout', () => {
    expect(measured(fig('direct_trickle_p99_ms'))).toMatch(/^p99 > 30,000 ms \(median \d+, n = 99, 1 of 100 failed\)$/);
    expect(measured(fig('direct_trickle_ms'))).toMatch(/\(\d+–\d+, n = 99, 1 of 100 failed\)$/);
    expect(measured(fig('direct_full_ms'))).not.toMatch(/failed/);
    const md = renderReport([{ ...base, name: 'setup', bench: 'setup', title: r.title, date: '2026-11-24T10:00:00.000Z',
      command: { invocation: 'npm run bench -- setup', alone: 'npm run bench -- setup', env: {} }, figures: r.figures }], {});
    expect(md).toMatch(/p99 > 30,000 ms \(median \d+, n = 99, 1 of 100 failed\) \| — \| p99 ≤ 2 s \| \*\*not met\*\*/);
  });
});
