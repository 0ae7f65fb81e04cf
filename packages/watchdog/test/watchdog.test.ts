// @tincan/watchdog on the real addon: each case runs a real child Node process that starts the watchdog
// from the built wrapper (dist/, so run `npx tsc -b` and build the addon first), then blocks, beats, stops
// or gets stopped, and the test looks at how the process ended and what it wrote to stderr.
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MainThreadWatchdog } from '../src/index.js';

const DIST = resolve(import.meta.dirname, '../dist/index.js');

interface Ended {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/**
 * Runs an ES module snippet in a child Node process, with `MainThreadWatchdog` and `block(ms)` (blocks
 * the main thread for real, as a native deadlock does) in scope. `onStdout` sees each stdout chunk.
 */
function runNode(source: string, onStdout?: (text: string, pid: number) => void, timeoutMs = 15_000): Promise<Ended> {
  const prelude = `import { MainThreadWatchdog } from ${JSON.stringify(DIST)};
const block = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
`;
  return new Promise((done, fail) => {
    const started = Date.now();
    const child = spawn(process.execPath, ['--input-type=module', '-e', prelude + source], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      onStdout?.(d.toString(), child.pid!);
    });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      fail(new Error(`the child did not end in ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(t);
      done({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

const LINE = `linePrefix: '{"level":60,', lineSuffix: '"name":"test","msg":"stalled \\\\"main\\\\""}\\n'`;

describe('MainThreadWatchdog in a real process', () => {
  it('SIGKILLs a process whose main thread is blocked, after writing exactly one well-formed line', async () => {
    const before = Date.now();
    const r = await runNode(`
MainThreadWatchdog.start({ timeoutMs: 1000, checkEveryMs: 250, ${LINE} });
await sleep(300);
block(15_000);
process.stderr.write('main thread came back\\n');
`);
    expect(r.signal, r.stderr).toBe('SIGKILL');
    // 0.3 s, then a stall of 1 s noticed within one check (0.25 s): well under the 15 s block.
    expect(r.ms).toBeLessThan(8000);
    expect(r.stderr.endsWith('\n')).toBe(true);
    const lines = r.stderr.split('\n').slice(0, -1);
    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(Object.keys(line)).toEqual(['level', 'time', 'stalledS', 'name', 'msg']);
    expect(line).toMatchObject({ level: 60, name: 'test', msg: 'stalled "main"' });
    expect(line.time as number).toBeGreaterThanOrEqual(before);
    expect(line.time as number).toBeLessThanOrEqual(Date.now());
    expect(line.stalledS as number).toBeGreaterThanOrEqual(1);
    expect(line.stalledS as number).toBeLessThan(5);
  });

  it('leaves a process that keeps beating alone, and never keeps it alive', async () => {
    // 3 s of normal work at a 1 s timeout, then the program ends without stopping the watchdog: the
    // process exits by itself (unref'd timer, detached thread).
    const r = await runNode(`
MainThreadWatchdog.start({ timeoutMs: 1000, checkEveryMs: 250, ${LINE} });
const end = Date.now() + 3000;
while (Date.now() < end) { block(150); await sleep(50); }
process.exitCode = 7;
`);
    expect(r.stderr).toBe('');
    expect(r.signal).toBeNull();
    expect(r.code).toBe(7);
  });

  it('stop() ends the thread: a main thread that blocks afterwards is not killed', async () => {
    // The thread is named tincan-watchdog: count it in /proc/self/task.
    const r = await runNode(`
import { readdirSync, readFileSync } from 'node:fs';
const watchdogThreads = () => readdirSync('/proc/self/task').filter((t) => {
  try { return readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim() === 'tincan-watchdog'; } catch { return false; }
}).length;
const w = MainThreadWatchdog.start({ timeoutMs: 1000, checkEveryMs: 250, ${LINE} });
await sleep(100);
const running = watchdogThreads();
w.stop();
w.stop();
await sleep(600);
console.log(JSON.stringify({ running, afterStop: watchdogThreads(), stopped: w.stopped }));
block(2500);
process.exitCode = 5;
`);
    expect(r.stderr).toBe('');
    expect(r.signal).toBeNull();
    expect(r.code).toBe(5);
    expect(JSON.parse(r.stdout)).toEqual({ running: 1, afterStop: 0, stopped: true });
  });

  it('does not count a pause of the whole process (SIGSTOP for 3 s, then SIGCONT) as a stall', async () => {
    let stopped = false;
    const r = await runNode(
      `
MainThreadWatchdog.start({ timeoutMs: 1000, checkEveryMs: 250, ${LINE} });
// Works on until 2 s after the SIGCONT, its main thread busy most of the time (beating only between
// blocks of 0.4 s): so after the SIGCONT it usually beats only after the watchdog thread has looked.
let resumed = 0;
process.on('SIGCONT', () => { resumed = Date.now(); });
await sleep(500);
console.log('armed');
while (!resumed || Date.now() < resumed + 2000) { block(400); await sleep(20); }
process.exitCode = 3;
`,
      (text, pid) => {
        if (stopped || !text.includes('armed')) return;
        stopped = true;
        process.kill(pid, 'SIGSTOP');
        setTimeout(() => process.kill(pid, 'SIGCONT'), 3000);
      },
    );
    expect(stopped).toBe(true);
    expect(r.stderr).toBe('');
    expect(r.signal).toBeNull();
    expect(r.code).toBe(3);
    expect(r.ms).toBeGreaterThan(5000);
  });

  it('is started on the main thread only', async () => {
    const r = await runNode(`
import { Worker } from 'node:worker_threads';
const w = new Worker(\`
  import { parentPort } from 'node:worker_threads';
  import { MainThreadWatchdog } from ${JSON.stringify(DIST)};
  try { MainThreadWatchdog.start({ timeoutMs: 1000, checkEveryMs: 250, linePrefix: '', lineSuffix: '' }); parentPort.postMessage('started'); }
  catch (e) { parentPort.postMessage(e.code); }
\`, { eval: true, execArgv: ['--input-type=module'] });
w.on('message', (m) => console.log(m));
await new Promise((r) => w.on('exit', r));
`);
    expect(r.stdout.trim(), r.stderr).toBe('ERR_INVALID_THREAD');
  });
});

describe('MainThreadWatchdog options', () => {
  it('takes whole milliseconds, 1 <= checkEveryMs <= timeoutMs <= 1 h, and nothing else', () => {
    const line = { linePrefix: '', lineSuffix: '' };
    for (const [timeoutMs, checkEveryMs] of [[0, 1], [1000, 0], [1000, 1001], [1.5, 1], [3_600_001, 1000], [NaN, 1]] as const) {
      expect(() => MainThreadWatchdog.start({ timeoutMs, checkEveryMs, ...line })).toThrow(RangeError);
    }
  });
});
