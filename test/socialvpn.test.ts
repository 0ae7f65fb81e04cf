// SocialVPN end to end, in the lab: alice (cone NAT), bob (other cone NAT), carol (symmetric NAT);
// rosters alice<->bob and alice<->carol, none between bob and carol. Each user has her own subnet.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DATAPATH_NODE_FLAGS } from '@tincan/datapath/node-flags';
import { eventually, type LabInfo } from './support/group-node.js';
import { CTL_BIN, DATAPATH_BIN, NsProcess } from './support/tincan-node.js';
import { ns } from './harness/namespace.js';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '..');
const SOCIALVPN_BIN = join(ROOT, 'packages/socialvpn/dist/bin/tincan-socialvpn.js');
const lab = JSON.parse(readFileSync(`${process.env.TINCAN_LAB_DIR ?? '/tmp/tincan-lab'}/lab.json`, 'utf8')) as LabInfo;

interface Mapping { uid: string; jid: string; ip4: string; link: string }

class SocialNode {
  datapath: NsProcess | null = null;
  controller: NsProcess | null = null;
  private madeDir: string | null = null;

  constructor(readonly user: string, readonly host: string, readonly subnet: string, readonly own: string) {}

  /**
   * The node's temp dir with its config file, made on first use: a node declared in a suite that a
   * test filter skips leaves nothing in /tmp.
   */
  get dir(): string {
    if (this.madeDir) return this.madeDir;
    const dir = mkdtempSync(join(tmpdir(), 'tincan-social-'));
    writeFileSync(join(dir, 'socialvpn.json'), JSON.stringify({
      xmpp: { host: lab.xmpp.host, port: lab.xmpp.port, jid: `${this.user}@vpn.test`, password: `pw-${this.user}`, ca_file: lab.xmpp.ca_file, mechanism: 'PLAIN' },
      subnet: this.subnet, vnic: { name: 'tincan0', mtu: 1280 },
      stun: [lab.stun], turn: [{ address: lab.turn.address, username: lab.turn.username, password: lab.turn.password }],
      datapath: '127.0.0.1:5801', state_dir: join(dir, 'state'),
    }));
    this.madeDir = dir;
    return dir;
  }

  get stateDir(): string {
    return join(this.dir, 'state');
  }

  get config(): string {
    return join(this.dir, 'socialvpn.json');
  }

  removeDir(): void {
    if (this.madeDir) rmSync(this.madeDir, { recursive: true, force: true });
  }

  private spawn(name: string, args: string[]): NsProcess {
    const p = new NsProcess(ns(this.host), `${this.user}/${name}`, process.execPath, args);
    p.child.stdout!.on('data', (d: Buffer) => { for (const l of d.toString().split('\n')) if (l) p.keep(l); });
    return p;
  }

  startDatapath(): void { this.datapath = this.spawn('datapath', [...DATAPATH_NODE_FLAGS, DATAPATH_BIN, '--state-dir', this.stateDir, '--log-level', 'debug']); }
  startController(): void { this.controller = this.spawn('socialvpn', [SOCIALVPN_BIN, '--config', this.config, '--log-level', 'debug']); }

  mappings(): Mapping[] {
    try {
      return (JSON.parse(readFileSync(join(this.stateDir, 'socialvpn-status.json'), 'utf8')) as { mappings: Mapping[] }).mappings;
    } catch {
      return [];
    }
  }

  mappingOf(user: string): Mapping | undefined {
    return this.mappings().find((m) => m.jid === `${user}@vpn.test`);
  }

  async exec(cmd: string[], timeoutMs = 20_000): Promise<{ ok: boolean; out: string }> {
    try {
      const r = await run('ip', ['netns', 'exec', ns(this.host), ...cmd], { timeout: timeoutMs });
      return { ok: true, out: r.stdout };
    } catch (err) {
      return { ok: false, out: String((err as { stdout?: string }).stdout ?? err) };
    }
  }

  async ping(address: string): Promise<boolean> {
    return (await this.exec(['ping', '-c', '3', '-i', '0.2', '-W', '2', address])).ok;
  }

  /** The datapath's get_state (tincanctl status --json). */
  async datapathState(): Promise<{ node: { offload: boolean }; links: { uid: string; state: string }[]; counters: Record<string, number> }> {
    const r = await this.exec([process.execPath, CTL_BIN, '--state-dir', this.stateDir, 'status', '--json']);
    expect(r.ok, r.out).toBe(true);
    return JSON.parse(r.out) as { node: { offload: boolean }; links: { uid: string; state: string }[]; counters: Record<string, number> };
  }

  async stop(): Promise<void> { await Promise.all([this.controller?.stop(), this.datapath?.stop()]); }
  logs(): string {
    return [`----- ${this.user} datapath`, ...(this.datapath?.log ?? []).slice(-120), `----- ${this.user} socialvpn`, ...(this.controller?.log ?? []).slice(-120)].join('\n');
  }
}

