// Membership in the lab (docs/security.md, "Membership: who gets in"): real prosody, datapaths and
// GroupVPN controllers. An account that is not a member copies a member's presence element in
// directed presences and signals: nobody answers it, links nothing to it, and the members' traffic
// goes on. Without a CA a changed node key is refused until `tincanctl trust accept`; with one,
// nodes without a valid membership certificate are refused with a log line and a counter.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PRESENCE_NS, SIGNAL_NS } from '@tincan/protocol';
import { GroupNode, eventually, printLogsOnFailure, type LabInfo } from './support/group-node.js';
import { CTL_BIN } from './support/tincan-node.js';

const run = promisify(execFile);
const LAB_DIR = process.env.TINCAN_LAB_DIR ?? '/tmp/tincan-lab';
const lab = JSON.parse(readFileSync(join(LAB_DIR, 'lab.json'), 'utf8')) as LabInfo & {
  hosts: Record<string, { namespace: string }>;
  xmpp: { domain: string };
};
const RAW_CLIENT = resolve(import.meta.dirname, '../packages/datapath/test/fixtures/xmpp-peer.mjs');

interface MembershipLike {
  mode: string;
  refusals: Record<string, number>;
  pending_keys: { jid: string; uid: string; fingerprint: string }[];
  own_cert: { expires_ms: number | null; problem: string | null; warning: string | null } | null;
  expiring: { uid: string }[];
}
const membership = (n: GroupNode): MembershipLike | null =>
  (n.controllerStatus() as unknown as { membership?: MembershipLike } | null)?.membership ?? null;

/** Full get_state as JSON (the parts StateLike leaves out). */
async function state(n: GroupNode): Promise<{ xmpp: { jid: string }; peers: { uid: string; jid: string; cert?: string }[]; links: { uid: string; state: string; connected_ms: number | null }[]; counters: Record<string, number> }> {
  return JSON.parse(await n.ctl('status', '--json')) as never;
}

/** A bare logged-in XMPP client (the test fixture's raw mode) that sends whatever it is given and records what it gets. */
class RawClient {
  readonly stanzas: string[] = [];
  private readonly child: ChildProcess;
  private online = false;
  private nextId = 1;
  private readonly replies = new Map<number, (ok: boolean) => void>();

  constructor(host: string, account: string) {
    const config = {
      mode: 'raw',
      credentials: { host: lab.xmpp.host, port: lab.xmpp.port, jid: `${account}@vpn.test/attacker`, password: `pw-${account}`, ca_file: lab.xmpp.ca_file, mechanism: 'PLAIN' },
    };
    this.child = spawn('ip', ['netns', 'exec', lab.hosts[host]!.namespace, process.execPath, RAW_CLIENT, JSON.stringify(config)], { stdio: ['pipe', 'pipe', 'ignore'] });
    createInterface({ input: this.child.stdout! }).on('line', (l) => {
      let m: { ev?: string; xml?: string; state?: string; id?: number; ok?: boolean };
      try {
        m = JSON.parse(l) as typeof m;
      } catch {
        return;
      }
      if (m.ev === 'stanza' && m.xml) this.stanzas.push(m.xml);
      if (m.ev === 'state' && m.state === 'online') this.online = true;
      if (m.ev === 'reply' && m.id !== undefined) this.replies.get(m.id)?.(m.ok === true);
    });
  }

  async ready(): Promise<void> {
    await eventually(async () => this.online, 20_000, 'the raw XMPP client online');
  }

  async send(xml: string): Promise<void> {
    const id = this.nextId++;
    const ok = await new Promise<boolean>((r) => {
      this.replies.set(id, r);
      this.child.stdin!.write(`${JSON.stringify({ id, cmd: 'raw', xml })}\n`);
    });
    if (!ok) throw new Error('the raw client could not send');
  }

  stop(): void {
    this.child.stdin!.end();
    setTimeout(() => this.child.kill('SIGKILL'), 3000).unref();
  }
}

const esc = (o: unknown) => JSON.stringify(o).replace(/&/g, '&amp;').replace(/</g, '&lt;');

