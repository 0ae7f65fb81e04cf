// The local control plane in the lab: a real tincan-datapath and its scripted controller
// (test/fixtures/rpc-driver.mjs, a DatapathClient) against another local user squatting their ports,
// and a datapath with many real links read whole through paged get_state.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import { CTL_BIN, NsProcess, inHost, labServers, scriptedNode, useNodes, type TinCanNode } from './support/tincan-node.js';

const servers = labServers();

/**
 * Another local user (nobody) that binds 127.0.0.1:PORT, prints every datagram it receives (hex),
 * answers a hello with a made-up proof, and first tries to copy every file of the state directory.
 */
const SQUATTER = `
const [port, stateDir, target] = process.argv.slice(1);
const fs = require('node:fs');
const crypto = require('node:crypto');
let copied = [];
try { for (const f of fs.readdirSync(stateDir)) { try { copied.push({ f, text: fs.readFileSync(stateDir + '/' + f, 'utf8') }); } catch {} } } catch {}
console.log(JSON.stringify({ copied }));
const s = require('node:dgram').createSocket('udp4');
s.on('message', (m, r) => {
  console.log(JSON.stringify({ got: m.toString('hex') }));
  if (m[0] === 3 && m[1] === 4) {
    try {
      const j = JSON.parse(m.subarray(2).toString());
      if (j.m === 'hello') s.send(Buffer.concat([Buffer.from([3, 4]), Buffer.from(JSON.stringify({ tid: j.tid, ok: true, result: { session: 7, nonce: crypto.randomBytes(32).toString('hex'), proof: crypto.randomBytes(32).toString('hex') } }))]), r.port, r.address);
    } catch {}
  }
});
s.bind(Number(port), '127.0.0.1', () => {
  console.log(JSON.stringify({ bound: Number(port) }));
  // As the former controller: forged packets to the datapath (old protocol, unsealed, random seal).
  if (target) for (const d of [
    Buffer.concat([Buffer.from([2, 2]), crypto.randomBytes(80)]),
    Buffer.concat([Buffer.from([3, 2]), crypto.randomBytes(80)]),
    Buffer.concat([Buffer.from([3, 2]), crypto.randomBytes(120)]),
  ]) s.send(d, Number(target), '127.0.0.1');
});
`;

class Squatter {
  readonly lines: Record<string, unknown>[] = [];
  readonly proc: NsProcess;
  constructor(node: TinCanNode, port: number, target = '') {
    const stateDir = node.stateDir;
    this.proc = new NsProcess(node.ns, `${node.spec.host}/squatter`, 'runuser', ['-u', 'nobody', '--', process.execPath, '-e', SQUATTER, String(port), stateDir, target]);
    createInterface({ input: this.proc.child.stdout! }).on('line', (l) => {
      try {
        this.lines.push(JSON.parse(l) as Record<string, unknown>);
      } catch { /* not ours */ }
    });
  }
  async bound(): Promise<void> {
    for (let i = 0; i < 200 && !this.lines.some((l) => l.bound); i++) await new Promise((r) => setTimeout(r, 25));
    if (!this.lines.some((l) => l.bound)) throw new Error(`the squatter did not bind: ${this.proc.log.join('\n')}`);
  }
  /** Everything it received and copied, as text. */
  get seen(): string {
    return this.lines.map((l) => (typeof l.got === 'string' ? Buffer.from(l.got, 'hex').toString('latin1') : JSON.stringify(l))).join('\n');
  }
}

