#!/usr/bin/env node
// npm run bench [-- NAME...]: runs every benchmark under scripts/bench/ (or only the named ones), then
// regenerates docs/benchmarks.md from docs/bench/*.json (scripts/bench/lib/report.mjs).
// `npm run bench -- --report-only` only regenerates the report.
// Each benchmark is a standalone script that prints its figures, writes docs/bench/<name>.json
// (lib/results.mjs) and exits non-zero on failure.
import { readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeReport } from './bench/lib/report.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const dir = join(here, 'bench');
const docs = join(here, '../docs');
const all = readdirSync(dir).filter((f) => f.endsWith('.mjs')).map((f) => f.slice(0, -4)).sort();
const args = process.argv.slice(2);
const reportOnly = args.includes('--report-only');
const wanted = args.filter((a) => a !== '--report-only');
for (const name of wanted) {
  if (!all.includes(name)) {
    console.error(`unknown benchmark "${name}"; available: ${all.join(', ')} (or --report-only)`);
    process.exit(2);
  }
}
if (reportOnly && wanted.length) {
  console.error('--report-only runs no benchmark: name none');
  process.exit(2);
}
// The exact command, recorded in every result file.
const invocation = process.env.npm_lifecycle_event === 'bench'
  ? `npm run bench${args.length ? ` -- ${args.join(' ')}` : ''}`
  : `node scripts/bench.mjs${args.length ? ` ${args.join(' ')}` : ''}`;
let failed = 0;
for (const name of reportOnly ? [] : wanted.length ? wanted : all) {
  console.log(`\n=== bench ${name} ===`);
  const r = spawnSync(process.execPath, [join(dir, `${name}.mjs`)], { stdio: 'inherit', env: { ...process.env, BENCH_INVOCATION: invocation } });
  if (r.status !== 0) {
    console.error(`bench ${name} failed (${r.status ?? r.signal}): its section in docs/benchmarks.md keeps its previous results`);
    failed++;
  }
}
const n = writeReport(docs);
console.log(`\nwrote docs/benchmarks.md from ${n} result files in docs/bench`);
process.exit(failed ? 1 : 0);
