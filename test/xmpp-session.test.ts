// XmppSession end to end, in the lab: real prosody (vpn.test, TLS with the lab's CA), sessions
// running in lab host namespaces behind NATs (packages/datapath/test/fixtures/xmpp-peer.mjs over the
// built datapath), a third raw client sending garbage. Needs `npx tsc -b` first.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PRESENCE_NS, SIGNAL_NS } from '@tincan/protocol';

const ROOT = resolve(import.meta.dirname, '..');
const FIXTURE = join(ROOT, 'packages/datapath/test/fixtures/xmpp-peer.mjs');
// The fixture imports the built datapath; XMPP_SESSION_DIST points it (and this check) elsewhere.
const DIST = join(process.env.XMPP_SESSION_DIST ?? join(ROOT, 'packages/datapath/dist'), 'xmpp-session.js');
const LAB_DIR = process.env.TINCAN_LAB_DIR ?? '/tmp/tincan-lab';

interface LabJson {
  hosts: Record<string, { namespace: string }>;
  xmpp: { host: string; port: number; domain: string; ca_file: string };
}
const lab = (): LabJson => JSON.parse(readFileSync(join(LAB_DIR, 'lab.json'), 'utf8')) as LabJson;

type Line = Record<string, unknown> & { ev: string };

/** One fixture process in a lab host's namespace, with its JSON-line output kept. */
class Peer {
  readonly lines: Line[] = [];
  readonly stderr: string[] = [];
  private readonly child: ChildProcess;
  private readonly exited: Promise<void>;
  private nextId = 1;

