#!/usr/bin/env node
// Renders docs/benchmarks.md from every docs/bench/*.json the benchmarks wrote (lib/results.mjs)
// and the hand-written prose in docs/bench/analysis/*.md: intro.md first, then a headline table of
// every figure with a target, then one section per result file (command, machine, date, commit,
// load, figures table, plots, raw data) followed by analysis/<name>.md. Running one bench alone
// rewrites only its JSON, so its section is refreshed and the others stay as they were.
//
// Run by scripts/bench.mjs after the benches, or alone: `npm run bench -- --report-only` (or
// `node scripts/bench/lib/report.mjs`).
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The order of the sections; benches not named here follow in alphabetical order. */
export const BENCH_ORDER = ['tun', 'link', 'rtt', 'setup', 'baselines', 'lanes', 'overhead', 'idle', 'scale', 'recovery', 'outage'];

/** 1234.5 → "1,235"; 12.34 → "12.3"; 1.234 → "1.23"; 0.1234 → "0.123". */
export function fmtNum(v) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '—';
  const a = Math.abs(v);
  if (a >= 1000) return Math.round(v).toLocaleString('en-US');
  if (a >= 100 || Number.isInteger(v)) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

const withUnit = (v, unit) => (unit ? `${fmtNum(v)} ${unit}` : fmtNum(v));
const cell = (s) => String(s ?? '—').replace(/\|/g, '\\|').replace(/\n/g, ' ');

/**
 * "248 Mbit/s (229–281, n = 3)": the median with its spread over runs; a figure whose target is
 * checked against its max or p99 leads with that ("p99 334 ms (median 309, …)").
 */
export function measured(f) {
  const of = f.target?.of;
  // Attempts that failed (setup bench: not up within the timeout) are not in n: say how many.
  const failed = f.failed ? `${f.failed} of ${f.attempts ?? f.n + f.failed} failed` : null;
  const p99 = () => `${f.p99BeyondTimeout ? '> ' : ''}${fmtNum(f.p99)}`;
  if ((of === 'max' || of === 'p99') && Number.isFinite(f[of])) {
    const value = of === 'p99' ? `${p99()}${f.unit ? ` ${f.unit}` : ''}` : withUnit(f[of], f.unit);
    return `${of} ${value} (median ${fmtNum(f.median)}${f.n ? `, n = ${f.n}` : ''}${failed ? `, ${failed}` : ''})`;
  }
  const spread = [];
  if (Number.isFinite(f.min) && Number.isFinite(f.max) && f.n > 1) spread.push(`${f.spread ?? ''}${f.spread ? ' ' : ''}${fmtNum(f.min)}–${fmtNum(f.max)}`);
  if (Number.isFinite(f.p99)) spread.push(`p99 ${p99()}`);
  if (f.n) spread.push(`n = ${f.n}`);
  if (failed) spread.push(failed);
  return `${withUnit(f.median, f.unit)}${spread.length ? ` (${spread.join(', ')})` : ''}`;
}

/** "wireguard-go 205 Mbit/s: ×0.90". */
export function baselineText(f) {
  if (!f.baseline) return '—';
  const b = `${f.baseline.label} ${withUnit(f.baseline.median, f.baseline.unit ?? f.unit)}`;
  return Number.isFinite(f.ratio) ? `${b}: ×${f.ratio.toFixed(3)}` : b;
}

export const verdict = (t) => (!t ? '—' : t.met === true ? 'met' : t.met === false ? '**not met**' : 'not measured');

