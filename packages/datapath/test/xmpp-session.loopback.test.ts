// XmppSession against a scripted fake XMPP server on 127.0.0.1 (in-process, no lab): STARTTLS with a
// CA given at run time, refusal of plaintext streams, login failures, the online protocol (roster,
// presence table, signals and their garbage, pings, unknown IQs, roster pushes), liveness, reconnect
// and a clean stop. Certificates are made with openssl in a temp dir.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PRESENCE_NS, SIGNAL_NS } from '@tincan/protocol';
import { xml, type XmlElement } from '@xmpp/client-core';
import '../src/xmpp/codec.js';
import { XmppSession, type XmppSessionOptions, type XmppPresence, type XmppRoster, type XmppSignalIn } from '../src/xmpp-session.js';

const DOMAIN = 'fake.test';
const UID_ME = '1'.repeat(40);
const UID_PEER = '2'.repeat(40);
const PEER = `peer@${DOMAIN}/tincan-22222222`;
const NS_STREAM = 'http://etherx.jabber.org/streams';
const NS_TLS = 'urn:ietf:params:xml:ns:xmpp-tls';
const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';
const NS_BIND = 'urn:ietf:params:xml:ns:xmpp-bind';

// ---------------------------------------------------------------------------------------------
// certificates

let dir = '';
let caFile = '';
let otherCaFile = '';
let serverKey = '';
let serverCert = '';

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'xmpp-session-test-'));
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Test CA');
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'other.key', '-out', 'other.pem', '-days', '2', '-subj', '/CN=Other CA');
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', `/CN=${DOMAIN}`);
  writeFileSync(join(dir, 'ext.cnf'), `subjectAltName=DNS:${DOMAIN}\n`);
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'ext.cnf');
  caFile = join(dir, 'ca.pem');
  otherCaFile = join(dir, 'other.pem');
  serverKey = readFileSync(join(dir, 'server.key'), 'utf8');
  serverCert = readFileSync(join(dir, 'server.pem'), 'utf8');
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// a scripted XMPP server

interface FakeOptions {
  starttls?: boolean;
  mechanisms?: string[];
  password?: string;
  answerPings?: boolean;
  roster?: string;
  /** Answer the roster request with an error (the session must not trust anyone without a roster). */
  rosterError?: boolean;
}

class FakeConn {
  stage: 'plain' | 'tls' | 'authed' | 'bound' = 'plain';
  socket: net.Socket;
  parser!: InstanceType<typeof xml.Parser>;
  readonly stanzas: XmlElement[] = [];
  readonly auths: string[] = [];
  closedStream = false;
  jid = '';

  constructor(
    private readonly raw: net.Socket,
    private readonly opts: Required<FakeOptions>,
  ) {
    this.socket = raw;
    raw.on('error', () => undefined);
    this.attach(raw);
  }

  private readonly onData = (d: Buffer) => this.parser.write(d.toString('utf8'));

  private attach(sock: net.Socket): void {
    this.socket = sock;
    this.newParser();
    sock.on('data', this.onData);
  }

  private newParser(): void {
    this.parser = new xml.Parser();
    this.parser.on('start', () => this.onStreamStart());
    this.parser.on('element', (el: XmlElement) => this.onElement(el));
    this.parser.on('end', () => {
      this.closedStream = true;
      this.write('</stream:stream>');
      this.socket.end();
    });
    this.parser.on('error', () => this.socket.destroy());
  }

  write(s: string): void {
    if (!this.socket.destroyed) this.socket.write(s);
  }

  kill(): void {
    this.socket.destroy();
  }

  private onStreamStart(): void {
    let features = '';
    if (this.stage === 'plain' && this.opts.starttls) features = `<starttls xmlns="${NS_TLS}"><required/></starttls>`;
    else if (this.stage === 'plain' || this.stage === 'tls') {
      features = `<mechanisms xmlns="${NS_SASL}">${this.opts.mechanisms.map((m) => `<mechanism>${m}</mechanism>`).join('')}</mechanisms>`;
    } else features = `<bind xmlns="${NS_BIND}"/><session xmlns="urn:ietf:params:xml:ns:xmpp-session"><optional/></session>`;
    this.write(
      `<?xml version='1.0'?><stream:stream xmlns="jabber:client" xmlns:stream="${NS_STREAM}" id="s1" from="${DOMAIN}" version="1.0">` +
        `<stream:features>${features}</stream:features>`,
    );
  }

