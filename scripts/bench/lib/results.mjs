// The result file every benchmark writes at its end, docs/bench/<name>.json, from which
// scripts/bench/lib/report.mjs renders docs/benchmarks.md. Importing this module marks the bench's
// start (date, load average); writeResults() adds the end, the commit, the machine, the exact
// command with its environment knobs, and the figures.
//
// A figure: { key, label, unit, median, min?, max?, n?, p99?, spread? ('min–max' unless said),
//   baseline?: { label, median, unit? } (measured in the same run), ratio? (median / baseline's),
//   target?: { op: '>=' | '<=', value, of: 'median' | 'max' | 'p99' | 'ratio', text, met },
//   paper?: the paper's figure as text, note?,
//   attempts?, failed?, timeoutMs?: attempts that failed (not up within timeoutMs) and are not in n,
//   p99BeyondTimeout?: the p99 (over all attempts) fell on a failure: longer than p99 = timeoutMs }.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { join } from 'node:path';
import { ROOT, median, quantile } from './lab-nodes.mjs';
import { CLK_TCK, machineBusySeconds } from './scale-nodes.mjs';

export const RESULTS_DIR = join(ROOT, 'docs/bench');
export const RESULTS_VERSION = 1;

/**
 * CPU seconds of this process and its descendants: its own time, the time of the children it has
 * reaped (cutime, cstime) and that of the descendants still running.
 */
export function ownTreeCpuSeconds() {
  const stats = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      stats.set(Number(name), { ppid: Number(f[1]), own: Number(f[11]) + Number(f[12]), reaped: Number(f[13]) + Number(f[14]) });
    } catch { /* gone */ }
  }
  const children = new Map();
  for (const [pid, s] of stats) children.set(s.ppid, [...(children.get(s.ppid) ?? []), pid]);
  let ticks = 0;
  const todo = [process.pid];
  while (todo.length) {
    const pid = todo.pop();
    const s = stats.get(pid);
    if (s) ticks += s.own + s.reaped;
    todo.push(...(children.get(pid) ?? []));
  }
  return ticks / CLK_TCK;
}

const started = { date: new Date(), load: loadavg(), machineBusy: machineBusySeconds(), ownCpu: ownTreeCpuSeconds() };

/**
 * What ran beside the bench: load averages at start and end, and the CPU the rest of the machine
 * (everything but this bench's own process tree: other engineers' work, and the lab's servers)
 * used meanwhile, in % of all cores.
 */
function loadInfo(end) {
  const seconds = (end - started.date) / 1000;
  const others = machineBusySeconds() - started.machineBusy - (ownTreeCpuSeconds() - started.ownCpu);
  return { start: started.load.map(round), end: loadavg().map(round), othersCpuPct: round(Math.max(0, (100 * others) / (seconds * cpus().length))) };
}

/** Environment variables that steer a bench (recorded with every result). */
const KNOB = /^(BENCH_|TUN_BENCH_|TINCAN_LAB_)/;

/** { median, min, max, n } of the finite numbers in `samples` (null when there are none). */
export function summarize(samples) {
  const xs = samples.filter((x) => typeof x === 'number' && Number.isFinite(x));
  if (!xs.length) return null;
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs), n: xs.length };
}

/** The figure's value a target is checked against (`of`: median, max, p99 or ratio). */
const valueOf = (figure, of) => (of === 'ratio' ? figure.ratio : figure[of]);

/**
 * A figure from its samples (or from given median/min/max/n) with its baseline, the ratio to it and
 * its target checked (`withP99`: add the samples' 99th percentile). `target.of` defaults to median; `target.text` to "<op> <value> <unit>".
 */
export function figure({ samples, baseline, target, ...rest }) {
  const { withP99, ...given } = rest;
  const f = { ...(samples ? summarize(samples) : {}), ...given };
  if (samples && withP99) f.p99 = quantile(samples, 0.99);
  if (baseline) {
    f.baseline = baseline;
    if (f.ratio === undefined && Number.isFinite(baseline.median) && baseline.median !== 0 && Number.isFinite(f.median)) {
      f.ratio = f.median / baseline.median;
    }
  }
  if (target) {
    const of = target.of ?? 'median';
    const v = valueOf(f, of);
    const met = Number.isFinite(v) ? (target.op === '>=' ? v >= target.value : v <= target.value) : null;
    f.target = { of, ...target, text: target.text ?? `${target.op === '>=' ? '≥' : '≤'} ${target.value}${of === 'ratio' ? '×' : ` ${f.unit ?? ''}`}`.trim(), met };
  }
  return f;
}

/** git's output without its trailing newline (not trimmed at the start: porcelain lines begin with a space). */
function git(args) {
  try {
    return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trimEnd();
  } catch {
    return null;
  }
}

/** The commit the bench ran from; dirty = changed files other than the bench outputs (docs/bench, docs/benchmarks.md). */
export function commitInfo() {
  const changed = (git(['status', '--porcelain', '--', '.', ':!docs/bench', ':!docs/benchmarks.md']) ?? '').split('\n').filter(Boolean);
  return { describe: git(['describe', '--always']), sha: git(['rev-parse', 'HEAD']), dirty: changed.length > 0, changed: changed.slice(0, 20).map((l) => l.slice(3)) };
}

export function machineInfo() {
  let os = null;
  try {
    os = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? null;
  } catch { /* not Linux */ }
  const c = cpus();
  return { cpu: c[0]?.model ?? null, cores: c.length, kernel: release(), os, node: process.version };
}

/** How the bench was started: the whole invocation (from scripts/bench.mjs) and the command for this bench alone. */
export function commandInfo(name) {
  const knobs = Object.fromEntries(Object.entries(process.env).filter(([k]) => KNOB.test(k) && k !== 'BENCH_INVOCATION').sort());
  const env = Object.entries(knobs).map(([k, v]) => `${k}=${/^[\w.,:/@+-]*$/.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`}`).join(' ');
  const alone = `npm run bench -- ${name.split('-')[0]}`;
  return { invocation: process.env.BENCH_INVOCATION ?? `node ${process.argv.slice(1).map((a) => a.replace(`${ROOT}/`, '')).join(' ')}`, alone: env ? `${env} ${alone}` : alone, env: knobs };
}

const round = (x) => (typeof x === 'number' && Number.isFinite(x) ? Number(x.toPrecision(6)) : x);
const rounded = (o) => JSON.parse(JSON.stringify(o, (_, v) => round(v)));

/**
 * Writes docs/bench/<name>.json. `name`: the bench (or bench-variant, e.g. scale-structured);
 * `title`: what it measures; `settings`: the effective parameters (defaults included);
 * `figures`: from figure(); `plots`, `csv`: file names in docs/bench; `notes`: lines of context.
 */
export function writeResults(name, { title, settings = {}, figures, plots = [], csv = [], notes = [] }) {
  const end = new Date();
  const result = {
    version: RESULTS_VERSION,
    name,
    bench: name.split('-')[0],
    title,
    date: started.date.toISOString(),
    durationS: Math.round((end - started.date) / 1000),
    commit: commitInfo(),
    machine: machineInfo(),
    command: commandInfo(name),
    settings,
    load: loadInfo(end),
    figures: rounded(figures),
    plots,
    csv,
    notes,
  };
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(join(RESULTS_DIR, `${name}.json`), `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote docs/bench/${name}.json`);
  return result;
}
