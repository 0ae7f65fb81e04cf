import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// The four commands as installed (the bundles `npm run build` makes, through node_modules/.bin):
// --version, --help, and what a wrong flag, level or config does. Each wrong input is one line on
// stderr and exit status 2, never a stack trace or a page of the bundle's source.

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const BIN = join(ROOT, 'node_modules/.bin');
const COMMANDS = ['tincan-datapath', 'tincan-groupvpn', 'tincan-socialvpn', 'tincanctl'];
let dir: string;
let version: string;

/** The environment without TINCAN_LOG_LEVEL (the runner's own must not leak in), plus `env`. */
function environment(env: Record<string, string> = {}): NodeJS.ProcessEnv {
  const { TINCAN_LOG_LEVEL: _, ...rest } = process.env;
  return { ...rest, ...env };
}

function run(cmd: string, args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(join(BIN, cmd), args, { encoding: 'utf8', env: environment(env), timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A wrong input: exit 2 and exactly one line on stderr, starting with the command's name. */
function expectOneLine(r: ReturnType<typeof run>, cmd: string, pattern: RegExp): void {
  expect(r.code).toBe(2);
  expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(new RegExp(`^${cmd}: `));
  expect(r.stderr).toMatch(pattern);
}

const groupConfig = (over: Record<string, unknown> = {}) => ({
  network_id: 'lab',
  xmpp: { host: 'xmpp.invalid', jid: 'n1@vpn.invalid', password: 'pw' },
  vnic: { ip4: '10.254.0.1/16' },
  // Nothing listens there: the controller keeps waiting for its datapath, which is all it needs here.
  datapath: '127.0.0.1:9',
  state_dir: join(dir, 'state'),
  ...over,
});

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tincan-commands-'));
  version = (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('the commands', () => {
  it.each(COMMANDS)('%s answers --version with the package version, and --help', (cmd) => {
    const v = run(cmd, ['--version']);
    expect(v.code).toBe(0);
    expect(v.stdout.trim()).toBe(version);
    const h = run(cmd, ['--help']);
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(new RegExp(`^Usage: ${cmd} `));
    expect(h.stdout).toContain('--version');
  });

  it('a wrong flag is one line and exit status 2, for every command', () => {
    for (const cmd of COMMANDS) expectOneLine(run(cmd, ['--no-such-flag']), cmd, /unknown option '--no-such-flag'/);
  });

  it('tincan-datapath: a bad --log-level, TINCAN_LOG_LEVEL or --rpc is one line and exit status 2', () => {
    expectOneLine(run('tincan-datapath', ['--log-level', 'bogus']), 'tincan-datapath', /'bogus' is invalid\. expected one of fatal, error, warn, info, debug, trace, silent/);
    expectOneLine(
      run('tincan-datapath', [], { TINCAN_LOG_LEVEL: 'warning' }),
      'tincan-datapath',
      /value 'warning' from env 'TINCAN_LOG_LEVEL' is invalid\. .*\("warn", not "warning"\)/,
    );
    expectOneLine(run('tincan-datapath', ['--rpc', 'foo']), 'tincan-datapath', /'--rpc <address:port>' argument 'foo' is invalid\. expected address:port, e\.g\. 127\.0\.0\.1:5801/);
    expectOneLine(run('tincan-datapath', ['--rtc-log-level', 'Loud']), 'tincan-datapath', /Allowed choices are Verbose, Debug, Info, Warning, Error/);
  });

  it('the controllers: a bad --log-level or TINCAN_LOG_LEVEL is one line and exit status 2, before the config is read', () => {
    for (const cmd of ['tincan-groupvpn', 'tincan-socialvpn']) {
      expectOneLine(run(cmd, ['--config', '/nonexistent.json', '--log-level', 'loud']), cmd, /'loud' is invalid/);
      expectOneLine(run(cmd, ['--config', '/nonexistent.json'], { TINCAN_LOG_LEVEL: 'warning' }), cmd, /from env 'TINCAN_LOG_LEVEL'/);
    }
  });

  it('tincan-groupvpn --check-config: a bad file is named with the key or line:column and the fix; exit status 2', async () => {
    const file = join(dir, 'hostport.json');
    await writeFile(file, JSON.stringify(groupConfig({ xmpp: { host: 'xmpp.example.org:5222', jid: 'n1@vpn.invalid', password: 'pw' } })));
    expectOneLine(run('tincan-groupvpn', ['--config', file, '--check-config']), 'tincan-groupvpn', /hostport\.json: xmpp\.host: .* give "host": "xmpp\.example\.org" and "port": 5222/);
    const bad = join(dir, 'syntax.json');
    await writeFile(bad, '{\n  "network_id": "lab"\n  "vnic": {}\n}\n');
    expectOneLine(run('tincan-groupvpn', ['--config', bad, '--check-config']), 'tincan-groupvpn', /syntax\.json: line 3, column 3: not valid JSON/);
    const ok = join(dir, 'ok.json');
    await writeFile(ok, `\uFEFF${JSON.stringify(groupConfig())}`);
    const r = run('tincan-groupvpn', ['--config', ok, '--check-config']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain(`ok (network lab, 10.254.0.1/16, on-demand; datapath 127.0.0.1:9, state_dir ${join(dir, 'state')})`);
  });

  it('tincanctl: no token says which datapath it looked for and what to check; exit status 1', async () => {
    const file = join(dir, 'ctl.json');
    await writeFile(file, JSON.stringify(groupConfig({ datapath: '127.0.0.1:5811' })));
    const r = run('tincanctl', ['--config', file, 'status']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(
      `tincanctl: is tincan-datapath running for ${file}? no RPC token at ${join(dir, 'state')}/rpc-5811.token ` +
        '(start it; or say which datapath: -n NETWORK, --config FILE, or --state-dir DIR --rpc ADDRESS:PORT)',
    );
  });
});

/** A running controller whose stdout (JSON lines: not a terminal) is collected. */
function startController(cmd: string, file: string) {
  const proc = spawn(join(BIN, cmd), ['--config', file], { env: environment(), stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Record<string, unknown>[] = [];
  const waiters: { match: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = [];
  let buf = '';
  proc.stdout.on('data', (chunk: Buffer) => {
    buf += chunk.toString();
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const l = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
      buf = buf.slice(nl + 1);
      lines.push(l);
      for (const w of [...waiters]) if (w.match(l)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(l); }
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const line = (match: (l: Record<string, unknown>) => boolean) =>
    new Promise<Record<string, unknown>>((resolve) => {
      const seen = lines.find(match);
      if (seen) resolve(seen);
      else waiters.push({ match, resolve });
    });
  return { proc, lines, line, exited };
}

const msg = (re: RegExp) => (l: Record<string, unknown>) => typeof l.msg === 'string' && re.test(l.msg);

describe('SIGHUP reloads a controller\'s config', () => {
  it('applies the live settings, names the others, refuses a broken file and keeps running', async () => {
    const file = join(dir, 'hup.json');
    await writeFile(file, JSON.stringify(groupConfig()));
    const c = startController('tincan-groupvpn', file);
    try {
      await c.line(msg(/^starting$/));
      expect(c.lines.some((l) => l.level === 20)).toBe(false); // info: no debug lines yet

      await writeFile(file, JSON.stringify(groupConfig({ log_level: 'debug', max_links: 8, routing: { deny: ['10.254.0.7'] }, vnic: { ip4: '10.254.0.9/16' } })));
      c.proc.kill('SIGHUP');
      const applied = await c.line(msg(/^reload \(SIGHUP\): applied /));
      expect([...(applied.applied as string[])].sort()).toEqual(['log_level', 'max_links', 'routing.deny']);
      const notApplied = await c.line(msg(/cannot change while running/));
      expect(notApplied.not_applied).toEqual(['vnic.ip4']);
      expect(notApplied.msg).toMatch(/restart tincan-groupvpn to apply/);

      // The same file again: nothing changed (vnic.ip4 still waits for a restart, and says so).
      c.proc.kill('SIGHUP');
      await c.line((l) => l !== notApplied && msg(/cannot change while running/)(l));

      await writeFile(file, '{ "network_id": "lab",, }');
      c.proc.kill('SIGHUP');
      const refused = await c.line(msg(/^reload \(SIGHUP\) refused, the running config stays: /));
      expect(refused.msg).toMatch(/hup\.json: line 1, column 23: not valid JSON/);
      expect(refused.level).toBe(50);

      c.proc.kill('SIGTERM');
      expect(await c.exited).toEqual({ code: 0, signal: null });
    } finally {
      c.proc.kill('SIGKILL');
    }
  });
});
