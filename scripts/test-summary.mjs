#!/usr/bin/env node
// Prints the closing line of a test run, "N passed, N failed, N skipped", from vitest's JSON report.
// Exits non-zero when the report is missing, a test failed, or no test ran.
import { readFileSync } from 'node:fs';

const file = process.argv[2] ?? 'test-results/vitest.json';
let report;
try {
  report = JSON.parse(readFileSync(file, 'utf8'));
} catch (err) {
  console.error(`test-summary: no readable report at ${file}: ${err.message}`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}
const passed = report.numPassedTests ?? 0;
let failed = report.numFailedTests ?? 0;
const skipped = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
// A file that failed before any test ran (an import error, a failing beforeAll) counts as one failure.
for (const suite of report.testResults ?? []) {
  const ran = (suite.assertionResults ?? []).filter((a) => a.status === 'passed' || a.status === 'failed');
  if (suite.status === 'failed' && ran.every((a) => a.status !== 'failed')) {
    failed++;
    console.log(`failed outside a test: ${suite.name}: ${(suite.message ?? '').split('\n')[0]}`);
  }
}
console.log(`\ntests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