describe('membership without a CA: the roster gate and keys pinned on first use', () => {
  const a = new GroupNode({ host: 'h1', ip4: '10.254.9.1', account: 'node41', networkId: 'gv-mem', policy: 'proactive' }, lab);
  const b = new GroupNode({ host: 'h2', ip4: '10.254.9.2', account: 'node42', networkId: 'gv-mem', policy: 'proactive' }, lab);
  const nodes = [a, b];
  printLogsOnFailure(() => nodes);
  let attacker: RawClient | null = null;

  beforeAll(async () => {
    for (const n of nodes) n.start();
    await eventually(async () => (await a.upLinks()).has(b.uid) && (await b.upLinks()).has(a.uid), 60_000, 'a and b linked');
  });

  afterAll(async () => {
    attacker?.stop();
    await Promise.all(nodes.map((n) => n.remove()));
  });

  it('an account outside the roster copying a member\'s presence (fresh UID, or a member\'s UID) gets nothing, and the members\' ping goes on', async () => {
    const [sa, sb] = await Promise.all([state(a), state(b)]);
    const bAtA = sa.peers.find((p) => p.uid === b.uid)!;
    const aAtB = sb.peers.find((p) => p.uid === a.uid)!;
    expect(bAtA.cert).toBeDefined();
    const linkBefore = sa.links.find((l) => l.uid === b.uid)!;
    const fresh = 'f'.repeat(40);
    const node = (uid: string, cert: string) => `<node xmlns="${PRESENCE_NS}" uid="${uid}" overlay="gv-mem" caps="trickle" cert="${cert}"/>`;

    attacker = new RawClient('pub', 'stranger');
    await attacker.ready();
    const ping = a.pingOutput(b.spec.ip4, 40); // 8 s of traffic between the members, meanwhile
    for (const [to, uid, cert] of [[sa.xmpp.jid, fresh, bAtA.cert!], [sa.xmpp.jid, b.uid, bAtA.cert!], [sb.xmpp.jid, a.uid, aAtB.cert!]] as const) {
      await attacker.send(`<presence to="${to}"><priority>-1</priority>${node(uid, cert)}</presence>`);
      // and what a member would send next: an offer, claiming that UID
      const conReq = { v: 1, uid, type: 'con_req', data: { overlay: 'gv-mem', ip4: '10.254.9.99', attempt: '0011223344556677', description: { type: 'offer', sdp: 'v=0' } } };
      await attacker.send(`<message to="${to}" type="normal"><signal xmlns="${SIGNAL_NS}">${esc(conReq)}</signal></message>`);
    }
    await eventually(async () => {
      const c = (await state(a)).counters;
      return (c.xmpp_presence_dropped_not_in_roster ?? 0) >= 2 && (c.xmpp_signals_dropped_not_in_roster ?? 0) >= 2;
    }, 20_000, 'a\'s datapath dropping the stranger\'s presences and signals');
    const out = await ping;
    expect(out).toMatch(/\b40 packets transmitted, 40 received/);

    const [after, afterB] = await Promise.all([state(a), state(b)]);
    expect(afterB.counters.xmpp_presence_dropped_not_in_roster).toBeGreaterThanOrEqual(1);
    expect(after.peers.map((p) => p.jid)).toEqual([bAtA.jid]); // the stranger never entered the peer table
    expect(after.links.map((l) => l.uid)).toEqual([b.uid]);
    expect(after.links[0]).toMatchObject({ state: 'up', connected_ms: linkBefore.connected_ms });
    // the stranger got no signaling message at all (nothing but server traffic reaches it)
    expect(attacker.stanzas.filter((x) => x.includes(SIGNAL_NS) || x.includes(PRESENCE_NS))).toEqual([]);
    expect(membership(a)?.refusals ?? {}).toEqual({});
  });

  it('a changed node key is refused (key_changed, shown in tincanctl status) until tincanctl trust accept', async () => {
    // b's node loses its state: a new node key for the same account and address
    await b.stop();
    unlinkSync(join(b.stateDir, 'node-cert.pem'));
    unlinkSync(join(b.stateDir, 'node-key.pem'));
    b.start();
    await eventually(async () => (membership(a)?.refusals.key_changed ?? 0) >= 1, 60_000, 'a refusing b\'s new key');
    const pending = membership(a)!.pending_keys;
    expect(pending).toEqual([expect.objectContaining({ jid: 'node42@vpn.test', uid: b.uid })]);
    const text = await a.ctl('status');
    expect(text).toContain(`KEY CHANGED node42@vpn.test ${b.uid.slice(0, 12)}`);
    expect(text).toMatch(/presences refused: .*key_changed \d/);
    expect(a.controller!.log.some((l) => l.includes('presence refused') && l.includes('key_changed'))).toBe(true);
    await new Promise((r) => setTimeout(r, 5000));
    expect((await a.upLinks()).has(b.uid)).toBe(false);
    expect((await state(a)).links.filter((l) => l.uid === b.uid && l.state === 'up')).toEqual([]);

    const accepted = await a.ctl('trust', 'accept', b.uid.slice(0, 12));
    expect(accepted).toContain(`accepting node42@vpn.test ${b.uid.slice(0, 12)}`);
    expect(accepted).toContain('done: the controller pinned the new key');
    await eventually(async () => (await a.upLinks()).has(b.uid), 60_000, 'a and b linked again');
    expect(await a.ping(b.spec.ip4)).toBe(true);
    // the status file follows within its rewrite interval (about a second)
    await eventually(async () => membership(a)?.pending_keys.length === 0, 10_000, 'the status file without the pending key');
    expect(await a.ctl('trust', 'list')).toContain(`node42@vpn.test  ${b.uid.slice(0, 12)}  ${pending[0]!.fingerprint}`);
  });
});

