// Test harness for the network-namespace lab (scripts/lab, docs/lab.md).
//
//   labInfo()                          the lab's description (lab.json), typed
//   runIn(host, cmd, args, opts)       run a command in tc-HOST to completion -> {code, stdout, stderr}
//   spawnIn(host, cmd, args, opts)     start a long-running process in tc-HOST -> HostProcess
//   impair(nat, {loss, rate}) / clearImpair(nat)   packet loss and rate limits on a NAT's public link
//   tempDir()                          a fresh directory, removed after the test file
//
// Every HostProcess started during a test is killed after that test; one started outside a test
// (beforeAll) is killed after the file. When a test fails, the output of all live and recently
// finished processes of the file is printed. Impairments made with impair() are cleared after the test
// (or file) that made them. All processes run as `ip netns exec tc-HOST CMD` in their own process
// group, so a kill reaches their children too.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, beforeEach } from 'vitest';

export const REPO_ROOT = resolve(import.meta.dirname, '../..');
export const LAB_SCRIPT = join(REPO_ROOT, 'scripts/lab');
export const LAB_DIR = process.env.TINCAN_LAB_DIR ?? '/tmp/tincan-lab';

// ---------------------------------------------------------------------------------------------------
// lab.json

export type NatType = 'none' | 'port-restricted-cone' | 'symmetric';
/** Hosts of the standard lab; `inet` (the internet bridge) also accepts commands. */
export type LabHostName =
  | 'server' | 'pub'
  | 'nat1' | 'nat2' | 'nat3' | 'nat4'
  | 'h1' | 'h2' | 'h3' | 'lan1' | 'lan2';
export type NatName = 'nat1' | 'nat2' | 'nat3' | 'nat4';

export interface LabHost {
  namespace: string; // tc-NAME
  role: 'server' | 'host' | 'router';
  interface: string; // eth0 (hosts, server) or wan0 (routers' public side)
  ipv4: string[]; // first is the main address; routers: [public, lan]
  ipv6: string[];
  nat: NatType; // the NAT this host sits behind (routers: the NAT they implement)
  router: string | null; // the NAT router's name, null on the public segment
  public_ipv4: string; // the address the internet sees
}

export interface LabAccount {
  name: string;
  jid: string;
  password: string;
  groups: string[];
}

export interface LabInfo {
  version: 1;
  fingerprint: string;
  dir: string;
  namespace_prefix: string;
  hosts: Record<LabHostName, LabHost> & Record<string, LabHost | undefined>;
  server: { host: 'server'; ipv4: string[]; ipv6: string[] };
  xmpp: { host: string; port: number; domain: string; ca_file: string };
  stun: string; // "198.18.0.2:3478"
  turn: { address: string; username: string; password: string; realm: string };
  accounts: { file: string; users: LabAccount[]; rosters: [string, string][] };
}

let cachedInfo: LabInfo | undefined;
/** The lab's lab.json (read once per test file). */
export function labInfo(): LabInfo {
  cachedInfo ??= JSON.parse(readFileSync(join(LAB_DIR, 'lab.json'), 'utf8')) as LabInfo;
  return cachedInfo;
}

/** An XMPP account of the lab by name (node1..node64, stranger, alice, bob, carol). */
export function account(name: string): LabAccount {
  const a = labInfo().accounts.users.find((u) => u.name === name);
  if (!a) throw new Error(`no lab account ${name}`);
  return a;
}

function namespaceOf(host: string): string {
  if (host === 'inet') return `${labInfo().namespace_prefix}inet`;
  const h = labInfo().hosts[host];
  if (!h) throw new Error(`unknown lab host ${host} (hosts: ${Object.keys(labInfo().hosts).join(' ')})`);
  return h.namespace;
}

// ---------------------------------------------------------------------------------------------------
// processes

export interface RunOptions {
  timeoutMs?: number; // default 30 s; on timeout the process group is killed (SIGKILL)
  env?: Record<string, string>; // added to the current environment
  cwd?: string;
  input?: string | Buffer; // written to stdin, then stdin is closed
}

export interface RunResult {
  code: number | null; // null if killed by a signal
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal); // the whole process group (detached: the child leads it)
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

