// The liveness watchdog (`tincan-datapath --watchdog`) in the lab, on real datapaths whose main
// thread really hangs. No test hook in the product: gdb attaches to the process and makes its main
// thread call sleep(60). In gdb's default all-stop mode with scheduler-locking off, the other threads
// (libdatachannel's, and the watchdog's thread) run on while the main thread sits in that syscall,
// as they do in the libdatachannel deadlock this guards against (main thread blocked in pc.close()).
// Last, the whole recovery of a GroupVPN node: watchdog kill, a restart as systemd's
// Restart=on-failure does it, and the controller re-driving the new datapath.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GroupNode, type LabInfo } from './support/group-node.js';
import { eventuallyValue, inHost, labServers, connectNodes, linkUp, scriptedNode, useNodes, watchdogLines, type NsProcess, type TinCanNode } from './support/tincan-node.js';

const servers = labServers();

interface Hang {
  /** gdb's output once it has ended (when the hung process died, or the sleep returned). */
  ended: Promise<string>;
  stop(): void;
}

/** Makes the main thread of process `pid` block in sleep(60), through gdb. */
function hangMainThread(pid: number): Hang {
  const gdb = spawn('gdb', ['-p', String(pid), '-batch', '-ex', 'call (int)sleep(60)'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  gdb.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  gdb.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  const ended = new Promise<string>((r) => gdb.on('exit', () => r(out)));
  return {
    ended,
    stop: () => {
      if (gdb.exitCode === null && gdb.signalCode === null) gdb.kill('SIGKILL');
    },
  };
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_r, reject) => { t = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms); })])
    .finally(() => clearTimeout(t));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The lane processes a datapath forked (its direct children). */
function lanePids(n: TinCanNode): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(n.datapath.child.pid)], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

describe('tincan-datapath --watchdog in the lab', () => {
  const h1 = scriptedNode(servers, 'h1', '10.254.0.1', 1);
  const h2 = scriptedNode(servers, 'h2', '10.254.0.2', 2);
  const pub = scriptedNode(servers, 'pub', '10.254.0.6', 6);
  const all = [h1, h2, pub];
  const hangs: Hang[] = [];

  beforeAll(async () => {
    try {
      execFileSync('gdb', ['--version'], { stdio: 'ignore' });
    } catch {
      throw new Error('this test hangs a datapath with gdb: install it (scripts/install-deps does)');
    }
    await Promise.all([h1, h2].map((n) => n.start({ datapathArgs: ['--watchdog', '2'] })));
    await pub.start({ datapathArgs: ['--watchdog', '3', '--lanes', '2'] });
    await Promise.all(all.map((n) => n.configure(servers.xmpp)));
  });

  afterEach((ctx) => {
    for (const h of hangs.splice(0)) h.stop();
    if (ctx.task.result?.state === 'fail') for (const n of all) console.log(n.logs());
  });

  afterAll(async () => {
    for (const h of hangs.splice(0)) h.stop();
    await Promise.all(all.map((n) => n.stop()));
  });

  it('leaves live datapaths alone: linked and carrying pings for longer than the 2 s timeout', async () => {
    await connectNodes(h1, h2);
    const ping = await inHost('h1', ['ping', '-c', '25', '-i', '0.2', '-W', '2', '10.254.0.2']);
    expect(ping.stdout).toMatch(/25 received/);
    for (const n of [h1, h2]) {
      expect(n.datapath.running, `${n.spec.host}'s datapath`).toBe(true);
      expect(await n.call('echo', { data: 'alive' })).toEqual({ data: 'alive' });
      expect(watchdogLines(n.datapath)).toEqual([]);
      expect(n.datapath.log.some((l) => l.includes('watchdog armed') && l.includes('"timeoutS":2'))).toBe(true);
    }
  });

  it('SIGKILLs a datapath whose main thread hangs, with one fatal line on stderr', async () => {
    const pid = h2.datapath.child.pid!;
    const exited = h2.datapath.waitExit();
    const t0 = Date.now();
    const hang = hangMainThread(pid);
    hangs.push(hang);
    await within(exited, 20_000, 'the hung datapath to be killed');
    const ms = Date.now() - t0;
    console.log(`hung datapath (--watchdog 2) killed ${ms} ms after gdb was started`);
    expect(h2.datapath.child.signalCode).toBe('SIGKILL');
    expect(alive(pid)).toBe(false);
    // Its main thread never came back: gdb saw the process die inside the call.
    expect(await within(hang.ended, 10_000, 'gdb to end')).toMatch(/exited while in a function called from GDB|Killed/);
    const lines = watchdogLines(h2.datapath);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 60, pid, name: 'tincan-datapath', component: 'watchdog', timeoutS: 2 });
    expect(lines[0]!.stalledS as number).toBeGreaterThanOrEqual(2);
    expect(lines[0]!.msg).toMatch(/SIGKILL/);
    expect(ms).toBeLessThan(15_000);
    // The other end is untouched.
    expect(await h1.call('echo', { data: 'still here' })).toEqual({ data: 'still here' });
  });

  it('SIGKILLs a lane process whose main thread hangs, and the primary restarts it', async () => {
    const [lane] = await eventuallyValue(async () => {
      const pids = lanePids(pub);
      return pids.length === 1 && pids;
    }, 20_000, 'the lane process');
    const before = (await pub.state()).counters.lanes_restarts ?? 0;
    const hang = hangMainThread(lane!);
    hangs.push(hang);
    await eventuallyValue(async () => !alive(lane!), 20_000, 'the hung lane process to be killed');
    await within(hang.ended, 10_000, 'gdb to end');
    const lines = watchdogLines(pub.datapath);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 60, pid: lane, name: 'tincan-datapath', lane: '1', component: 'watchdog', timeoutS: 3 });
    // The primary saw a SIGKILL and restarts the lane.
    expect(pub.datapath.log.some((l) => l.includes('lane process exited') && l.includes('"signal":"SIGKILL"'))).toBe(true);
    await eventuallyValue(async () => ((await pub.state()).counters.lanes_restarts ?? 0) > before, 15_000, 'the lane restart');
    const [again] = await eventuallyValue(async () => {
      const pids = lanePids(pub);
      return pids.length === 1 && pids[0] !== lane && pids;
    }, 15_000, 'a new lane process');
    await eventuallyValue(async () => (await pub.state()).counters.lanes_ready === 1, 15_000, 'the new lane process ready');
    expect(alive(again!)).toBe(true);
    // The primary itself never stalled.
    expect(pub.datapath.running).toBe(true);
    expect(await pub.call('echo', { data: 'primary' })).toEqual({ data: 'primary' });
  });
});