  private onElement(el: XmlElement): void {
    if (el.is('starttls', NS_TLS)) {
      this.raw.off('data', this.onData);
      this.write(`<proceed xmlns="${NS_TLS}"/>`);
      const secure = new tls.TLSSocket(this.raw, { isServer: true, key: serverKey, cert: serverCert });
      secure.on('error', () => undefined);
      this.stage = 'tls';
      this.attach(secure);
      return;
    }
    if (el.is('auth', NS_SASL)) {
      this.auths.push(el.attrs.mechanism ?? '');
      const [, user, pass] = Buffer.from(el.text(), 'base64').toString('utf8').split('\0');
      if (el.attrs.mechanism === 'PLAIN' && pass === this.opts.password) {
        this.jid = `${user}@${DOMAIN}`;
        this.stage = 'authed';
        this.newParser();
        this.write(`<success xmlns="${NS_SASL}"/>`);
      } else {
        this.write(`<failure xmlns="${NS_SASL}"><not-authorized/><text>bad password</text></failure>`);
      }
      return;
    }
    if (el.name === 'iq' && el.getChild('bind', NS_BIND)) {
      const res = el.getChild('bind', NS_BIND)?.getChildText('resource') ?? 'r';
      this.jid = `${this.jid}/${res}`;
      this.stage = 'bound';
      this.write(`<iq type="result" id="${el.attrs.id}"><bind xmlns="${NS_BIND}"><jid>${this.jid}</jid></bind></iq>`);
      return;
    }
    if (el.name === 'iq' && el.getChild('query', 'jabber:iq:roster') && el.attrs.type === 'get') {
      if (this.opts.rosterError) {
        this.write(`<iq type="error" id="${el.attrs.id}" to="${this.jid}"><error type="wait"><internal-server-error xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>`);
        return;
      }
      this.write(`<iq type="result" id="${el.attrs.id}" to="${this.jid}"><query xmlns="jabber:iq:roster">${this.opts.roster}</query></iq>`);
      return;
    }
    if (el.name === 'iq' && el.getChild('ping', 'urn:xmpp:ping') && el.attrs.type === 'get') {
      this.stanzas.push(el);
      if (this.opts.answerPings) this.write(`<iq type="result" id="${el.attrs.id}" from="${DOMAIN}" to="${this.jid}"/>`);
      return;
    }
    this.stanzas.push(el);
  }
}

class FakeServer {
  readonly conns: FakeConn[] = [];
  private readonly server: net.Server;
  readonly opts: Required<FakeOptions>;
  port = 0;

  constructor(opts: FakeOptions = {}) {
    this.opts = {
      starttls: true,
      mechanisms: ['PLAIN'],
      password: 'pw',
      answerPings: true,
      roster: `<item jid="peer@${DOMAIN}" subscription="both"/><item jid="other@${DOMAIN}" subscription="both"><group>lab</group></item>`,
      rosterError: false,
      ...opts,
    };
    this.server = net.createServer((s) => this.conns.push(new FakeConn(s, this.opts)));
  }