function spawnNs(host: string, cmd: string, args: string[], env?: Record<string, string>, cwd?: string): ChildProcess {
  return spawn('ip', ['netns', 'exec', namespaceOf(host), cmd, ...args], {
    env: { ...process.env, ...env },
    cwd,
    detached: true, // own process group: kills reach grandchildren
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

/** Run CMD in tc-HOST to completion. Never rejects for a non-zero exit; check `code`. */
export function runIn(host: string, cmd: string, args: string[] = [], opts: RunOptions = {}): Promise<RunResult> {
  const child = spawnNs(host, cmd, args, opts.env, opts.cwd);
  child.stdin!.on('error', () => {});
  child.stdin!.end(opts.input ?? '');
  return collect(child, opts.timeoutMs ?? 30_000, 'SIGKILL');
}

export interface SpawnOptions {
  env?: Record<string, string>;
  cwd?: string;
  name?: string; // label in logs; default "HOST:CMD"
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface LogLine {
  t: number; // ms since spawn
  stream: 'out' | 'err';
  text: string;
}

/** A long-running process in a lab host, with its output captured line by line. */
export class HostProcess {
  readonly name: string;
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  /** stdout and stderr interleaved in arrival order */
  readonly lines: LogLine[] = [];
  exit: ExitInfo | null = null;
  private readonly child: ChildProcess;
  private readonly started = Date.now();
  private readonly exited: Promise<ExitInfo>;
  private readonly waiters = new Set<() => void>();

  constructor(readonly host: string, readonly cmd: string, readonly args: string[], opts: SpawnOptions = {}) {
    this.name = opts.name ?? `${host}:${cmd.split('/').pop()}`;
    this.child = spawnNs(host, cmd, args, opts.env, opts.cwd);
    this.child.stdin!.on('error', () => {});
    this.capture('out', this.child.stdout!);
    this.capture('err', this.child.stderr!);
    this.exited = new Promise((resolvePromise) => {
      this.child.on('error', (err) => {
        this.push('err', `spawn error: ${err.message}`);
        this.exit = { code: null, signal: null };
        this.notify();
        resolvePromise(this.exit);
      });
      this.child.on('close', (code, signal) => {
        this.exit = { code, signal };
        this.notify();
        resolvePromise(this.exit);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.exit === null;
  }

  /** stdin of the process (e.g. to drive a REPL-like fixture). */
  get stdin(): NodeJS.WritableStream {
    return this.child.stdin!;
  }

  private capture(stream: 'out' | 'err', source: NodeJS.ReadableStream): void {
    let partial = '';
    source.setEncoding('utf8');
    source.on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop() ?? '';
      for (const p of parts) this.push(stream, p);
      this.notify();
    });
    source.on('end', () => {
      if (partial) this.push(stream, partial);
      partial = '';
      this.notify();
    });
  }

  private push(stream: 'out' | 'err', text: string): void {
    (stream === 'out' ? this.stdout : this.stderr).push(text);
    this.lines.push({ t: Date.now() - this.started, stream, text });
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /**
   * Resolve with the first line (stdout or stderr) matching `re`. Lines already received count, unless
   * `fromNow` is set. Rejects on timeout or when the process exits without a match.
   */
  waitForLine(re: RegExp, timeoutMs = 10_000, opts: { fromNow?: boolean } = {}): Promise<RegExpMatchArray> {
    let next = opts.fromNow ? this.lines.length : 0;
    return new Promise((resolvePromise, reject) => {
      const check = (): boolean => {
        for (; next < this.lines.length; next++) {
          const m = this.lines[next]!.text.match(re);
          if (m) {
            done();
            resolvePromise(m);
            return true;
          }
        }
        if (this.exit) {
          done();
          reject(new Error(`${this.name} exited (${describeExit(this.exit)}) before printing ${re}\n${this.tail(20)}`));
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name}: no line matching ${re} within ${timeoutMs} ms\n${this.tail(20)}`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
      };
      const waiter = (): void => void check();
      this.waiters.add(waiter);
      check();
    });
  }

  /** Wait for the process to end; rejects after timeoutMs (the process keeps running). */
  async waitForExit(timeoutMs = 30_000): Promise<ExitInfo> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name} still running after ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Signal the process group; if it has not exited after graceMs, SIGKILL it. Resolves on exit. */
  async kill(signal: NodeJS.Signals = 'SIGTERM', graceMs = 3000): Promise<ExitInfo> {
    if (this.exit) return this.exit;
    killGroup(this.child, signal);
    const timer = setTimeout(() => killGroup(this.child, 'SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGKILL without waiting (process exit handler). */
  killNow(): void {
    killGroup(this.child, 'SIGKILL');
  }

  /** The last n lines, for error messages. */
  tail(n = 50): string {
    return this.lines
      .slice(-n)
      .map((l) => `  [${this.name} ${l.stream}] ${l.text}`)
      .join('\n');
  }

  /** The whole captured output with timestamps. */
  log(): string {
    const head = `----- ${this.name} (${[this.cmd, ...this.args].join(' ')}) ${
      this.exit ? describeExit(this.exit) : 'running'
    }, ${this.lines.length} lines`;
    const body = this.lines.map((l) => `${(l.t / 1000).toFixed(3).padStart(8)} ${l.stream} ${l.text}`);
    return [head, ...body].join('\n');
  }
}

function describeExit(e: ExitInfo): string {
  return e.signal ? `killed by ${e.signal}` : `exit ${e.code}`;
}

/** Start CMD in tc-HOST. Tracked: killed after the current test (or after the file if started outside a test). */
export function spawnIn(host: string, cmd: string, args: string[] = [], opts: SpawnOptions = {}): HostProcess {
  const p = new HostProcess(host, cmd, args, opts);
  tracked.push({ proc: p, scope: currentTest ? 'test' : 'file' });
  return p;
}

// ---------------------------------------------------------------------------------------------------
// impairments (scripts/lab impair), cleared automatically

/** Run scripts/lab with arguments (e.g. ['status']). */
export function labScript(args: string[], opts: { timeoutMs?: number } = {}): Promise<RunResult> {
  return runLocal(LAB_SCRIPT, args, opts.timeoutMs ?? 60_000);
}

/** Packet loss (percent, each direction) and/or a rate limit (e.g. "10mbit", both directions) on a NAT's public link. */
export async function impair(target: NatName | 'pub' | 'server', opts: { loss?: number; rate?: string }): Promise<void> {
  const args = ['impair', target];
  if (opts.loss !== undefined) args.push('--loss', String(opts.loss));
  if (opts.rate !== undefined) args.push('--rate', opts.rate);
  impaired.push({ target, scope: currentTest ? 'test' : 'file' });
  const r = await labScript(args);
  if (r.code !== 0) throw new Error(`scripts/lab ${args.join(' ')} failed (${r.code}): ${r.stdout}${r.stderr}`);
}

export async function clearImpair(target: NatName | 'pub' | 'server'): Promise<void> {
  const r = await labScript(['impair', target, '--clear']);
  if (r.code !== 0) throw new Error(`scripts/lab impair ${target} --clear failed: ${r.stdout}${r.stderr}`);
}

function runLocal(cmd: string, args: string[], timeoutMs: number): Promise<RunResult> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  return collect(child, timeoutMs, 'SIGTERM'); // scripts/lab cleans up on TERM
}

/** Collects a tracked child's output until it exits; on timeout its process group gets `signal`. */
function collect(child: ChildProcess, timeoutMs: number, signal: NodeJS.Signals): Promise<RunResult> {
  liveChildren.add(child);
  let stdout = '';
  let stderr = '';
  let timedOut = false;
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(child, signal);
  }, timeoutMs);
  return new Promise((resolvePromise, reject) => {
    child.on('error', (err) => {
      clearTimeout(timer);
      liveChildren.delete(child);
      reject(err);
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      liveChildren.delete(child);
      resolvePromise({ code, signal: sig, stdout, stderr, timedOut });
    });
  });
}

// ---------------------------------------------------------------------------------------------------
// temp dirs

const tempDirs: string[] = [];
/** A fresh directory under the system temp dir; removed after the test file (kept if TINCAN_KEEP_TMP=1). */
export function tempDir(prefix = 'tincan-test-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(d);
  return d;
}

// ---------------------------------------------------------------------------------------------------
// lifecycle: hooks registered once per test file (vitest isolates test files)

type Scope = 'test' | 'file';
const tracked: { proc: HostProcess; scope: Scope }[] = [];
const impaired: { target: NatName | 'pub' | 'server'; scope: Scope }[] = [];
const liveChildren = new Set<ChildProcess>();
let currentTest: string | undefined;
let fileFailed = false;

function printLogs(title: string, procs: HostProcess[]): void {
  if (!procs.length) return;
  console.error([`===== ${title}: output of ${procs.length} lab process(es)`, ...procs.map((p) => p.log())].join('\n'));
}

interface TaskLike {
  result?: { state?: string };
  tasks?: TaskLike[];
}
function anyFailed(t: TaskLike): boolean {
  return t.result?.state === 'fail' || (t.tasks ?? []).some(anyFailed);
}

async function cleanup(scope: Scope | 'all'): Promise<void> {
  const procs = tracked.filter((t) => scope === 'all' || t.scope === scope);
  await Promise.allSettled(procs.map((t) => t.proc.kill('SIGTERM', 2000)));
  for (const t of procs) tracked.splice(tracked.indexOf(t), 1);
  const imps = impaired.filter((i) => scope === 'all' || i.scope === scope);
  for (const i of imps) impaired.splice(impaired.indexOf(i), 1);
  for (const target of new Set(imps.map((i) => i.target))) await clearImpair(target).catch(() => {});
}

try {
  // (vitest parses hook parameters: the context must be destructured)
  beforeEach(({ task }) => {
    currentTest = task.name;
  });
  afterEach(async ({ task }) => {
    if (task.result?.state === 'fail') {
      fileFailed = true;
      printLogs(`test "${task.name}" failed`, tracked.map((t) => t.proc));
    }
    currentTest = undefined;
    await cleanup('test');
  });
  // eslint-disable-next-line no-empty-pattern
  afterAll(async ({}, suite) => {
    // a failing beforeAll/afterAll hook fails no single test: print what the processes said
    if (!fileFailed && anyFailed(suite)) printLogs(`${suite.name}: hook failed`, tracked.map((t) => t.proc));
    await cleanup('all');
    for (const c of liveChildren) killGroup(c, 'SIGKILL');
    if (process.env.TINCAN_KEEP_TMP !== '1') for (const d of tempDirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
} catch {
  // imported outside a vitest test file (e.g. from a script): no automatic cleanup
}

process.on('exit', () => {
  for (const t of tracked) t.proc.killNow();
  for (const c of liveChildren) killGroup(c, 'SIGKILL');
});