describe('the RPC against other local users', () => {
  const h1 = scriptedNode(servers, 'h1', '10.254.0.1', 1);
  useNodes([h1], servers.xmpp);

  it('after its controller exits, the datapath forgets it: nothing sent from its former port is injected', async () => {
    const ready = h1.driver.log.map((l) => { try { return JSON.parse(l) as { ready?: boolean; port?: number }; } catch { return {}; } }).find((o) => o.ready);
    const port = ready!.port!;
    const ctl = async () => JSON.parse((await inHost('h1', [process.execPath, CTL_BIN, '--state-dir', h1.stateDir, 'status', '--json'])).stdout) as { node: { controller: string | null }; counters: Record<string, number> };
    expect((await ctl()).node.controller).toBe(`127.0.0.1:${port}`);
    h1.driver.child.stdin?.end();
    await h1.driver.stop();
    const before = (await ctl()).counters;
    const squatter = new Squatter(h1, port, '5801');
    try {
      await squatter.bound();
      for (let i = 0; i < 200 && !h1.datapath.log.some((l) => l.includes('the controller is gone')); i++) await new Promise((r) => setTimeout(r, 50));
      expect(h1.datapath.log.some((l) => l.includes('the controller is gone'))).toBe(true);
      const after = await ctl();
      expect(after.node.controller).toBeNull();
      expect(after.counters.injectedFromController).toBe(before.injectedFromController);
      expect(after.counters.injectedDropped! - before.injectedDropped!).toBeGreaterThanOrEqual(2);
      // Whatever reached the squatter after that: no event or packet (sealed types 1 and 2 in version 3).
      expect(squatter.lines.filter((l) => typeof l.got === 'string' && /^030[12]/.test(l.got as string))).toEqual([]);
    } finally {
      await squatter.proc.stop();
      await h1.startDriver();
    }
  });

  it('with the datapath stopped, another user on 127.0.0.1:5801 gets no password, TURN credential or token; the restarted datapath is driven again', async () => {
    const token = readFileSync(join(h1.stateDir, 'rpc-5801.token'), 'utf8').trim();
    const secrets = { password: `pw-${randomBytes(6).toString('hex')}`, turn: `turn-${randomBytes(6).toString('hex')}` };
    await h1.datapath.stop('SIGKILL'); // a crash: its token file stays behind
    expect(readdirSync(h1.stateDir)).toContain('rpc-5801.token');
    const squatter = new Squatter(h1, 5801);
    try {
      await squatter.bound();
      // The state directory (0700) is closed to it.
      expect(squatter.lines[0]).toEqual({ copied: [] });
      // The controller, attached in its eyes, sends secrets in its (encrypted) session...
      const calls = [
        h1.call('register_svc', { xmpp: { host: 'xmpp.lab', jid: 'h1@xmpp.lab', password: secrets.password } }, 3000),
        h1.call('create_link', { uid: 'ab'.repeat(20), turn: [{ address: 'turn.lab:3478', username: 'u', password: secrets.turn }] }, 3000),
      ];
      await Promise.allSettled(calls);
      // ...and a new client (tincanctl) re-reads the stale token and handshakes: the squatter cannot prove itself.
      const ctl = await inHost('h1', [process.execPath, CTL_BIN, '--state-dir', h1.stateDir, 'status']).then(() => null, (e: { stderr?: string }) => e.stderr ?? '');
      expect(ctl).toMatch(/could not prove it knows the RPC token/);
      expect(squatter.lines.filter((l) => l.got).length).toBeGreaterThanOrEqual(3);
      for (const s of [secrets.password, secrets.turn, token, 'password', 'register_svc']) expect(squatter.seen).not.toContain(s);
    } finally {
      await squatter.proc.stop();
    }
    // The datapath restarted (as systemd would) and its controller attached again.
    h1.driver.child.stdin?.end();
    await h1.driver.stop();
    await h1.start();
    await h1.configure(servers.xmpp);
    expect((await h1.state()).node.controller).not.toBeNull();
  });

  it('a datapath with many real links is read whole, in pages, by its controller and by tincanctl status --json', async () => {
    const count = Number(process.env.TINCAN_RPC_LINKS ?? 120);
    const uids = Array.from({ length: count }, () => randomBytes(20).toString('hex'));
    for (const uid of uids) await h1.call('create_link', { uid, trickle: true });
    try {
      const s = await h1.state() as unknown as { links: { uid: string }[]; more?: unknown };
      expect(s.more).toBeUndefined();
      expect(new Set(s.links.map((l) => l.uid))).toEqual(new Set(uids));
      const json = JSON.parse((await inHost('h1', [process.execPath, CTL_BIN, '--state-dir', h1.stateDir, 'status', '--json'], 60_000)).stdout) as { links: { uid: string }[] };
      expect(json.links.map((l) => l.uid).sort()).toEqual([...uids].sort());
      console.log(`get_state of ${count} real links: ${Buffer.byteLength(JSON.stringify(json))} bytes of JSON, read in pages`);
    } finally {
      for (const uid of uids) await h1.call('trim_link', { uid }).catch(() => undefined);
    }
  });
});
