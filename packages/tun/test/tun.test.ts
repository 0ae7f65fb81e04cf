// @tincan/tun tests. They need root (CI runs as root) and create their own network namespace; every device
// lives inside it, and the namespace is deleted afterwards. The fixtures import the built wrapper
// (packages/tun/dist), so run `npx tsc -b` and build the addon first.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configureInterface, isValidInterfaceName, TunDevice, type TunOptions } from '../src/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const fixtures = join(here, 'fixtures');
const pkg = join(here, '..');
const ns = `tctun-${randomBytes(4).toString('hex')}`;
const children = new Set<ChildProcess>();

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: readonly string[], timeout = 15_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function mustRun(cmd: string, args: readonly string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** A fixture process inside the namespace, with its JSON stdout lines and its exit. */
interface Fixture {
  child: ChildProcess;
  next(): Promise<Record<string, unknown>>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr(): string;
}

function startFixture(script: string, args: readonly string[], env: Record<string, string> = {}): Fixture {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, join(fixtures, script), ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const lines: string[] = [];
  const waiters: ((line: string) => void)[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const w = waiters.shift();
    if (w) w(line);
    else lines.push(line);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  const next = (): Promise<Record<string, unknown>> => {
    const line = lines.shift();
    const got =
      line !== undefined
        ? Promise.resolve(line)
        : Promise.race([
            new Promise<string>((resolve) => waiters.push(resolve)),
            exited.then((e) => {
              throw new Error(`${script} exited (${String(e.code)}/${String(e.signal)}) before output: ${err}`);
            }),
          ]);
    return withTimeout(got, 10_000, `${script}: no output; stderr: ${err}`).then(
      (l) => JSON.parse(l) as Record<string, unknown>,
    );
  };
  return { child, next, exited, stderr: () => err };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** utime + stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15). */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  if (process.getuid?.() !== 0) {
    throw new Error('@tincan/tun tests need root (network namespaces and TUN devices); run them as root, as CI does');
  }
  for (const f of ['dist/index.js', 'build/Release/tincan_tun.node']) {
    if (!existsSync(join(pkg, f))) {
      throw new Error(`packages/tun/${f} is missing: run \`npm run build --workspace @tincan/tun && npx tsc -b\``);
    }
  }
  const ping = await run('sh', ['-c', 'command -v ping']);
  if (ping.code !== 0) throw new Error('ping not found: apt-get install iputils-ping');
  await mustRun('ip', ['netns', 'add', ns]);
});

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await run('ip', ['netns', 'del', ns]);
});

describe('option validation (no device needed)', () => {
  const bad: [string, TunOptions][] = [
    ['batch 0', { batch: 0 }],
    ['batch 2000', { batch: 2000 }],
    ['batch 1.5', { batch: 1.5 }],
    ['negative headroom', { headroom: -1 }],
    ['tiny slotSize', { slotSize: 100 }],
    ['name too long', { name: 'a-very-long-ifname' }],
    ['name with slash', { name: 'tun/0' }],
    ['empty name', { name: '' }],
    ['multiQueue not boolean', { multiQueue: 'yes' as unknown as boolean }],
    ['offload not boolean', { offload: 1 as unknown as boolean }],
    ['offload without room for the vnet header', { offload: true, headroom: 9 }],
  ];
  it.each(bad)('rejects %s', (_, opts) => {
    expect(() => TunDevice.open(opts)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
  });

  it('checks interface names and CIDRs before running ip', async () => {
    expect(isValidInterfaceName('tun0')).toBe(true);
    expect(isValidInterfaceName('x'.repeat(15))).toBe(true);
    expect(isValidInterfaceName('x'.repeat(16))).toBe(false);
    await expect(configureInterface('tun0', { addresses: ['10.0.0.1'] })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
    });
    await expect(configureInterface('tun0', { addresses: ['10.0.0.1/33'] })).rejects.toThrow(/CIDR/);
    await expect(configureInterface('tun0', { routes: ['fd00::/129'] })).rejects.toThrow(/CIDR/);
    await expect(configureInterface('tun0', { mtu: 10 })).rejects.toThrow(/MTU/);
    await expect(configureInterface('tun0', { txQueueLen: 0 })).rejects.toThrow(/txQueueLen/);
    await expect(configureInterface('tun0', { gsoMaxSize: 100_000 })).rejects.toThrow(/gsoMaxSize/);
  });
});

