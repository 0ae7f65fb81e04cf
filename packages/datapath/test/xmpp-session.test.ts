// Unit tests of the XMPP session's pure pieces: the stanza codec (presence, signals and their
// garbage), SASL mechanisms, the peer table, backoff and error descriptions. No server, no sockets.
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { MAX_SIGNAL_BYTES, PRESENCE_NS, SIGNAL_NS } from '@tincan/protocol';
import {
  buildPresence,
  buildSignalMessage,
  buildUnavailable,
  defaultResource,
  encodeSignal,
  parseJid,
  parsePresence,
  parseRosterQuery,
  parseSignalMessage,
  parseStanzas,
  type XmlElement,
} from '../src/xmpp/codec.js';
import { createMechanism, ScramSha1, SaslError } from '../src/xmpp/sasl.js';
import { PeerTable } from '../src/xmpp/peers.js';
import { LoginError, serviceUri } from '../src/xmpp/connection.js';
import { backoffDelay, describeError, XmppSession } from '../src/xmpp-session.js';

const UID_A = 'a'.repeat(40);
const UID_B = 'b'.repeat(40);
const PEER = 'node2@vpn.test/tincan-bbbbbbbb';
/** A node certificate as `openssl req -x509 -newkey ec` makes one (identity.ts), DER in base64. */
const NODE_CERT =
  'MIIBgjCCASegAwIBAgIUCRpslSA0HBwAdF5+Ya0fWNR9sl8wCgYIKoZIzj0EAwIwFjEUMBIGA1UEAwwLdGluY2FuLW5vZGUwHhcNMjYxMjA3MTk1MTE1WhcNMzYxMjA0MTk1MTE1WjAWMRQwEgYDVQQDDAt0aW5jYW4tbm9kZTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABJuv/dmgtCInZoZH58cHzrHOhsZZ++QK/1+NarzkkbZ5ozZU+xzXGV2N7u+cRjEdeUKTgwBRJP7iDKSLwKXs/vyjUzBRMB0GA1UdDgQWBBSbPL2t63ju35kkNZ0m7Qq4/YJVhjAfBgNVHSMEGDAWgBSbPL2t63ju35kkNZ0m7Qq4/YJVhjAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQCN1IGIMdo/j4LDm/0OB1mR8LOTzqsu7UKZIdn4OZsg1gIhAL+wl0qRpJq6f2zAxPn9/druwBPbquy+oSdT3B0g2myC';

function one(s: string): XmlElement {
  const els = parseStanzas(s);
  expect(els).toHaveLength(1);
  return els[0]!;
}

function signalStanza(body: string, attrs = `from="${PEER}" type="normal"`): XmlElement {
  return one(`<message ${attrs}><signal xmlns="${SIGNAL_NS}">${body}</signal></message>`);
}

const json = (o: unknown) => JSON.stringify(o).replace(/&/g, '&amp;').replace(/</g, '&lt;');
const noPresence = () => undefined;

describe('JIDs', () => {
  it('parses and normalizes full and bare JIDs', () => {
    expect(parseJid('Node1@VPN.test/Res/x')).toEqual({
      full: 'node1@vpn.test/Res/x',
      bare: 'node1@vpn.test',
      local: 'node1',
      domain: 'vpn.test',
      resource: 'Res/x',
    });
    expect(parseJid('vpn.test')?.bare).toBe('vpn.test');
    for (const bad of ['', '@vpn.test', 'a@', 'a@b/', 'a b@c', undefined, null]) expect(parseJid(bad)).toBeNull();
  });

  it('derives a stable default resource from the UID', () => {
    expect(defaultResource('0123456789' + 'f'.repeat(30))).toBe('tincan-01234567');
  });

  it('builds an xmpp:// service URI (IPv6 literals bracketed)', () => {
    expect(serviceUri('198.18.0.2', 5222)).toBe('xmpp://198.18.0.2:5222');
    expect(serviceUri('2001:db8::2', 5222)).toBe('xmpp://[2001:db8::2]:5222');
  });
});