describe('the scripted nodes\' harness (useNodes) starts a datapath its watchdog killed again before the next test', () => {
  const n = scriptedNode(servers, 'h3', '10.254.0.7', 7, ['--watchdog', '2']);
  useNodes([n], servers.xmpp);
  let firstPid = 0;

  it('a test whose datapath hangs and is killed by its watchdog', async () => {
    firstPid = n.datapath.child.pid!;
    const hang = hangMainThread(firstPid);
    try {
      await within(n.datapath.waitExit(), 20_000, 'the hung datapath to be killed');
    } finally {
      hang.stop();
    }
    expect(watchdogLines(n.datapath)).toHaveLength(1);
  });

  it('the next test finds a new datapath, configured as before and online', async () => {
    expect(n.watchdogRestarts).toBe(1);
    expect(n.datapath.child.pid).not.toBe(firstPid);
    const s = await n.call<{ node: { uid: string; ip4: string }; xmpp: { state: string } }>('get_state');
    expect(s.node).toMatchObject({ uid: n.uid, ip4: '10.254.0.7/16' });
    expect(s.xmpp.state).toBe('online');
  });
});

describe('a hung datapath under its controller: the watchdog kills it, its supervisor restarts it, the controller re-drives it', () => {
  const lab = JSON.parse(readFileSync(`${process.env.TINCAN_LAB_DIR ?? '/tmp/tincan-lab'}/lab.json`, 'utf8')) as LabInfo;
  const spec = { networkId: 'gv-watchdog', policy: 'proactive' as const, datapathArgs: ['--watchdog', '3'] };
  const a = new GroupNode({ ...spec, host: 'lan1', ip4: '10.254.9.1', account: 'node61' }, lab);
  const b = new GroupNode({ ...spec, host: 'lan2', ip4: '10.254.9.2', account: 'node62' }, lab);
  let hang: Hang | null = null;

  beforeAll(async () => {
    for (const n of [a, b]) n.start();
    await eventuallyValue(async () => (await a.upLinks()).has(b.uid) && (await b.upLinks()).has(a.uid), 60_000, 'the link a-b up');
  });

  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') for (const n of [a, b]) console.log(n.logs());
  });

  afterAll(async () => {
    hang?.stop();
    await Promise.all([a, b].map((n) => n.remove()));
  });

  it('the node is reachable again without anyone touching it', async () => {
    expect(await b.ping(a.spec.ip4)).toBe(true);
    const dead = a.datapath!;
    const t0 = Date.now();
    hang = hangMainThread(dead.child.pid!);
    await within(dead.waitExit(), 20_000, 'the hung datapath to be killed');
    expect(dead.child.signalCode).toBe('SIGKILL');
    expect(watchdogLines(dead)).toHaveLength(1);
    // systemd's part (Restart=on-failure, RestartSec=2), played by GroupNode's supervision.
    await eventuallyValue(async () => a.datapath !== dead, 10_000, 'the supervisor to restart the datapath');
    expect(a.watchdogRestarts).toBe(1);
    // The controller's part: it finds the new datapath (new token), re-drives it, the link is re-made.
    await eventuallyValue(async () => (await a.upLinks()).has(b.uid), 60_000, 'a relinked to b');
    await eventuallyValue(async () => (await a.ping(b.spec.ip4)) && (await b.ping(a.spec.ip4)), 30_000, 'a and b ping each other again');
    console.log(`hung GroupVPN node (--watchdog 3, restart after 2 s) reachable again ${Date.now() - t0} ms after gdb was started`);
    expect(a.controller!.running).toBe(true);
  });
});
