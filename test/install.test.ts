// Installing TinCan like an npm tool, from a fresh copy of the repository: `npm ci && npm run build`,
// `npm pack`, `npm install -g` of the tarball into an empty prefix; the four commands are then on PATH
// and answer --version. The installed datapath then starts (its two native addons load from the
// package), tincanctl talks to it over loopback, and SIGHUP leaves it running. The systemd units
// are checked against the installed commands (systemd-analyze verify; systemd itself does not run them here).
// npm reads packages from its cache (~/.npm) where it can (--prefer-offline): with a warm cache the
// whole test took 26 s on the lab machine (npm ci 8 s, build 14 s, pack 1 s, install 1 s).
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const COMMANDS = ['tincan-datapath', 'tincan-groupvpn', 'tincan-socialvpn', 'tincanctl'];
const tmp = mkdtempSync(join(tmpdir(), 'tincan-install-'));
const repo = join(tmp, 'repo');
const prefix = join(tmp, 'prefix');
const npmFlags = ['--prefer-offline', '--no-audit', '--no-fund'];

afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

function sh(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): SpawnSyncReturns<string> {
  const t0 = Date.now();
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: 600_000, maxBuffer: 64 << 20 });
  console.log(`[install] ${cmd} ${args.join(' ')}: exit ${r.status} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((ok) => s.bind(0, '127.0.0.1', ok));
  const { port } = s.address();
  await new Promise<void>((ok) => s.close(ok));
  return port;
}

describe('install from the npm tarball', () => {
  it('clone, npm ci, build, npm pack, npm install -g --prefix: the four commands on PATH print the version', { timeout: 1_200_000 }, async () => {
    sh('git', ['clone', '--quiet', '--no-hardlinks', ROOT, repo], tmp);
    sh('npm', ['ci', ...npmFlags], repo);
    sh('npm', ['run', 'build'], repo);
    const pack = sh('npm', ['pack', '--json'], repo);
    const { filename } = (JSON.parse(pack.stdout) as { filename: string }[])[0]!;
    expect(filename).toBe(`tincan-${VERSION}.tgz`);
    const install = sh('npm', ['install', '-g', '--prefix', prefix, ...npmFlags, join(repo, filename)], tmp);
    // Nothing to approve: the package carries its addons built and runs no install script.
    expect(`${install.stdout}${install.stderr}`).not.toMatch(/install-scripts|allowScripts/);
    rmSync(repo, { recursive: true, force: true }); // the installed commands must not need the checkout

    const env = { ...process.env, PATH: `${join(prefix, 'bin')}:${process.env.PATH}` };
    for (const cmd of COMMANDS) {
      const which = sh('sh', ['-c', `command -v ${cmd}`], tmp, env);
      expect(which.stdout.trim()).toBe(join(prefix, 'bin', cmd));
      expect(sh(cmd, ['--version'], tmp, env).stdout.trim()).toBe(VERSION);
    }

    // The systemd units, for these commands: install.sh takes them from PATH and refuses a node
    // that the units' ProtectHome=yes would hide. Filled in as install.sh does, systemd-analyze
    // accepts them without a word.
    const units = join(tmp, 'units');
    const installSh = join(prefix, 'lib/node_modules/tincan/scripts/systemd/install.sh');
    const dry = sh('bash', [installSh, '--dry-run', '--unit-dir', units], tmp, env);
    expect(dry.stdout).toContain(`+ write ${units}/tincan-datapath@.service (node ${realpathSync(process.execPath)}, commands in ${join(prefix, 'bin')}`);
    const hiddenNode = mkdtempSync('/root/tincan-install-node-');
    try {
      copyFileSync('/bin/true', join(hiddenNode, 'node'));
      const r = spawnSync('bash', [installSh, '--dry-run', '--node', join(hiddenNode, 'node')], { cwd: tmp, env, encoding: 'utf8' });
      expect(r.status).toBe(1);
      expect(r.stderr).toContain(`install.sh: node is ${join(hiddenNode, 'node')}, which the units cannot see (ProtectHome=yes hides /root, /home and /run/user`);
    } finally {
      rmSync(hiddenNode, { recursive: true, force: true });
    }
    mkdirSync(units);
    for (const name of ['datapath', 'groupvpn', 'socialvpn']) {
      const text = readFileSync(join(prefix, `lib/node_modules/tincan/scripts/systemd/tincan-${name}@.service`), 'utf8')
        .replaceAll('@NODE@', realpathSync(process.execPath)).replaceAll('@BIN@', join(prefix, 'bin')).replaceAll('@PKG@', join(prefix, 'lib/node_modules/tincan'));
      expect(text).toContain(`${join(prefix, 'bin')}/tincan-${name} `);
      writeFileSync(join(units, `tincan-${name}@lab.service`), text);
    }
    const verify = spawnSync('systemd-analyze', ['verify', '--man=no', ...['datapath', 'groupvpn', 'socialvpn'].map((n) => `./tincan-${n}@lab.service`)], { cwd: units, encoding: 'utf8' });
    expect(verify.status).toBe(0);
    expect(verify.stderr).toBe('');

    // The installed datapath runs: its addons (TUN's, the watchdog's) load from the package.
    const state = join(tmp, 'state');
    const port = await freeUdpPort();
    const rpc = `127.0.0.1:${port}`;
    const dp = spawn('tincan-datapath', ['--rpc', rpc, '--state-dir', state, '--watchdog', '5', '--malloc-arenas', '2'], {
      env, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    dp.stdout.on('data', (d: Buffer) => (out += d.toString()));
    dp.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((ok) => dp.on('exit', (code) => ok(code)));
    try {
      const tokenFile = join(state, `rpc-${port}.token`);
      while (!existsSync(tokenFile) || !out.includes('"msg":"datapath ready')) {
        if (dp.exitCode !== null) throw new Error(`the installed datapath exited (${dp.exitCode}):\n${out}`);
        await new Promise((ok) => setTimeout(ok, 100));
      }
      expect(sh('tincanctl', ['--state-dir', state, '--rpc', rpc, 'echo', 'installed'], tmp, env).stdout.trim()).toBe('installed');
      dp.kill('SIGHUP');
      while (!out.includes('SIGHUP: the datapath has no config file to reload')) {
        if (dp.exitCode !== null) throw new Error(`SIGHUP ended the datapath (${dp.exitCode}):\n${out}`);
        await new Promise((ok) => setTimeout(ok, 100));
      }
      expect(sh('tincanctl', ['--state-dir', state, '--rpc', rpc, 'echo', 'still here'], tmp, env).stdout.trim()).toBe('still here');
      expect(out).not.toMatch(/cannot load the native addon/);
      dp.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      dp.kill('SIGKILL');
    }
  });
});