describe('membership with a CA: certificates required', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'tincan-ca-'));
  const caDir = join(tmp, 'ca');
  const otherCaDir = join(tmp, 'other-ca');
  let caKey = '';
  const withCa = () => ({ membership: { ca_key: caKey, cert_file: 'member.cert' } });
  const spec = (host: string, n: number, extra: () => Record<string, unknown> | undefined) => {
    const node = new GroupNode({ host, ip4: `10.254.10.${n}`, account: `node${50 + n}`, networkId: 'gv-ca', policy: 'proactive' }, lab);
    return { node, extra };
  };
  // members c and d; e has no certificate; f an expired one; g one by another CA; h one for another key
  const c = spec('h1', 1, withCa);
  const d = spec('h2', 2, withCa);
  const e = spec('h3', 3, () => undefined);
  const f = spec('pub', 4, withCa);
  const g = spec('lan1', 5, withCa);
  const h = spec('lan2', 6, withCa);
  const all = [c, d, e, f, g, h];
  printLogsOnFailure(() => all.map((x) => x.node));

  const ctl = async (...args: string[]) => (await run(process.execPath, [CTL_BIN, ...args], { timeout: 20_000 })).stdout.trim();
  const sign = async (n: GroupNode, ...extra: string[]) =>
    ctl('ca', 'sign', '--key', join(caDir, 'ca-key.pem'), '--network-id', 'gv-ca', '--jid', `${n.spec.account}@vpn.test`, '--ip4', n.spec.ip4, ...extra);

  beforeAll(async () => {
    for (const dir of [caDir, otherCaDir]) await run('mkdir', ['-p', dir]);
    caKey = await ctl('ca', 'init', '--dir', caDir);
    await ctl('ca', 'init', '--dir', otherCaDir);
    for (const x of all) {
      const config = x.extra();
      if (config) Object.assign(x.node.spec, { extraConfig: config });
      x.node.startDatapath(); // makes the node key the certificate binds
    }
    await eventually(async () => all.every((x) => existsSync(join(x.node.stateDir, 'node-cert.pem'))), 30_000, 'node keys made');
    const nodeCert = (n: GroupNode) => ['--node-cert', join(n.stateDir, 'node-cert.pem')];
    const certs: [GroupNode, string][] = [
      [c.node, await sign(c.node, ...nodeCert(c.node), '--subnet', '10.77.0.0/24')],
      [d.node, await sign(d.node, ...nodeCert(d.node), '--days', '3')], // expires within the warning week
      [f.node, await sign(f.node, ...nodeCert(f.node), '--not-before', new Date(Date.now() - 3 * 86_400_000).toISOString(), '--days', '1')],
      [g.node, await ctl('ca', 'sign', '--key', join(otherCaDir, 'ca-key.pem'), '--network-id', 'gv-ca', '--jid', `${g.node.spec.account}@vpn.test`, '--ip4', g.node.spec.ip4, ...nodeCert(g.node))],
      [h.node, await sign(h.node, '--fingerprint', Array.from({ length: 32 }, (_, i) => (i * 7 + 3).toString(16).padStart(2, '0').toUpperCase()).join(':'))],
    ];
    for (const [n, text] of certs) writeFileSync(join(n.dir, 'member.cert'), `${text}\n`);
    for (const x of all) x.node.startController();
    await eventually(async () => (await c.node.upLinks()).has(d.node.uid), 60_000, 'c and d linked');
  });

  afterAll(async () => {
    await Promise.all(all.map((x) => x.node.remove()));
    rmSync(tmp, { recursive: true, force: true });
  });

  it('members with valid certificates link; each node without one is refused with a log line and a counter', async () => {
    expect(await c.node.ping(d.node.spec.ip4)).toBe(true);
    const reasons = ['no_member_cert', 'member_cert_expired', 'member_cert_bad_signature', 'member_cert_wrong_key'];
    await eventually(async () => reasons.every((r) => (membership(c.node)?.refusals[r] ?? 0) >= 1), 30_000, 'c refusing the four nodes');
    const m = membership(c.node)!;
    expect(m.mode).toBe('ca');
    for (const r of reasons) {
      expect(c.node.controller!.log.some((l) => l.includes('presence refused') && l.includes(`"reason":"${r}"`)), r).toBe(true);
    }
    const text = await c.node.ctl('status');
    expect(text).toContain('membership (groupvpn): membership CA');
    for (const r of reasons) expect(text).toMatch(new RegExp(`presences refused: .*${r} \\d`));
    // only d is linked, at c and at d
    await new Promise((r) => setTimeout(r, 3000));
    expect([...(await c.node.upLinks()).keys()]).toEqual([d.node.uid]);
    expect([...(await d.node.upLinks()).keys()]).toEqual([c.node.uid]);
    for (const x of [e, f, g, h]) expect(await x.node.ping(c.node.spec.ip4, 2)).toBe(false);
  });

  it('shows certificate expiry well before it bites: ours, and members\' within a week', async () => {
    expect(membership(c.node)!.own_cert).toMatchObject({ problem: null, warning: null });
    await eventually(async () => membership(d.node)?.own_cert?.warning != null, 20_000, 'd\'s status warning of its expiry');
    expect(await d.node.ctl('status')).toMatch(/our certificate: WARNING expires in 7\d h/);
    expect(membership(c.node)!.expiring.map((x) => x.uid)).toEqual([d.node.uid]);
    expect(await c.node.ctl('status')).toContain(`WARNING ${d.node.uid.slice(0, 12)}`);
    // the refused nodes see what is wrong with their own
    await eventually(async () => membership(f.node)?.own_cert?.problem != null, 20_000, 'f\'s status');
    expect(membership(f.node)!.own_cert!.problem).toMatch(/^member_cert_expired/);
    expect(membership(g.node)!.own_cert!.problem).toMatch(/^member_cert_bad_signature/);
    expect(membership(h.node)!.own_cert!.problem).toMatch(/^member_cert_wrong_key/);
    expect(await ctl('ca', 'show', join(c.node.dir, 'member.cert'), '--ca-key', caKey)).toMatch(/subnets +10\.77\.0\.0\/24[\s\S]*signature good/);
  });
});