const day = (iso) => `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;

/** When and from what a result comes: fresh runs by date; carried-over ones say so. */
export function provenance(r) {
  if (r.carriedOver) return `carried over: ${r.carriedOver.date}, ${r.carriedOver.commit}`;
  return `${day(r.date)}, ${r.commit?.sha?.slice(0, 7) ?? '?'}${r.commit?.dirty ? ' + changes' : ''}`;
}

/** Sorts by BENCH_ORDER of their bench (then by bench), a bench's own name before its variants. */
function byBench(items) {
  const rank = (r) => {
    const i = BENCH_ORDER.indexOf(r.bench);
    return i < 0 ? BENCH_ORDER.length : i;
  };
  return [...items].sort((a, b) => rank(a) - rank(b) || a.bench.localeCompare(b.bench) || (a.name === a.bench ? -1 : b.name === b.bench ? 1 : a.name.localeCompare(b.name)));
}

/**
 * Was the machine busy with other work? Other processes (and the lab's servers) used ≥ 10 % of its
 * cores during the bench; for results without that figure, a load average ≥ 1 at the start.
 */
export const loaded = (r) => (Number.isFinite(r.load?.othersCpuPct) ? r.load.othersCpuPct >= 10 : (r.load?.start?.[0] ?? 0) >= 1);

export function headlineTable(results) {
  const rows = ['| bench | figure | measured | same-run baseline: ratio | target | met | paper | measured |', '|---|---|---|---|---|---|---|---|'];
  for (const r of results) {
    for (const f of r.figures.filter((x) => x.target)) {
      rows.push(`| [\`${r.name}\`](#${anchor(r)}) | ${cell(f.label)} | ${cell(measured(f))} | ${cell(baselineText(f))} | ${cell(f.target.text)} | ${verdict(f.target)} | ${cell(f.paper)} | ${cell(provenance(r))}${loaded(r) ? ' ¹' : ''} |`);
    }
  }
  return rows.join('\n');
}

const anchor = (r) => `bench-${r.name}`;

function figuresTable(r) {
  const rows = ['| figure | measured | same-run baseline: ratio | target | met | paper |', '|---|---|---|---|---|---|'];
  for (const f of r.figures) {
    const label = f.note ? `${f.label} — ${f.note}` : f.label;
    rows.push(`| ${cell(label)} | ${cell(measured(f))} | ${cell(baselineText(f))} | ${cell(f.target?.text)} | ${verdict(f.target)} | ${cell(f.paper)} |`);
  }
  return rows.join('\n');
}

function runFacts(r) {
  const m = r.machine ?? {};
  const lines = [];
  if (r.carriedOver) {
    lines.push(`> **Carried over, not measured by the latest \`npm run bench\`:** ${r.carriedOver.note ?? ''} ` +
      `(measured ${r.carriedOver.date}, commit ${r.carriedOver.commit}; converted from ${r.carriedOver.from}).`, '');
  }
  lines.push(`- command: \`${r.command?.invocation ?? '?'}\`; this bench alone: \`${r.command?.alone ?? '?'}\``);
  const settings = Object.entries(r.settings ?? {}).map(([k, v]) => `${k} ${v}`).join(', ');
  if (settings) lines.push(`- settings: ${settings}`);
  if (!r.carriedOver) {
    // (the commit's sha, not `git describe --dirty`: the bench outputs themselves do not make a tree dirty)
    lines.push(`- date: ${day(r.date)} (${r.durationS} s); commit ${r.commit?.sha?.slice(0, 12) ?? '?'}` +
      `${r.commit?.dirty ? `, with uncommitted changes to ${r.commit.changed.join(', ')}` : ' (no uncommitted changes but the bench outputs)'}`);
  }
  lines.push(`- machine: ${m.cpu ?? '?'}, ${m.cores ?? '?'} cores, Linux ${m.kernel ?? '?'}${m.os ? ` (${m.os})` : ''}, Node ${m.node ?? '?'}`);
  if (r.load) {
    const l = (xs) => xs.map((x) => x.toFixed(2)).join(' / ');
    const others = Number.isFinite(r.load.othersCpuPct)
      ? `; everything outside the bench's own processes (other work, the lab's servers) used ${r.load.othersCpuPct.toFixed(0)} % of the ${m.cores ?? '?'} cores meanwhile` : '';
    lines.push(`- load average (1 / 5 / 15 min): ${l(r.load.start)} at the start (it still counts a bench run just before), ${l(r.load.end)} at the end${others}` +
      (loaded(r) ? ' — **the machine was busy with other work: the figures are noisy**; compare within the run' : ''));
  }
  for (const n of r.notes ?? []) lines.push(`- ${n}`);
  return lines.join('\n');
}