const HTTP_SERVER = `require('http').createServer((q, s) => s.end('hello from ' + process.argv[1] + ' to ' + q.socket.remoteAddress)).listen(8080, '0.0.0.0', () => console.log('listening'))`;

/** 8 MiB that both ends can make: the SHA-256 digests of '0', '1', … concatenated. */
const BULK_BODY = `const c = require('crypto'); const b = Buffer.alloc(8 << 20); for (let i = 0; i < b.length / 32; i++) c.createHash('sha256').update(String(i)).digest().copy(b, i * 32);`;
const BULK_SERVER = `${BULK_BODY} require('http').createServer((q, s) => s.end(b)).listen(8081, '0.0.0.0', () => console.log('listening'))`;

function bulkSha256(): string {
  const b = Buffer.alloc(8 << 20);
  for (let i = 0; i < b.length / 32; i++) createHash('sha256').update(String(i)).digest().copy(b, i * 32);
  return createHash('sha256').update(b).digest('hex');
}

function roster(action: 'remove' | 'befriend', a: string, b: string) {
  return run('ip', ['netns', 'exec', ns('pub'), process.execPath, join(ROOT, 'test/fixtures/xmpp-roster.mjs'),
    lab.xmpp.host, String(lab.xmpp.port), lab.xmpp.ca_file, action, a, b], { timeout: 30_000 })
    .then((r) => ({ ok: true, out: r.stdout }), (err: { stdout?: string; stderr?: string }) => ({ ok: false, out: `${err.stdout ?? ''}${err.stderr ?? ''}` }));
}