  async listen(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  get last(): FakeConn {
    const c = this.conns.at(-1);
    if (!c) throw new Error('no connection yet');
    return c;
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.kill();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

// ---------------------------------------------------------------------------------------------
// helpers

async function until<T>(fn: () => T | undefined | false, what: string, timeoutMs = 5000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface Recorder {
  states: { state: string; reason: string | undefined }[];
  presence: XmppPresence[];
  signals: XmppSignalIn[];
  rosters: XmppRoster[];
}

const sessions: XmppSession[] = [];
const servers: FakeServer[] = [];

afterEach(async () => {
  await Promise.all(sessions.splice(0).map((s) => s.stop()));
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function fake(opts?: FakeOptions): Promise<FakeServer> {
  const s = await new FakeServer(opts).listen();
  servers.push(s);
  return s;
}

function session(server: FakeServer, extra: Partial<XmppSessionOptions> & { creds?: Record<string, unknown> } = {}) {
  const { creds, ...rest } = extra;
  const s = new XmppSession({
    credentials: { host: '127.0.0.1', port: server.port, jid: `me@${DOMAIN}`, password: 'pw', ca_file: caFile, mechanism: 'PLAIN', ...creds },
    uid: UID_ME,
    overlay: 'net1',
    logger: pino({ level: 'silent' }),
    backoff: { initialMs: 50, maxMs: 200 },
    ...rest,
  });
  const rec: Recorder = { states: [], presence: [], signals: [], rosters: [] };
  s.on('state', (state, reason) => rec.states.push({ state, reason }));
  s.on('presence', (p) => rec.presence.push(p));
  s.on('signal', (x) => rec.signals.push(x));
  s.on('roster', (r) => rec.rosters.push(r));
  sessions.push(s);
  return { s, rec };
}

const signalXml = (body: string, from = PEER, type = 'normal') =>
  `<message from="${from}" to="me@${DOMAIN}/tincan-11111111" type="${type}"><signal xmlns="${SIGNAL_NS}">${body}</signal></message>`;
const esc = (o: unknown) => JSON.stringify(o).replace(/&/g, '&amp;').replace(/</g, '&lt;');
const peerPresence = (uid = UID_PEER, from = PEER) => `<presence from="${from}"><node xmlns="${PRESENCE_NS}" uid="${uid}" overlay="net1"/></presence>`;

// ---------------------------------------------------------------------------------------------

describe('XmppSession login', () => {
  it('refuses a server that offers no STARTTLS, before any authentication', async () => {
    const server = await fake({ starttls: false });
    const { s, rec } = session(server);
    s.start();
    const failed = await until(() => rec.states.find((x) => x.state === 'offline'), 'offline state');
    expect(failed.reason).toMatch(/^tls: .*STARTTLS.*plaintext/);
    expect(server.last.auths).toEqual([]);
    expect(s.counters().login_failures).toBeGreaterThanOrEqual(1);
  });

  it('verifies the server certificate against ca_file: a different CA fails with a TLS reason', async () => {
    const server = await fake();
    const { s, rec } = session(server, { creds: { ca_file: otherCaFile } });
    s.start();
    const failed = await until(() => rec.states.find((x) => x.state === 'offline'), 'offline state');
    expect(failed.reason).toMatch(/^tls: TLS handshake with fake\.test failed: [A-Z_]+/);
    expect(server.last.auths).toEqual([]);
  });

  it('without ca_file, a private CA is not trusted (default store)', async () => {
    const server = await fake();
    const { s, rec } = session(server, { creds: { ca_file: undefined } });
    s.start();
    const failed = await until(() => rec.states.find((x) => x.state === 'offline'), 'offline state');
    expect(failed.reason).toMatch(/^tls: /);
  });

  it('reports a wrong password as an auth failure and keeps retrying with backoff', async () => {
    const server = await fake({ password: 'other' });
    const { s, rec } = session(server);
    s.start();
    await until(() => rec.states.filter((x) => x.state === 'offline').length >= 3, 'three failed attempts');
    const reasons = rec.states.filter((x) => x.state === 'offline').map((x) => x.reason);
    expect(reasons[0]).toBe('auth: authentication failed: not-authorized (bad password)');
    expect(s.counters().reconnects).toBeGreaterThanOrEqual(2);
    expect(server.conns.length).toBeGreaterThanOrEqual(3);
  });

  it('reports a mechanism the server does not offer', async () => {
    const server = await fake({ mechanisms: ['PLAIN'] });
    const { s, rec } = session(server, { creds: { mechanism: 'SCRAM-SHA-1' } });
    s.start();
    const failed = await until(() => rec.states.find((x) => x.state === 'offline'), 'offline state');
    expect(failed.reason).toBe('auth: the server does not offer SASL SCRAM-SHA-1 (it offers PLAIN)');
    expect(server.last.auths).toEqual([]);
  });
});

describe('XmppSession online', () => {
  it('logs in, fetches the roster, announces the node and keeps the presence table', async () => {
    const server = await fake();
    const { s, rec } = session(server);
    s.start();
    await until(() => s.state === 'online', 'online');
    expect(rec.states.map((x) => x.state)).toEqual(['connecting', 'online']);
    expect(s.jid).toBe(`me@${DOMAIN}/tincan-11111111`);
    expect(rec.rosters).toEqual([{
      items: [{ jid: `peer@${DOMAIN}`, subscription: 'both', groups: [] }, { jid: `other@${DOMAIN}`, subscription: 'both', groups: ['lab'] }],
      full: true,
    }]);
    const conn = server.last;
    const announced = await until(() => conn.stanzas.find((x) => x.name === 'presence'), 'our presence');
    expect(announced.getChild('node', PRESENCE_NS)?.attrs).toMatchObject({ uid: UID_ME, overlay: 'net1' });

    conn.write(peerPresence());
    await until(() => rec.presence.length === 1, 'peer presence');
    expect(rec.presence[0]).toEqual({ jid: PEER, uid: UID_PEER, overlay: 'net1', online: true });
    expect(s.jidOfUid(UID_PEER)).toBe(PEER);
    conn.write(peerPresence()); // liveness repeat: no event
    // our own resource's presence and non-TinCan presence are ignored
    conn.write(`<presence from="${s.jid}"><node xmlns="${PRESENCE_NS}" uid="${UID_ME}"/></presence>`);
    conn.write(`<presence from="peer@${DOMAIN}/phone"><show>away</show></presence>`);
    conn.write(`<presence from="${PEER}" type="unavailable"/>`);
    await until(() => rec.presence.length === 2, 'peer offline');
    expect(rec.presence[1]).toEqual({ jid: PEER, uid: UID_PEER, overlay: 'net1', online: false });
    conn.write(peerPresence());
    conn.write(`<presence from="${PEER}" type="error"/>`);
    await until(() => rec.presence.length === 4, 'error presence taken as unavailable');
    expect(rec.presence[3]?.online).toBe(false);
    expect(s.peers()).toEqual([]);
  });

  it('exchanges signals, and counts garbage without breaking the session', async () => {
    const server = await fake();
    const { s, rec } = session(server);
    s.start();
    await until(() => s.state === 'online', 'online');
    const conn = server.last;

    // out
    await s.sendSignal(PEER, 'con_req', { fpr: 'AA:BB', cas: ['1 < 2'] });
    const sent = await until(() => conn.stanzas.find((x) => x.name === 'message'), 'our message');
    expect(sent.attrs).toMatchObject({ to: PEER, type: 'normal' });
    expect(sent.getChild('no-store', 'urn:xmpp:hints')).toBeDefined();
    expect(JSON.parse(sent.getChild('signal', SIGNAL_NS)!.text())).toEqual({ v: 1, uid: UID_ME, type: 'con_req', data: { fpr: 'AA:BB', cas: ['1 < 2'] } });

    // in, before any presence: accepted
    conn.write(signalXml(esc({ v: 1, uid: UID_PEER, type: 'con_resp', data: { ok: true } })));
    await until(() => rec.signals.length === 1, 'signal');
    expect(rec.signals[0]).toEqual({ jid: PEER, uid: UID_PEER, type: 'con_resp', data: { ok: true } });

    // garbage
    conn.write(peerPresence());
    conn.write(signalXml('{not json'));
    conn.write(signalXml(esc({ v: 1, uid: UID_PEER, type: 'BAD' })));
    conn.write(signalXml(esc({ v: 1, uid: UID_PEER, type: 'x', data: 'z'.repeat(40_000) })));
    conn.write(signalXml(esc({ v: 1, uid: '3'.repeat(40), type: 'x', data: 1 }))); // uid mismatch
    conn.write(signalXml(esc({ v: 1, uid: UID_PEER, type: 'x', data: 1 }), PEER, 'error')); // bounce
    conn.write(`<message from="${PEER}"><body>hello</body></message>`);
    conn.write(signalXml(esc({ v: 1, uid: UID_PEER, type: 'x', data: 1 }), 'peer@')); // xmpp.js's JID parser throws
    conn.write(`<iq type="get" id="u1" from="${PEER}"><query xmlns="urn:example:unknown"/></iq>`);
    conn.write(`<iq type="get" id="p1" from="${DOMAIN}"><ping xmlns="urn:xmpp:ping"/></iq>`);
    conn.write(`<iq type="set" id="r1"><query xmlns="jabber:iq:roster"><item jid="new@${DOMAIN}" subscription="to"/></query></iq>`);
    conn.write(`<iq type="set" id="r2" from="evil@${DOMAIN}/x"><query xmlns="jabber:iq:roster"><item jid="x@${DOMAIN}"/></query></iq>`);
    // and a valid signal still goes through
    conn.write(signalXml(esc({ v: 1, uid: UID_PEER, type: 'ping', data: [1] })));
    await until(() => rec.signals.length === 2, 'second valid signal');
    expect(rec.signals[1]?.type).toBe('ping');

    expect(s.counters()).toMatchObject({
      signals_in: 2,
      signals_out: 1,
      signals_dropped_malformed: 2,
      signals_dropped_oversized: 1,
      signals_dropped_uid_mismatch: 1,
      bounces: 1,
      messages_ignored: 1,
      roster_pushes: 1,
      stanza_errors: 1,
      disconnects: 0,
    });
    expect(rec.rosters.at(-1)).toEqual({ items: [{ jid: `new@${DOMAIN}`, subscription: 'to', groups: [] }], full: false });
    const replies = await until(() => {
      const r = conn.stanzas.filter((x) => x.name === 'iq' && ['u1', 'p1', 'r1', 'r2'].includes(x.attrs.id ?? ''));
      return r.length === 4 ? r : undefined;
    }, 'iq replies');
    const byId = Object.fromEntries(replies.map((r) => [r.attrs.id, r]));
    expect(byId.u1?.attrs.type).toBe('error');
    expect(byId.u1?.getChild('error')?.getChild('service-unavailable', 'urn:ietf:params:xml:ns:xmpp-stanzas')).toBeDefined();
    expect(byId.p1?.attrs.type).toBe('result');
    expect(byId.r1?.attrs.type).toBe('result');
    expect(byId.r2?.attrs.type).toBe('error');
    expect(s.state).toBe('online');
  });

  it('re-announces presence and pings the server every liveness interval', async () => {
    const server = await fake();
    const { s } = session(server, { livenessIntervalMs: 100 });
    s.start();
    await until(() => s.state === 'online', 'online');
    const conn = server.last;
    await until(() => conn.stanzas.filter((x) => x.name === 'presence').length >= 3, 'three presences');
    const ping = conn.stanzas.find((x) => x.name === 'iq' && x.getChild('ping', 'urn:xmpp:ping'));
    expect(ping?.attrs).toMatchObject({ type: 'get', to: DOMAIN });
    expect(s.counters().presence_out).toBeGreaterThanOrEqual(3);
  });

  it('reconnects when the server stops answering pings', async () => {
    const server = await fake({ answerPings: false });
    const { s, rec } = session(server, { livenessIntervalMs: 100, pingTimeoutMs: 150 });
    s.start();
    await until(() => s.counters().ping_timeouts === 1, 'ping timeout');
    expect(rec.states.find((x) => x.state === 'offline')?.reason).toMatch(/^timeout: the server did not answer a ping/);
    await until(() => server.conns.length >= 2 && s.state === 'online', 'reconnected');
  });

  it('reconnects after a dropped connection, keeps re-announced peers and drops the others', async () => {
    const server = await fake();
    const { s, rec } = session(server, { presenceGraceMs: 200 });
    s.start();
    await until(() => s.state === 'online', 'online');
    const other = `other@${DOMAIN}/tincan-33333333`;
    server.last.write(peerPresence());
    server.last.write(peerPresence('3'.repeat(40), other));
    await until(() => rec.presence.length === 2, 'two peers');
    server.last.kill();
    await until(() => rec.states.some((x) => x.state === 'offline'), 'offline');
    await until(() => server.conns.length === 2 && s.state === 'online', 'online again');
    expect(rec.states.map((x) => x.state)).toEqual(['connecting', 'online', 'offline', 'connecting', 'online']);
    expect(s.counters()).toMatchObject({ disconnects: 1, reconnects: 1 });
    server.last.write(peerPresence()); // only the first peer comes back
    await until(() => rec.presence.length === 3, 'stale peer dropped after the grace period');
    expect(rec.presence[2]).toEqual({ jid: other, uid: '3'.repeat(40), overlay: 'net1', online: false });
    expect(s.peers().map((p) => p.jid)).toEqual([PEER]);
  });

  it('stop() sends unavailable presence, closes the stream and stays offline', async () => {
    const server = await fake();
    const { s, rec } = session(server, { livenessIntervalMs: 50 });
    s.start();
    await until(() => s.state === 'online', 'online');
    const conn = server.last;
    await s.stop();
    expect(conn.stanzas.some((x) => x.name === 'presence' && x.attrs.type === 'unavailable')).toBe(true);
    await until(() => conn.closedStream, 'stream closed');
    expect(rec.states.at(-1)).toEqual({ state: 'offline', reason: 'stopped' });
    const n = conn.stanzas.length;
    await new Promise((r) => setTimeout(r, 200));
    expect(conn.stanzas.length).toBe(n); // no timers left
    expect(server.conns.length).toBe(1);
    await expect(s.sendSignal(PEER, 'x', 1)).rejects.toThrow(/offline/);
  });
});

describe('XmppSession roster gate', () => {
  const STRANGER = `evil@${DOMAIN}/tincan-22222222`;

  it('drops presence and signals from anyone but a mutual roster contact or our own account', async () => {
    const server = await fake({
      roster: `<item jid="peer@${DOMAIN}" subscription="both"/><item jid="half@${DOMAIN}" subscription="to"/>` +
        `<item jid="fan@${DOMAIN}" subscription="from"/>`,
    });
    const { s, rec } = session(server);
    s.start();
    await until(() => s.state === 'online', 'online');
    const conn = server.last;
    // A stranger copies a member's presence element (same uid, overlay) in a directed presence, then signals.
    conn.write(peerPresence(UID_PEER, STRANGER));
    conn.write(peerPresence('4'.repeat(40), STRANGER));
    conn.write(peerPresence('5'.repeat(40), `half@${DOMAIN}/x`));
    conn.write(peerPresence('6'.repeat(40), `fan@${DOMAIN}/x`));
    conn.write(signalXml(esc({ v: 1, uid: UID_PEER, type: 'con_req', data: { attempt: 'x' } }), STRANGER));
    conn.write(signalXml(esc({ v: 1, uid: '5'.repeat(40), type: 'con_req', data: 1 }), `half@${DOMAIN}/x`));
    // our own account's other device, and the real member
    conn.write(peerPresence('7'.repeat(40), `me@${DOMAIN}/laptop`));
    conn.write(peerPresence());
    await until(() => rec.presence.length === 2, 'own device and member online');
    expect(rec.presence.map((p) => p.jid)).toEqual([`me@${DOMAIN}/laptop`, PEER]);
    expect(rec.signals).toEqual([]);
    expect(s.counters()).toMatchObject({ presence_dropped_not_in_roster: 4, signals_dropped_not_in_roster: 2 });
    expect(s.jidOfUid(UID_PEER)).toBe(PEER);
    expect(s.jidOfUid('4'.repeat(40))).toBeUndefined();
    expect(s.roster()).toEqual({
      known: true,
      items: [
        { jid: `peer@${DOMAIN}`, subscription: 'both', groups: [] },
        { jid: `half@${DOMAIN}`, subscription: 'to', groups: [] },
        { jid: `fan@${DOMAIN}`, subscription: 'from', groups: [] },
      ],
    });
  });

  it('a roster push that ends a mutual subscription takes its presences offline; one that makes one lets them in', async () => {
    const server = await fake();
    const { s, rec } = session(server);
    s.start();
    await until(() => s.state === 'online', 'online');
    const conn = server.last;
    conn.write(peerPresence());
    await until(() => rec.presence.length === 1, 'member online');
    conn.write(`<iq type="set" id="r1"><query xmlns="jabber:iq:roster"><item jid="peer@${DOMAIN}" subscription="remove"/></query></iq>`);
    await until(() => rec.presence.length === 2, 'member offline');
    expect(rec.presence[1]).toEqual({ jid: PEER, uid: UID_PEER, overlay: 'net1', online: false });
    conn.write(peerPresence());
    conn.write(signalXml(esc({ v: 1, uid: UID_PEER, type: 'ping', data: 1 })));
    await until(() => s.counters().signals_dropped_not_in_roster === 1, 'signal dropped');
    expect(s.counters().presence_dropped_not_in_roster).toBe(1);
    conn.write(`<iq type="set" id="r2"><query xmlns="jabber:iq:roster"><item jid="peer@${DOMAIN}" subscription="both"><group>g</group></item></query></iq>`);
    await until(() => s.roster().items.some((i) => i.jid === `peer@${DOMAIN}` && i.subscription === 'both'), 'push applied');
    conn.write(peerPresence());
    await until(() => rec.presence.length === 3, 'member online again');
    expect(s.roster().items.find((i) => i.jid === `peer@${DOMAIN}`)?.groups).toEqual(['g']);
  });

  it('without a roster nobody is trusted: a failed roster request is a failed login, retried', async () => {
    const server = await fake({ rosterError: true });
    const { s, rec } = session(server);
    s.start();
    const failed = await until(() => rec.states.find((x) => x.state === 'offline'), 'offline state');
    expect(failed.reason).toMatch(/^roster: the roster request failed/);
    expect(server.last.stanzas.some((x) => x.name === 'presence')).toBe(false);
    await until(() => server.conns.length >= 2, 'retried');
    expect(s.roster().known).toBe(false);
  });
});