/** One bench's section: facts, figures, plots, raw data, then its hand-written analysis. */
export function section(r, analysis) {
  const parts = [`<a id="${anchor(r)}"></a>`, `## \`${r.name}\`: ${r.title}`, '', runFacts(r), '', figuresTable(r)];
  if (r.plots?.length) parts.push('', ...r.plots.map((p) => `![${p}](bench/${p})`));
  const files = [...(r.csv ?? []), ...(r.plots ?? [])];
  if (files.length) parts.push('', `Raw data and plots: ${files.map((f) => `[\`bench/${f}\`](bench/${f})`).join(', ')}; figures: [\`bench/${r.name}.json\`](bench/${r.name}.json).`);
  if (analysis) parts.push('', analysis.trim());
  return parts.join('\n');
}

/**
 * The whole document. results: parsed docs/bench/*.json; analysis: { name: markdown } from
 * docs/bench/analysis (intro.md goes first; a name without results still gets its section).
 */
export function renderReport(results, analysis = {}) {
  const sorted = byBench(results);
  const out = ['# Benchmarks', '',
    '<!-- Generated by scripts/bench/lib/report.mjs from docs/bench/*.json and docs/bench/analysis/*.md: edit those (or rerun a bench), not this file. -->', ''];
  if (analysis.intro) out.push(analysis.intro.trim(), '');
  out.push('## Targets', '',
    'Every figure with a target, from the latest result file of each bench. "Same-run baseline" was measured in the same run as the figure (the machines are noisy: compare within a run). ' +
      'Medians of repeated runs with their min–max.', '',
    headlineTable(sorted), '',
    '¹ The machine was busy with other work during this bench (other processes used ≥ 10 % of its cores; for older results: load average ≥ 1 at the start): noisy.', '');
  const names = new Set(sorted.map((r) => r.name));
  for (const r of sorted) out.push(section(r, analysis[r.name]), '');
  const orphans = byBench(Object.keys(analysis).filter((n) => n !== 'intro' && !names.has(n)).map((n) => ({ name: n, bench: n.split('-')[0] })));
  for (const { name: n } of orphans) out.push(`## \`${n}\``, '', `No result file (docs/bench/${n}.json) yet: run \`npm run bench -- ${n}\`.`, '', analysis[n].trim(), '');
  return `${out.join('\n').replace(/\n{3,}/g, '\n\n').trimEnd()}\n`;
}

/** Parsed result files in `dir` (docs/bench): every *.json with a figures array. */
export function loadResults(dir) {
  return readdirSync(dir).filter((f) => f.endsWith('.json')).sort().flatMap((f) => {
    const r = JSON.parse(readFileSync(join(dir, f), 'utf8'));
    if (!Array.isArray(r.figures)) return [];
    return [{ ...r, name: r.name ?? basename(f, '.json'), bench: r.bench ?? basename(f, '.json').split('-')[0] }];
  });
}

export function loadAnalysis(dir) {
  if (!existsSync(dir)) return {};
  return Object.fromEntries(readdirSync(dir).filter((f) => f.endsWith('.md')).map((f) => [basename(f, '.md'), readFileSync(join(dir, f), 'utf8')]));
}

/** Regenerates `docsDir`/benchmarks.md from `docsDir`/bench. */
export function writeReport(docsDir) {
  const benchDir = join(docsDir, 'bench');
  const results = loadResults(benchDir);
  writeFileSync(join(docsDir, 'benchmarks.md'), renderReport(results, loadAnalysis(join(benchDir, 'analysis'))));
  return results.length;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const docs = join(fileURLToPath(new URL('../../../docs', import.meta.url)));
  const n = writeReport(docs);
  console.log(`wrote docs/benchmarks.md from ${n} result files`);
}