describe('SocialVPN: friends in per-user subnets with IPv4 translation', () => {
  const alice = new SocialNode('alice', 'h1', '172.31.0.0/16', '172.31.0.1');
  const bob = new SocialNode('bob', 'h2', '10.77.0.0/16', '10.77.0.1');
  const carol = new SocialNode('carol', 'h3', '10.88.0.0/16', '10.88.0.1');
  const all = [alice, bob, carol];
  const servers: NsProcess[] = [];

  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') for (const n of all) console.log(n.logs());
  });

  beforeAll(async () => {
    for (const n of all) { n.startDatapath(); n.startController(); }
    await eventually(async () => alice.mappingOf('bob') !== undefined && alice.mappingOf('carol') !== undefined &&
      bob.mappingOf('alice') !== undefined && carol.mappingOf('alice') !== undefined, 60_000, 'friends mapped');
  });

  afterAll(async () => {
    for (const s of servers) await s.stop();
    await Promise.all(all.map((n) => n.stop()));
    for (const n of all) n.removeDir();
  });

  it('alice reaches bob and carol at addresses in her subnet; bob reaches alice in his', async () => {
    const bobAtAlice = alice.mappingOf('bob')!.ip4;
    const carolAtAlice = alice.mappingOf('carol')!.ip4;
    const aliceAtBob = bob.mappingOf('alice')!.ip4;
    expect(bobAtAlice.startsWith('172.31.')).toBe(true);
    expect(aliceAtBob.startsWith('10.77.')).toBe(true);
    expect(await alice.ping(bobAtAlice)).toBe(true);
    expect(await alice.ping(carolAtAlice)).toBe(true);
    expect(await bob.ping(aliceAtBob)).toBe(true);
  });

  it('a TCP service (HTTP) works both ways through the translation, and sees the caller in its own subnet', async () => {
    for (const n of [alice, bob]) {
      const s = new NsProcess(ns(n.host), `${n.user}/http`, process.execPath, ['-e', HTTP_SERVER, n.user]);
      servers.push(s);
    }
    await new Promise((r) => setTimeout(r, 800));
    const get = (n: SocialNode, address: string) =>
      n.exec([process.execPath, '-e', `require('http').get('http://${address}:8080/', r => { let b=''; r.on('data', d => b += d); r.on('end', () => console.log(b)); }).on('error', e => { console.error(e.message); process.exit(1); })`]);
    const fromAlice = await get(alice, alice.mappingOf('bob')!.ip4);
    expect(fromAlice.ok).toBe(true);
    expect(fromAlice.out).toContain(`hello from bob to ${bob.mappingOf('alice')!.ip4}`);
    const fromBob = await get(bob, bob.mappingOf('alice')!.ip4);
    expect(fromBob.ok).toBe(true);
    expect(fromBob.out).toContain(`hello from alice to ${alice.mappingOf('bob')!.ip4}`);
  });

  it('a bulk TCP transfer through the translation arrives intact: super-packets from the peer are segmented before translation', async () => {
    const s = new NsProcess(ns(bob.host), 'bob/bulk', process.execPath, ['-e', BULK_SERVER]);
    servers.push(s);
    await new Promise((r) => setTimeout(r, 1500));
    const fetched = await alice.exec([process.execPath, '-e',
      `const h = require('crypto').createHash('sha256'); let n = 0; require('http').get('http://${alice.mappingOf('bob')!.ip4}:8081/', r => { r.on('data', d => { h.update(d); n += d.length; }); r.on('end', () => console.log(n, h.digest('hex'))); }).on('error', e => { console.error(e.message); process.exit(1); })`], 60_000);
    expect(fetched.ok, fetched.out).toBe(true);
    expect(fetched.out.trim()).toBe(`${8 << 20} ${bulkSha256()}`);
    const [a, b] = [await alice.datapathState(), await bob.datapathState()];
    expect(a.node.offload && b.node.offload).toBe(true);
    expect(b.counters.offloadSuperPacketsOut).toBeGreaterThan(10); // bob's kernel handed over super-packets, sent whole
    expect(a.counters.offloadSegmentedIn).toBeGreaterThan(10); // alice cut them before translating
    expect(a.counters.framesMalformed).toBe(0);
  });

  it('bob cannot reach carol by any address', async () => {
    expect(bob.mappingOf('carol')).toBeUndefined();
    expect(carol.mappingOf('bob')).toBeUndefined();
    const carolAtAlice = alice.mappingOf('carol')!.ip4; // meaningless in bob's subnet, but try it
    expect(await bob.ping(carolAtAlice)).toBe(false);
    expect(await bob.ping(carol.own)).toBe(false);
    expect(await bob.ping('10.77.0.3')).toBe(false);
  });

  it('restarting alice\'s controller and datapath keeps every mapping', async () => {
    const before = alice.mappings().map((m) => [m.jid, m.ip4, m.uid]).sort();
    await alice.stop();
    alice.startDatapath();
    alice.startController();
    await eventually(async () => (await alice.ping(alice.mappingOf('bob')!.ip4)), 60_000, 'alice back on the VPN');
    expect(alice.mappings().map((m) => [m.jid, m.ip4, m.uid]).sort()).toEqual(before);
  });

  it('removing bob from alice\'s roster tears their link down within seconds', async () => {
    const bobAtAlice = alice.mappingOf('bob')!.ip4;
    expect(await alice.ping(bobAtAlice)).toBe(true);
    const removed = await roster('remove', 'alice', 'bob');
    expect(removed.ok, removed.out).toBe(true);
    const t0 = Date.now();
    await eventually(async () => alice.mappingOf('bob') === undefined, 10_000, 'bob unmapped at alice');
    console.log(`bob's link at alice gone ${Date.now() - t0} ms after the roster change`);
    expect(await alice.ping(bobAtAlice)).toBe(false);
  });

  it('making bob a friend again brings him back (and leaves the lab rosters as they were)', async () => {
    const added = await roster('befriend', 'alice', 'bob');
    expect(added.ok, added.out).toBe(true);
    await eventually(async () => alice.mappingOf('bob') !== undefined, 30_000, 'bob mapped at alice again');
    await eventually(async () => alice.ping(alice.mappingOf('bob')!.ip4), 30_000, 'alice reaches bob again');
  });

  it('carol removed from alice\'s roster while alice\'s controller is down loses her address and link within seconds of its restart', async () => {
    await eventually(async () => alice.ping(alice.mappingOf('carol')!.ip4), 30_000, 'alice reaches carol');
    const carolUid = alice.mappingOf('carol')!.uid;
    await alice.controller!.stop();
    const pushes = (await alice.datapathState()).counters.xmpp_roster_pushes ?? 0;
    const removed = await roster('remove', 'alice', 'carol');
    expect(removed.ok, removed.out).toBe(true);
    // The push reached alice's datapath (its XMPP session stays logged in), and no controller heard it.
    await eventually(async () => ((await alice.datapathState()).counters.xmpp_roster_pushes ?? 0) > pushes, 15_000, 'the roster push at alice\'s datapath');
    alice.startController();
    const t0 = Date.now();
    await eventually(async () => alice.mappingOf('carol') === undefined && alice.mappings().length > 0, 15_000, 'carol unmapped at alice after the restart');
    console.log(`carol unmapped ${Date.now() - t0} ms after alice's controller started`);
    await eventually(async () => !(await alice.datapathState()).links.some((l) => l.uid === carolUid), 15_000, 'no link to carol at alice');
    // Put the lab rosters back as they were.
    const added = await roster('befriend', 'alice', 'carol');
    expect(added.ok, added.out).toBe(true);
    await eventually(async () => alice.mappingOf('carol') !== undefined, 30_000, 'carol mapped at alice again');
  });
});