describe('presence', () => {
  it('announces the node with its uid, overlay and a negative priority', () => {
    const p = buildPresence(UID_A, { overlay: 'net1' });
    const back = one(p.toString());
    expect(back.getChildText('priority')).toBe('-1');
    const node = back.getChild('node', PRESENCE_NS);
    expect(node?.attrs).toMatchObject({ uid: UID_A, overlay: 'net1' });
    expect(buildPresence(UID_A).getChild('node', PRESENCE_NS)?.attrs.overlay).toBeUndefined();
    expect(buildPresence(UID_A, { overlay: 'net1' }).getChild('node', PRESENCE_NS)?.attrs.caps).toBeUndefined();
    expect(buildPresence(UID_A, { overlay: 'net1' }).getChild('node', PRESENCE_NS)?.attrs.cert).toBeUndefined();
    const full = one(buildPresence(UID_A, { overlay: 'net1', caps: ['trickle', 'x-future'], cert: NODE_CERT }).toString());
    expect(full.getChild('node', PRESENCE_NS)?.attrs).toMatchObject({ caps: 'trickle x-future', cert: NODE_CERT });
    expect(buildUnavailable().toString()).toBe('<presence type="unavailable"/>');
  });

  it('reads an available TinCan node', () => {
    const p = parsePresence(one(`<presence from="${PEER}"><node xmlns="${PRESENCE_NS}" uid="${UID_B}" overlay="lab"/></presence>`));
    expect(p).toMatchObject({ kind: 'available', uid: UID_B, overlay: 'lab' });
    if (p.kind === 'available') expect(p.jid.full).toBe(PEER);
    const noOverlay = parsePresence(one(`<presence from="${PEER}"><node xmlns="${PRESENCE_NS}" uid="${UID_B}"/></presence>`));
    expect(noOverlay).toMatchObject({ kind: 'available', overlay: null });
  });

  it('reads the capabilities a peer announces, skipping what it cannot read, never the presence', () => {
    const caps = (attr: string) => {
      const p = parsePresence(one(`<presence from="${PEER}"><node xmlns="${PRESENCE_NS}" uid="${UID_B}" caps="${attr}"/></presence>`));
      expect(p.kind).toBe('available');
      return p.kind === 'available' ? p.caps : null;
    };
    expect(caps('trickle')).toEqual(['trickle']);
    expect(caps('  trickle   x-later\tthird ')).toEqual(['trickle', 'x-later', 'third']);
    expect(caps('trickle trickle')).toEqual(['trickle']);
    expect(caps('TRICKLE 9lives -x a_b trickle')).toEqual(['trickle']);
    expect(caps(`${'a'.repeat(33)} trickle`)).toEqual(['trickle']);
    expect(caps('a b c d e f g h i j trickle')).toEqual(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']); // the first 8
    expect(caps(`trickle ${'x'.repeat(600)}`)).toEqual([]); // an attribute this long is not read at all
    expect(caps('')).toEqual([]);
    const none = parsePresence(one(`<presence from="${PEER}"><node xmlns="${PRESENCE_NS}" uid="${UID_B}"/></presence>`));
    expect(none).toMatchObject({ kind: 'available', caps: [] });
  });

  it("reads a peer's node certificate; an unreadable one costs the certificate, never the presence", () => {
    const cert = (attr: string) => {
      const p = parsePresence(one(`<presence from="${PEER}"><node xmlns="${PRESENCE_NS}" uid="${UID_B}" cert="${attr}"/></presence>`));
      expect(p.kind).toBe('available');
      return p.kind === 'available' ? p.cert : undefined;
    };
    expect(cert(NODE_CERT)).toBe(NODE_CERT);
    expect(cert('')).toBeNull();
    expect(cert('not base64 !')).toBeNull();
    expect(cert(Buffer.from('hello, not DER').toString('base64'))).toBeNull(); // base64, but no certificate
    expect(cert(NODE_CERT.slice(0, 100))).toBeNull(); // a truncated certificate
    expect(cert('A'.repeat(5000))).toBeNull(); // longer than any node certificate
    const none = parsePresence(one(`<presence from="${PEER}"><node xmlns="${PRESENCE_NS}" uid="${UID_B}"/></presence>`));
    expect(none).toMatchObject({ kind: 'available', cert: null, memberCert: null });
  });

  it("announces our membership certificate and reads a peer's; one of the wrong form costs the certificate only", () => {
    const MCERT = `tcm1.${'e'.repeat(40)}.${'s'.repeat(86)}`;
    const built = one(buildPresence(UID_A, { cert: NODE_CERT, memberCert: MCERT }).toString());
    expect(built.getChild('node', PRESENCE_NS)?.attrs.mcert).toBe(MCERT);
    const mcert = (attr: string) => {
      const p = parsePresence(one(`<presence from="${PEER}"><node xmlns="${PRESENCE_NS}" uid="${UID_B}" mcert="${attr}"/></presence>`));
      expect(p.kind).toBe('available');
      return p.kind === 'available' ? p.memberCert : undefined;
    };
    expect(mcert(MCERT)).toBe(MCERT);
    for (const bad of ['', 'tcm1..', `tcm2.${'e'.repeat(40)}.${'s'.repeat(86)}`, `tcm1.${'e'.repeat(40)}.${'s'.repeat(85)}`, `tcm1.${'e'.repeat(3000)}.${'s'.repeat(86)}`, `tcm1.${'e'.repeat(40)}+.${'s'.repeat(86)}`]) {
      expect(mcert(bad)).toBeNull();
    }
  });

  it('takes unavailable and error presence as unavailable', () => {
    expect(parsePresence(one(`<presence from="${PEER}" type="unavailable"/>`))).toMatchObject({ kind: 'unavailable', error: false });
    const err = parsePresence(one(`<presence from="node2@vpn.test" type="error"><error type="cancel"><remote-server-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></presence>`));
    expect(err).toMatchObject({ kind: 'unavailable', error: true });
    if (err.kind === 'unavailable') expect(err.jid.resource).toBe('');
  });

  it('ignores presence that is not a TinCan announcement', () => {
    expect(parsePresence(one(`<presence from="${PEER}"><show>away</show></presence>`)).kind).toBe('ignore');
    expect(parsePresence(one(`<presence from="${PEER}"><node uid="${UID_B}"/></presence>`)).kind).toBe('ignore'); // wrong ns
    expect(parsePresence(one(`<presence from="node2@vpn.test" type="subscribe"/>`)).kind).toBe('ignore');
    expect(parsePresence(one(`<presence><node xmlns="${PRESENCE_NS}" uid="${UID_B}"/></presence>`)).kind).toBe('ignore');
  });

  it('flags broken TinCan announcements as malformed', () => {
    const cases = [
      `<presence from="${PEER}"><node xmlns="${PRESENCE_NS}" uid="xyz"/></presence>`,
      `<presence from="${PEER}"><node xmlns="${PRESENCE_NS}"/></presence>`,
      `<presence from="${PEER}"><node xmlns="${PRESENCE_NS}" uid="${UID_B.toUpperCase()}"/></presence>`,
      `<presence from="${PEER}"><node xmlns="${PRESENCE_NS}" uid="${UID_B}" overlay="${'x'.repeat(65)}"/></presence>`,
      `<presence from="node2@vpn.test"><node xmlns="${PRESENCE_NS}" uid="${UID_B}"/></presence>`,
    ];
    for (const c of cases) expect(parsePresence(one(c)).kind).toBe('malformed');
  });
});

describe('signals out', () => {
  it('encodes a valid signal and wraps it in a normal message with a no-store hint', () => {
    const body = encodeSignal(UID_A, 'con_req', { fpr: 'AB:CD', cands: ['x < y & z'] });
    expect(JSON.parse(body)).toEqual({ v: 1, uid: UID_A, type: 'con_req', data: { fpr: 'AB:CD', cands: ['x < y & z'] } });
    const msg = one(buildSignalMessage(PEER, body, 'id1').toString());
    expect(msg.attrs).toMatchObject({ to: PEER, type: 'normal', id: 'id1' });
    expect(msg.getChild('no-store', 'urn:xmpp:hints')).toBeDefined();
    expect(msg.getChild('signal', SIGNAL_NS)?.text()).toBe(body); // escaping survives the round trip
  });

  it('refuses a bad type, non-JSON data and oversized signals', () => {
    expect(() => encodeSignal(UID_A, 'Bad-Type', {})).toThrow(/invalid signal/);
    expect(() => encodeSignal(UID_A, 'x', { f: () => 1 })).toThrow(/invalid signal/);
    expect(() => encodeSignal(UID_A, 'x', undefined)).toThrow(/invalid signal/);
    expect(() => encodeSignal(UID_A, 'x', 'y'.repeat(MAX_SIGNAL_BYTES))).toThrow(/exceeds/);
  });
});

describe('signals in', () => {
  const valid = { v: 1, uid: UID_B, type: 'con_req', data: { a: [1, 'two', null] } };

  it('accepts a valid signal from a full JID and round-trips through XML', () => {
    const r = parseSignalMessage(one(buildSignalMessage('me@vpn.test/x', encodeSignal(UID_B, 'con_req', valid.data)).toString().replace('to="me@vpn.test/x"', `from="${PEER}"`)), noPresence);
    expect(r).toMatchObject({ ok: true, signal: valid });
    if (r.ok) expect(r.jid.full).toBe(PEER);
  });

  it('accepts a signal from a JID whose presence announced the same uid', () => {
    expect(parseSignalMessage(signalStanza(json(valid)), () => UID_B).ok).toBe(true);
  });

  it('drops a signal whose uid differs from what its sender announced', () => {
    const r = parseSignalMessage(signalStanza(json(valid)), (jid) => (jid === PEER ? UID_A : undefined));
    expect(r).toMatchObject({ ok: false, counter: 'signals_dropped_uid_mismatch' });
  });

  it('counts a type="error" message as a bounce, never a signal', () => {
    const bounce = one(
      `<message from="${PEER}" type="error"><signal xmlns="${SIGNAL_NS}">${json(valid)}</signal>` +
        `<error type="cancel"><service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></message>`,
    );
    const r = parseSignalMessage(bounce, noPresence);
    expect(r).toMatchObject({ ok: false, counter: 'bounces' });
    if (!r.ok) expect(r.reason).toMatch(/service-unavailable.*signal/);
    expect(parseSignalMessage(one(`<message type="error"/>`), noPresence)).toMatchObject({ ok: false, counter: 'bounces' });
  });

  it('drops bad JSON, wrong schemas and oversized payloads as garbage', () => {
    const malformed = [
      '{not json',
      '',
      json([1, 2]),
      json({ ...valid, v: 2 }),
      json({ ...valid, uid: 'B'.repeat(40) }),
      json({ ...valid, type: 'Con-Req' }),
      json({ ...valid, extra: 1 }),
      json({ v: 1, uid: UID_B, type: 'x' }),
    ];
    for (const body of malformed) {
      expect(parseSignalMessage(signalStanza(body), noPresence)).toMatchObject({ ok: false, counter: 'signals_dropped_malformed' });
    }
    const big = json({ ...valid, data: 'z'.repeat(MAX_SIGNAL_BYTES) });
    expect(parseSignalMessage(signalStanza(big), noPresence)).toMatchObject({ ok: false, counter: 'signals_dropped_oversized' });
  });

  it('drops signals without a full sender and ignores messages without a signal', () => {
    expect(parseSignalMessage(signalStanza(json(valid), 'from="node2@vpn.test"'), noPresence)).toMatchObject({
      ok: false,
      counter: 'signals_dropped_malformed',
    });
    expect(parseSignalMessage(signalStanza(json(valid), ''), noPresence)).toMatchObject({ ok: false, counter: 'signals_dropped_malformed' });
    expect(parseSignalMessage(one(`<message from="${PEER}"><body>hi</body></message>`), noPresence)).toMatchObject({
      ok: false,
      counter: 'messages_ignored',
    });
    expect(parseSignalMessage(one(`<message from="${PEER}"><signal>${json(valid)}</signal></message>`), noPresence)).toMatchObject({
      ok: false,
      counter: 'messages_ignored',
    });
    expect(parseSignalMessage(signalStanza(json(valid), `from="${PEER}" type="groupchat"`), noPresence)).toMatchObject({
      ok: false,
      counter: 'messages_ignored',
    });
  });

  it('refuses XML that is not well formed (the connection drops such a stream)', () => {
    expect(() => parseStanzas('<message><signal></message>')).toThrow();
  });
});

describe('roster', () => {
  it('reads items, normalizes JIDs and unknown subscriptions', () => {
    const q = one(
      `<iq type="result"><query xmlns="jabber:iq:roster">` +
        `<item jid="Bob@vpn.test" subscription="both"/><item jid="carol@vpn.test"/>` +
        `<item jid="dave@vpn.test" subscription="weird"/><item jid="eve@vpn.test" subscription="remove"/><item/>` +
        `</query></iq>`,
    ).getChild('query', 'jabber:iq:roster');
    expect(parseRosterQuery(q)).toEqual([
      { jid: 'bob@vpn.test', subscription: 'both', groups: [] },
      { jid: 'carol@vpn.test', subscription: 'none', groups: [] },
      { jid: 'dave@vpn.test', subscription: 'none', groups: [] },
      { jid: 'eve@vpn.test', subscription: 'remove', groups: [] },
    ]);
    expect(parseRosterQuery(undefined)).toEqual([]);
  });

  it('reads roster groups: trimmed, each once, bounded; empty and overlong names skipped', () => {
    const many = Array.from({ length: 40 }, (_, i) => `<group>g${i}</group>`).join('');
    const q = one(
      `<iq type="result"><query xmlns="jabber:iq:roster">` +
        `<item jid="a@vpn.test" subscription="both"><group> lab </group><group>lab</group><group></group>` +
        `<group>${'x'.repeat(257)}</group><group>ops &amp; dev</group><foo>bar</foo></item>` +
        `<item jid="b@vpn.test" subscription="both">${many}</item>` +
        `</query></iq>`,
    ).getChild('query', 'jabber:iq:roster');
    const items = parseRosterQuery(q);
    expect(items[0]).toEqual({ jid: 'a@vpn.test', subscription: 'both', groups: ['lab', 'ops & dev'] });
    expect(items[1]!.groups).toHaveLength(32);
  });
});

describe('SASL', () => {
  it('SCRAM-SHA-1 matches the RFC 5802 example and verifies the server signature', () => {
    const m = new ScramSha1('user', 'pencil', 'fyko+d2lbbFgONRv9qkxdawL');
    expect(m.initial().toString()).toBe('n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL');
    const final = m.challenge(Buffer.from('r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096'));
    expect(final.toString()).toBe('c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=');
    expect(() => m.success(Buffer.from('v=rmF9pqV8S7suAoZWja4dJRkFsKQ='))).not.toThrow();
  });

  it('SCRAM-SHA-1 rejects a wrong server signature, a foreign nonce and server errors', () => {
    const m = new ScramSha1('user', 'pencil', 'fyko+d2lbbFgONRv9qkxdawL');
    m.initial();
    m.challenge(Buffer.from('r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096'));
    expect(() => m.success(Buffer.from('v=AAAAAAAAAAAAAAAAAAAAAAAAAAA='))).toThrow(SaslError);
    const n = new ScramSha1('user', 'pencil', 'abc');
    n.initial();
    expect(() => n.challenge(Buffer.from('r=xyz123,s=QSXCR+Q6sek8bf92,i=4096'))).toThrow(/nonce/);
    const e = new ScramSha1('user', 'pencil', 'abc');
    e.initial();
    expect(() => e.challenge(Buffer.from('e=other-error'))).toThrow(/server error/);
    expect(() => new ScramSha1('user', 'pencil', 'abc').success(Buffer.alloc(0))).toThrow(SaslError);
  });

  it('SCRAM-SHA-1 accepts the server-final message as a challenge, then an empty success', () => {
    const m = new ScramSha1('user', 'pencil', 'fyko+d2lbbFgONRv9qkxdawL');
    m.initial();
    m.challenge(Buffer.from('r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096'));
    expect(m.challenge(Buffer.from('v=rmF9pqV8S7suAoZWja4dJRkFsKQ=')).length).toBe(0);
    expect(() => m.success(Buffer.alloc(0))).not.toThrow();
  });

  it('SCRAM-SHA-1 escapes "," and "=" in the user name', () => {
    expect(new ScramSha1('a,b=c', 'p', 'n').initial().toString()).toBe('n,,n=a=2Cb=3Dc,r=n');
  });

  it('PLAIN sends authzid-less credentials', () => {
    expect(createMechanism('PLAIN', 'node1', 'pw').initial().toString()).toBe('\0node1\0pw');
  });
});

describe('peer table', () => {
  const jid = (s: string) => parseJid(s)!;

  it('reports first sight and changes, not repeats', () => {
    let now = 1000;
    const t = new PeerTable(() => now);
    expect(t.available(jid(PEER), UID_B, 'lab')).toEqual([{ jid: PEER, uid: UID_B, overlay: 'lab', online: true, caps: [], cert: null, memberCert: null }]);
    now = 2000;
    expect(t.available(jid(PEER), UID_B, 'lab')).toEqual([]);
    expect(t.list()[0]?.lastHeardMs).toBe(2000);
    expect(t.available(jid(PEER), UID_B, 'other')).toEqual([{ jid: PEER, uid: UID_B, overlay: 'other', online: true, caps: [], cert: null, memberCert: null }]);
    // New capabilities (the peer's controller was upgraded) are news too; the same ones again are not.
    expect(t.available(jid(PEER), UID_B, 'other', ['trickle'])).toEqual([{ jid: PEER, uid: UID_B, overlay: 'other', online: true, caps: ['trickle'], cert: null, memberCert: null }]);
    expect(t.available(jid(PEER), UID_B, 'other', ['trickle'])).toEqual([]);
    expect(t.list()[0]?.caps).toEqual(['trickle']);
    // A new certificate (the node's key changed) is news: trusting it is the controller's decision.
    expect(t.available(jid(PEER), UID_B, 'other', ['trickle'], NODE_CERT)).toEqual([
      { jid: PEER, uid: UID_B, overlay: 'other', online: true, caps: ['trickle'], cert: NODE_CERT, memberCert: null },
    ]);
    expect(t.available(jid(PEER), UID_B, 'other', ['trickle'], NODE_CERT)).toEqual([]);
    expect(t.list()[0]?.cert).toBe(NODE_CERT);
    expect(t.available(jid(PEER), UID_A, 'other')).toEqual([
      { jid: PEER, uid: UID_B, overlay: 'other', online: false },
      { jid: PEER, uid: UID_A, overlay: 'other', online: true, caps: [], cert: null, memberCert: null },
    ]);
    expect(t.uidOf(PEER)).toBe(UID_A);
  });

  it('takes a full JID offline, or every resource of a bare one', () => {
    const t = new PeerTable();
    t.available(jid('x@d/1'), UID_A, null);
    t.available(jid('x@d/2'), UID_B, null);
    t.available(jid('y@d/1'), 'c'.repeat(40), null);
    expect(t.unavailable(jid('x@d/3'))).toEqual([]);
    expect(t.unavailable(jid('x@d/1'))).toEqual([{ jid: 'x@d/1', uid: UID_A, overlay: null, online: false }]);
    t.available(jid('x@d/1'), UID_A, null);
    expect(t.unavailable(jid('x@d')).map((c) => c.jid).sort()).toEqual(['x@d/1', 'x@d/2']);
    expect(t.size).toBe(1);
  });

  it('maps a uid to its most recent JID, and drops stale entries after a reconnect', () => {
    let now = 1;
    const t = new PeerTable(() => now);
    t.available(jid('x@d/old'), UID_A, null);
    now = 2;
    t.available(jid('x@d/new'), UID_A, null);
    expect(t.jidOfUid(UID_A)).toBe('x@d/new');
    t.markAllStale();
    now = 3;
    expect(t.available(jid('x@d/old'), UID_A, null)).toEqual([]); // re-announced: no event
    expect(t.jidOfUid(UID_A)).toBe('x@d/old'); // fresh beats stale
    expect(t.dropStale()).toEqual([{ jid: 'x@d/new', uid: UID_A, overlay: null, online: false }]);
    expect(t.jidOfUid(UID_B)).toBeUndefined();
  });
});

describe('backoff and errors', () => {
  it('doubles from 1 s up to a 60 s cap, with ±20 % jitter', () => {
    expect(backoffDelay(0, () => 0.5)).toBe(1000);
    expect(backoffDelay(1, () => 0.5)).toBe(2000);
    expect(backoffDelay(5, () => 0.5)).toBe(32_000);
    expect(backoffDelay(6, () => 0.5)).toBe(60_000);
    expect(backoffDelay(1000, () => 0.5)).toBe(60_000);
    expect(backoffDelay(0, () => 0)).toBe(800);
    expect(backoffDelay(0, () => 0.999999)).toBe(1200);
    expect(backoffDelay(10, () => 0.999999)).toBe(60_000);
    expect(backoffDelay(10, () => 0)).toBe(48_000);
  });

  it('describes failures by kind', () => {
    expect(describeError(new LoginError('auth', 'authentication failed: not-authorized'))).toBe('auth: authentication failed: not-authorized');
    expect(describeError(Object.assign(new Error('connect ECONNREFUSED 1.2.3.4:5222'), { code: 'ECONNREFUSED' }))).toBe(
      'connect: connect ECONNREFUSED 1.2.3.4:5222',
    );
    expect(describeError(Object.assign(new Error('conflict'), { name: 'StreamError', condition: 'conflict' }))).toBe('stream error: conflict');
    expect(describeError(Object.assign(new Error(''), { name: 'TimeoutError' }))).toMatch(/^timeout/);
    expect(describeError('weird')).toBe('error: weird');
  });
});

describe('XmppSession (not started)', () => {
  const logger = pino({ level: 'silent' });
  const credentials = { host: '127.0.0.1', jid: 'node1@vpn.test', password: 'secret' };

  it('validates its options and picks a default resource', () => {
    const s = new XmppSession({ credentials, uid: UID_A, logger });
    expect(s.jid).toBe('node1@vpn.test/tincan-aaaaaaaa');
    expect(s.state).toBe('offline');
    expect(new XmppSession({ credentials: { ...credentials, jid: 'node1@vpn.test/r1' }, uid: UID_A, logger }).jid).toBe('node1@vpn.test/r1');
    expect(() => new XmppSession({ credentials, uid: 'nope', logger })).toThrow();
    expect(() => new XmppSession({ credentials: { ...credentials, jid: 'vpn.test' }, uid: UID_A, logger })).toThrow();
    expect(Object.values(s.counters()).every((v) => v === 0)).toBe(true);
    expect(s.peers()).toEqual([]);
  });

  it('rejects signals while offline, to bare JIDs and with bad types; stop() before start() is fine', async () => {
    const s = new XmppSession({ credentials, uid: UID_A, logger });
    await expect(s.sendSignal(PEER, 'ping', {})).rejects.toThrow(/offline/);
    await expect(s.sendSignal('node2@vpn.test', 'ping', {})).rejects.toThrow(/full JID/);
    await expect(s.sendSignal(PEER, 'NOPE', {})).rejects.toThrow(/invalid signal/);
    await expect(s.stop()).resolves.toBeUndefined();
  });
});