describe('TUN device in a network namespace', () => {
  it('reflects IPv4 and IPv6 pings, idles without busy polling, and lets the process exit after close()', async () => {
    const f = startFixture('reflector.mjs', ['tct0', '10.77.0.1/24', 'fd77::1/64']);
    const ready = await f.next();
    expect(ready).toMatchObject({ ready: true, name: 'tct0', headroom: 40 });
    const pid = ready.pid as number;

    // Idle: the reflector waits in epoll; ~2 s must cost well under 2% of a core.
    const t0 = cpuTicks(pid);
    const start = process.hrtime.bigint();
    await sleep(2000);
    const ticks = cpuTicks(pid) - t0;
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const cpuPercent = (ticks / 100 / seconds) * 100; // CLK_TCK is 100 on Linux
    expect(cpuPercent, `idle reflector used ${cpuPercent.toFixed(2)}% CPU`).toBeLessThan(2);

    // Addresses inside the vNIC's subnet (not its own address, which the kernel answers itself).
    const v4 = await run('ip', ['netns', 'exec', ns, 'ping', '-c', '3', '-i', '0.2', '-W', '2', '10.77.0.2']);
    expect(v4.code, v4.stdout + v4.stderr).toBe(0);
    expect(v4.stdout).toMatch(/3 packets transmitted, 3 received/);
    const v6 = await run('ip', ['netns', 'exec', ns, 'ping', '-6', '-c', '3', '-i', '0.2', '-W', '2', 'fd77::2']);
    expect(v6.code, v6.stdout + v6.stderr).toBe(0);
    expect(v6.stdout).toMatch(/3 packets transmitted, 3 received/);

    f.child.kill('SIGUSR2'); // the fixture calls close() and must then exit by itself
    expect(await f.next()).toMatchObject({ closed: true, replies: 6, asyncContext: true, microtasks: true });
    const exit = await withTimeout(f.exited, 3000, `reflector did not exit after close(); stderr: ${f.stderr()}`);
    expect(exit).toEqual({ code: 0, signal: null });
    // A non-persistent TUN device disappears with its last fd.
    const link = await run('ip', ['netns', 'exec', ns, 'ip', 'link', 'show', 'tct0']);
    expect(link.code).not.toBe(0);
  });

  it('offload (IFF_VNET_HDR): headers before each packet, writeVnet and the native zero header both deliver', async () => {
    const f = startFixture('reflector.mjs', ['tct3', '10.76.0.1/24', 'fd76::1/64'], { OFFLOAD: '1' });
    expect(await f.next()).toMatchObject({ ready: true, name: 'tct3', headroom: 40 });
    const offloads = await run('ip', ['netns', 'exec', ns, 'ethtool', '-k', 'tct3']);
    if (offloads.code === 0) expect(offloads.stdout).toMatch(/tcp-segmentation-offload: on/);
    const v4 = await run('ip', ['netns', 'exec', ns, 'ping', '-c', '3', '-i', '0.2', '-W', '2', '10.76.0.2']);
    const v6 = await run('ip', ['netns', 'exec', ns, 'ping', '-6', '-c', '3', '-i', '0.2', '-W', '2', 'fd76::2']);
    f.child.kill('SIGUSR2');
    const closed = await f.next();
    expect(v4.stdout, v4.stdout + v4.stderr).toMatch(/3 packets transmitted, 3 received/);
    expect(v6.stdout, v6.stdout + v6.stderr).toMatch(/3 packets transmitted, 3 received/);
    // The first IPv4 request's reply is written twice: once with a bad header (refused), once right.
    expect(closed).toMatchObject({ closed: true, replies: 6, headersPlain: true, badHeaderDropped: true });
    expect(await withTimeout(f.exited, 3000, `reflector did not exit; stderr: ${f.stderr()}`)).toEqual({ code: 0, signal: null });
  });

  it('survives close() from inside the packets callback', async () => {
    const f = startFixture('reflector.mjs', ['tct1', '10.78.0.1/24', 'fd78::1/64'], { CLOSE_IN_CALLBACK: '1' });
    expect(await f.next()).toMatchObject({ ready: true, name: 'tct1' });
    const v4 = await run('ip', ['netns', 'exec', ns, 'ping', '-c', '1', '-W', '2', '10.78.0.2']);
    expect(v4.code, v4.stdout + v4.stderr).toBe(0);
    expect(await f.next()).toMatchObject({ closed: true, inCallback: true, replies: 1 });
    const exit = await withTimeout(f.exited, 3000, `reflector did not exit; stderr: ${f.stderr()}`);
    expect(exit).toEqual({ code: 0, signal: null });
  });

  it('turns an exception in the packets callback into an uncaughtException', async () => {
    const f = startFixture('reflector.mjs', ['tct2', '10.79.0.1/24', 'fd79::1/64'], { THROW_IN_CALLBACK: '1' });
    expect(await f.next()).toMatchObject({ ready: true, name: 'tct2' });
    await run('ip', ['netns', 'exec', ns, 'ping', '-c', '1', '-W', '1', '10.79.0.2']); // no reply expected
    expect(await f.next()).toEqual({ closed: true, uncaught: 'thrown in onPackets' });
    const exit = await withTimeout(f.exited, 3000, `reflector did not exit; stderr: ${f.stderr()}`);
    expect(exit).toEqual({ code: 0, signal: null });
  });

  it('reports busy names, write drops, ip failures, deleted and closed devices with clear codes', async () => {
    const f = startFixture('errors.mjs', []);
    const r = (await f.next()) as Record<string, { ok?: unknown; code?: string; message?: string; syscall?: string }>;
    // A hang detector, not a speed check: the fixture runs a dozen `ip` commands, slow on a loaded machine.
    const exit = await withTimeout(f.exited, 15_000, `errors.mjs did not exit (paused device kept it alive?)`);
    expect(exit.code, f.stderr()).toBe(0);
    expect(r.pausedLeftOpen).toEqual({ ok: 'tcpause0' });
    for (const key of ['singleQueueTwice', 'multiQueueOnSingle', 'nonTunDevice', 'loopback', 'singleOnMultiQueue']) {
      expect(r[key], key).toMatchObject({ code: 'EBUSY', syscall: 'ioctl(TUNSETIFF)' });
      expect(r[key]?.message).toMatch(/is in use/);
    }
    expect(r.multiQueueTwice).toEqual({ ok: 'tcmq0' });
    expect(r.kernelName?.ok).toMatch(/^tun\d+$/);
    expect(r.duplicateAddress).toMatchObject({ code: 'ERR_TUN_IP_COMMAND' });
    // ip's wording depends on the iproute2 version
    expect(r.duplicateAddress?.message).toMatch(
      /ip addr add 10\.9\.0\.1\/24 dev tcerr0` failed \(exit 2\): .*(File exists|already assigned)/,
    );
    expect(r.writeWhileDown).toEqual({ ok: false }); // EIO from the kernel: dropped, not thrown
    expect(r.writeBatchWhileDown).toEqual({ ok: 0 });
    expect(r.writeOutOfRange).toMatchObject({ code: 'ERANGE' });
    // via onError; which syscall sees it first is a race in the kernel's unregistering (see on_readable)
    const deleted = r.deletedWhileReading?.ok as { code?: string; syscall?: string; message?: string } | undefined;
    expect(deleted).toMatchObject({ code: 'EBADFD', message: expect.stringMatching(/TUN device was deleted/) });
    expect(deleted?.syscall).toMatch(/^(read|poll)$/);
    expect(r.writeAfterClose).toMatchObject({ code: 'EBADF' });
    expect(r.resumeAfterClose).toMatchObject({ code: 'EBADF' });
  });

  it('says EPERM "needs root or CAP_NET_ADMIN" without CAP_NET_ADMIN', async () => {
    const r = await run('ip', [
      'netns', 'exec', ns, 'setpriv', '--bounding-set=-net_admin', '--inh-caps=-net_admin',
      process.execPath, join(fixtures, 'errors.mjs'), 'open',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const { open } = JSON.parse(r.stdout) as { open: { code: string; message: string } };
    expect(open.code).toBe('EPERM');
    expect(open.message).toMatch(/needs root or CAP_NET_ADMIN/);
  });

  it('says ENOENT when /dev/net/tun is missing', async () => {
    // A private mount namespace with an empty /dev/net; nothing outside it changes.
    const script = `mount -t tmpfs none /dev/net && exec "$0" "$1" open`;
    const r = await run('ip', [
      'netns', 'exec', ns, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', script,
      process.execPath, join(fixtures, 'errors.mjs'),
    ]);
    expect(r.code, r.stderr).toBe(0);
    const { open } = JSON.parse(r.stdout) as { open: { code: string; message: string } };
    expect(open.code).toBe('ENOENT');
    expect(open.message).toMatch(/\/dev\/net\/tun does not exist/);
  });
});