  constructor(
    readonly name: string,
    host: string,
    config: Record<string, unknown>,
  ) {
    this.child = spawn('ip', ['netns', 'exec', lab().hosts[host]!.namespace, process.execPath, FIXTURE, JSON.stringify(config)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, LOG_LEVEL: 'debug' },
    });
    createInterface({ input: this.child.stdout! }).on('line', (l) => {
      try {
        this.lines.push(JSON.parse(l) as Line);
      } catch {
        this.stderr.push(`[stdout] ${l}`);
      }
    });
    createInterface({ input: this.child.stderr! }).on('line', (l) => {
      this.stderr.push(l);
      if (this.stderr.length > 3000) this.stderr.splice(0, 1000);
    });
    this.exited = new Promise((r) => this.child.on('exit', () => r()));
  }

  async waitFor(pred: (l: Line) => boolean, what: string, timeoutMs = 20_000): Promise<Line> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find(pred);
      if (hit) return hit;
      if (this.child.exitCode !== null) throw new Error(`${this.name} exited while waiting for ${what}`);
      if (Date.now() > end) throw new Error(`${this.name}: timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  async cmd(cmd: string, args: Record<string, unknown> = {}): Promise<unknown> {
    const id = this.nextId++;
    this.child.stdin!.write(`${JSON.stringify({ id, cmd, ...args })}\n`);
    const reply = await this.waitFor((l) => l.ev === 'reply' && l.id === id, `reply to ${cmd}`);
    if (!reply.ok) throw new Error(`${this.name} ${cmd}: ${String(reply.error)}`);
    return reply.result;
  }

  states(): Line[] {
    return this.lines.filter((l) => l.ev === 'state');
  }

  async counters(): Promise<Record<string, number>> {
    return (await this.cmd('counters')) as Record<string, number>;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    this.child.stdin!.end(`${JSON.stringify({ id: 0, cmd: 'stop' })}\n`);
    const t = setTimeout(() => this.child.kill('SIGKILL'), 8000);
    await this.exited;
    clearTimeout(t);
  }
}

const uid = (c: string) => c.repeat(40);
const UID1 = uid('1');
const UID2 = uid('2');
const UID3 = uid('3');

function creds(n: number | string, extra: Record<string, unknown> = {}) {
  const l = lab();
  const name = typeof n === 'number' ? `node${n}` : n;
  return { host: l.xmpp.host, port: l.xmpp.port, jid: `${name}@${l.xmpp.domain}`, password: `pw-${name}`, ca_file: l.xmpp.ca_file, ...extra };
}

const peers: Peer[] = [];
function peer(name: string, host: string, config: Record<string, unknown>): Peer {
  const p = new Peer(name, host, config);
  peers.push(p);
  return p;
}

let tmp = '';

beforeAll(() => {
  if (!existsSync(DIST)) throw new Error(`${DIST} is missing: build first (npx tsc -b)`);
  tmp = mkdtempSync(join(tmpdir(), 'xmpp-e2e-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(tmp, 'k.pem'), '-out', join(tmp, 'other-ca.pem'), '-days', '1', '-subj', '/CN=Not the lab CA'], { stdio: 'pipe' });
});

afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail') {
    for (const p of peers) console.log(`---- ${p.name}\n${p.lines.map((l) => JSON.stringify(l).slice(0, 400)).join('\n')}\n${p.stderr.slice(-80).join('\n')}`);
  }
  await Promise.all(peers.splice(0).map((p) => p.stop()));
});

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('XmppSession against the lab XMPP server', () => {
  it('two nodes behind NATs see each other with UIDs (and capabilities) and exchange signals both ways (SCRAM-SHA-1 and PLAIN)', async () => {
    const a = peer('node1', 'h1', { credentials: creds(1), uid: UID1, overlay: 'e2e', caps: ['trickle'] });
    const b = peer('node2', 'h2', { credentials: creds(2, { mechanism: 'PLAIN' }), uid: UID2, overlay: 'e2e' });
    await Promise.all([a, b].map((p) => p.waitFor((l) => l.ev === 'state' && l.state === 'online', 'online')));
    const rosterA = await a.waitFor((l) => l.ev === 'roster' && l.full === true, 'roster');
    expect((rosterA.items as { jid: string }[]).map((i) => i.jid)).toContain('node2@vpn.test');

    const seenByA = await a.waitFor((l) => l.ev === 'presence' && l.uid === UID2 && l.online === true, 'presence of node2');
    const seenByB = await b.waitFor((l) => l.ev === 'presence' && l.uid === UID1 && l.online === true, 'presence of node1');
    const jidA = (await a.cmd('jid')) as string;
    const jidB = (await b.cmd('jid')) as string;
    expect(seenByA).toMatchObject({ jid: jidB, overlay: 'e2e' });
    expect(seenByA.caps).toBeUndefined(); // b announces none
    expect(seenByB).toMatchObject({ jid: jidA, overlay: 'e2e', caps: ['trickle'] });
    expect(jidA).toBe('node1@vpn.test/tincan-11111111');

    const data = { fpr: 'sha-256 AB:CD', cas: 'candidate:1 1 udp 2122260223 10.1.0.2 5000 typ host', n: [1, null, true] };
    await a.cmd('send', { to: jidB, type: 'con_req', data });
    expect(await b.waitFor((l) => l.ev === 'signal', 'signal at node2')).toEqual({ ev: 'signal', jid: jidA, uid: UID1, type: 'con_req', data });
    await b.cmd('send', { to: jidA, type: 'con_resp', data: { ok: true } });
    expect(await a.waitFor((l) => l.ev === 'signal', 'signal at node1')).toEqual({ ev: 'signal', jid: jidB, uid: UID2, type: 'con_resp', data: { ok: true } });

    // A peer's stop() is seen as unavailable presence.
    await b.stop();
    await a.waitFor((l) => l.ev === 'presence' && l.uid === UID2 && l.online === false, 'node2 offline');
    expect(await a.counters()).toMatchObject({ signals_in: 1, signals_out: 1, signals_dropped_malformed: 0, login_failures: 0 });
  });

  it('counts garbage from a third client and keeps going: a valid signal still arrives afterwards', async () => {
    const a = peer('node1', 'h1', { credentials: creds(1), uid: UID1 });
    await a.waitFor((l) => l.ev === 'state' && l.state === 'online', 'online');
    const jidA = (await a.cmd('jid')) as string;
    const raw = peer('node3-raw', 'pub', { mode: 'raw', credentials: creds(3, { jid: 'node3@vpn.test/garbage' }) });
    await raw.waitFor((l) => l.ev === 'state' && l.state === 'online', 'raw client online');

    const msg = (body: string, type = 'normal') =>
      `<message to="${jidA}" type="${type}"><signal xmlns="${SIGNAL_NS}">${body}</signal></message>`;
    const esc = (o: unknown) => JSON.stringify(o).replace(/&/g, '&amp;').replace(/</g, '&lt;');
    // Before any presence from node3: garbage of every kind.
    for (const xml of [
      msg('{this is not json'),
      msg(esc({ v: 1, uid: UID3, type: 'Not-A-Type', data: 1 })),
      msg(esc({ v: 2, uid: UID3, type: 'x', data: 1 })),
      msg(esc({ v: 1, uid: UID3, type: 'x', data: 'z'.repeat(40_000) })),
      msg(esc({ v: 1, uid: UID3, type: 'x', data: 1 }), 'error'),
      `<message to="${jidA}" type="chat"><body>hello</body></message>`,
    ]) {
      await raw.cmd('raw', { xml });
    }
    // node3 announces a UID, then claims another one in a signal.
    await raw.cmd('raw', { xml: `<presence><node xmlns="${PRESENCE_NS}" uid="${UID3}"/></presence>` });
    await a.waitFor((l) => l.ev === 'presence' && l.uid === UID3 && l.online === true, 'presence of node3');
    await raw.cmd('raw', { xml: msg(esc({ v: 1, uid: UID2, type: 'x', data: 1 })) });
    // Then a valid one.
    await raw.cmd('raw', { xml: msg(esc({ v: 1, uid: UID3, type: 'ping', data: { seq: 7 } })) });
    const sig = await a.waitFor((l) => l.ev === 'signal', 'the valid signal');
    expect(sig).toEqual({ ev: 'signal', jid: 'node3@vpn.test/garbage', uid: UID3, type: 'ping', data: { seq: 7 } });
    expect(a.lines.filter((l) => l.ev === 'signal')).toHaveLength(1);
    expect(await a.counters()).toMatchObject({
      signals_in: 1,
      signals_dropped_malformed: 3,
      signals_dropped_oversized: 1,
      signals_dropped_uid_mismatch: 1,
      bounces: 1,
      messages_ignored: 1,
      disconnects: 0,
    });
    expect(a.states().at(-1)).toMatchObject({ state: 'online' });
  });

  it('refuses a server certificate from another CA with a clear TLS error, and keeps retrying', async () => {
    const a = peer('node4', 'h1', {
      credentials: creds(4, { ca_file: join(tmp, 'other-ca.pem') }),
      uid: uid('4'),
      backoff: { initialMs: 200, maxMs: 1000 },
    });
    const off = await a.waitFor((l) => l.ev === 'state' && l.state === 'offline', 'offline');
    expect(off.reason).toMatch(/^tls: TLS handshake with vpn\.test failed: [A-Z_]+/);
    await a.waitFor((l) => a.states().filter((s) => s.state === 'offline').length >= 2, 'a second attempt');
    const c = await a.counters();
    expect(c.login_failures).toBeGreaterThanOrEqual(2);
    expect(a.stderr.join('\n')).not.toContain('pw-node4');
  });

  it('reports a wrong password as an auth failure (SCRAM-SHA-1 and PLAIN)', async () => {
    const bad = 'not-the-password-0xC0FFEE';
    const a = peer('node5', 'h2', { credentials: creds(5, { password: bad }), uid: uid('5') });
    const b = peer('node6', 'h2', { credentials: creds(6, { password: bad, mechanism: 'PLAIN' }), uid: uid('6') });
    for (const p of [a, b]) {
      const off = await p.waitFor((l) => l.ev === 'state' && l.state === 'offline', 'offline');
      expect(off.reason).toMatch(/^auth: authentication failed: not-authorized/);
      expect(p.stderr.join('\n')).not.toContain(bad);
    }
  });
});
