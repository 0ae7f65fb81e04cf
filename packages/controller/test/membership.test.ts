// Membership: the membership certificate format and its verifier (garbage and hostile-but-valid
// certificates), the members filter, key pinning and the operator's accept requests.
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MEMBER_CERT_MAX_LEN, pinKey, uidFromIp4, type MemberCertPayload } from '@tincan/protocol';
import { ManualClock } from '../src/clock.js';
import {
  caPublicKeyText,
  certFingerprint,
  decodeMemberCert,
  generateMemberCa,
  parseCaPrivateKey,
  parseCaPublicKey,
  signMemberCert,
  verifyMemberCert,
} from '../src/member-cert.js';
import { EXPIRY_WARNING_MS, Membership, ownMemberCertStatus } from '../src/membership.js';
import { StateFileError } from '../src/state-file.js';
import { captureLogger } from './test-helpers.js';

const NODE_CERT = Buffer.from('a node certificate').toString('base64');
const FP = certFingerprint(NODE_CERT);
const IP = '10.254.0.7';
const UID = uidFromIp4(IP);
const NOW_S = 1_700_000_000;

function ca() {
  const { privatePem, publicKey } = generateMemberCa();
  return { priv: parseCaPrivateKey(privatePem), pub: parseCaPublicKey(publicKey), text: publicKey };
}

const payload = (over: Partial<MemberCertPayload> = {}): MemberCertPayload => ({
  v: 1, net: 'lab', jid: 'node7@vpn.test', fp: FP, ip4: IP, subnets: ['10.44.0.0/24'], nbf: NOW_S - 60, exp: NOW_S + 86_400, ...over,
});
const claim = { network: 'lab', bareJid: 'node7@vpn.test', fingerprint: FP, uid: UID, nowS: NOW_S };

describe('membership certificates', () => {
  it('fingerprints a certificate as SDP and get_state write it', () => {
    expect(FP).toMatch(/^[0-9A-F]{2}(:[0-9A-F]{2}){31}$/);
  });

  it('round-trips: a CA key pair, a signed certificate that verifies and fits in 2048 characters', () => {
    const k = ca();
    expect(k.text).toMatch(/^ed25519:[A-Za-z0-9_-]{43}$/);
    expect(caPublicKeyText(k.priv)).toBe(k.text);
    const text = signMemberCert(k.priv, payload());
    expect(text.startsWith('tcm1.')).toBe(true);
    expect(verifyMemberCert(k.pub, text, claim)).toEqual({ ok: true, payload: payload() });
    const big = signMemberCert(k.priv, payload({ subnets: Array.from({ length: 16 }, (_, i) => `fd00:${i.toString(16)}:ffff:ffff:ffff:ffff::/96`) }));
    expect(big.length).toBeLessThanOrEqual(MEMBER_CERT_MAX_LEN);
    expect(() => signMemberCert(k.priv, payload({ subnets: Array.from({ length: 17 }, () => '10.0.0.0/8') }))).toThrow();
    expect(() => signMemberCert(k.priv, payload({ jid: 'not a jid' }))).toThrow();
  });

  it('refuses each hostile-but-valid certificate with its own reason', () => {
    const k = ca();
    const other = ca();
    const check = (text: string | null, c = claim) => {
      const r = verifyMemberCert(k.pub, text, c);
      return r.ok ? 'ok' : r.problem;
    };
    expect(check(null)).toBe('no_member_cert');
    expect(check(signMemberCert(other.priv, payload()))).toBe('member_cert_bad_signature');
    expect(check(signMemberCert(k.priv, payload({ net: 'other' })))).toBe('member_cert_wrong_network');
    expect(check(signMemberCert(k.priv, payload({ jid: 'mallory@vpn.test' })))).toBe('member_cert_wrong_jid');
    expect(check(signMemberCert(k.priv, payload({ fp: certFingerprint('AAAA') })))).toBe('member_cert_wrong_key');
    expect(check(signMemberCert(k.priv, payload({ ip4: '10.254.0.8' })))).toBe('member_cert_wrong_address');
    expect(check(signMemberCert(k.priv, payload({ nbf: NOW_S + 10 })))).toBe('member_cert_not_yet_valid');
    expect(check(signMemberCert(k.priv, payload({ exp: NOW_S })))).toBe('member_cert_expired');
    // a member's valid certificate presented by another account, or with another node's key
    const good = signMemberCert(k.priv, payload());
    expect(check(good, { ...claim, bareJid: 'node8@vpn.test' })).toBe('member_cert_wrong_jid');
    expect(check(good, { ...claim, fingerprint: certFingerprint('BBBB') })).toBe('member_cert_wrong_key');
    expect(check(good, { ...claim, uid: uidFromIp4('10.254.0.9') })).toBe('member_cert_wrong_address');
  });

  it('refuses garbage and tampered certificates without throwing', () => {
    const k = ca();
    const good = signMemberCert(k.priv, payload());
    const [, body, sig] = good.split('.') as [string, string, string];
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const signed = (text: string) => `${text}.${sign(null, Buffer.from(text, 'ascii'), k.priv).toString('base64url')}`;
    const garbage: unknown[] = [
      undefined, 42, {}, '', 'tcm1', 'tcm1..', `tcm2.${body}.${sig}`, `tcm1.${body}.${sig}x`, `tcm1.${body}.${sig.slice(1)}`,
      `tcm1.${body}`, `tcm1.${'A'.repeat(2100)}.${sig}`, `tcm1.${Buffer.from('{not json').toString('base64url')}AAAAAAAAAAAA.${sig}`,
    ];
    for (const g of garbage) {
      const d = decodeMemberCert(g);
      expect(d.ok, String(g)).toBe(false);
      const r = verifyMemberCert(k.pub, g as string, claim);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.problem === 'member_cert_malformed' || (g === undefined && r.problem === 'no_member_cert')).toBe(true);
    }
    // validly signed, but not a payload of ours: extra keys, wrong version, wrong types, huge numbers
    for (const p of [
      { ...payload(), admin: true },
      { ...payload(), v: 2 },
      { ...payload(), exp: '1' },
      { ...payload(), subnets: ['10.0.0.1/33'] },
      { ...payload(), ip4: '::1' },
      [payload()],
      null,
    ]) {
      expect(verifyMemberCert(k.pub, signed(`tcm1.${b64(p)}`), claim)).toMatchObject({ ok: false, problem: 'member_cert_malformed' });
    }
    // one changed byte anywhere breaks the signature
    const tampered = Buffer.from(JSON.stringify({ ...payload(), exp: NOW_S + 10 * 86_400 })).toString('base64url');
    expect(verifyMemberCert(k.pub, `tcm1.${tampered}.${sig}`, claim)).toMatchObject({ ok: false, problem: 'member_cert_bad_signature' });
  });

  it('refuses CA keys that are not Ed25519 public keys of the right form', () => {
    for (const bad of ['', 'ed25519:', `ed25519:${'A'.repeat(42)}`, `rsa:${'A'.repeat(43)}`, `ed25519:${'A'.repeat(42)}+`]) {
      expect(() => parseCaPublicKey(bad)).toThrow();
    }
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    expect(() => parseCaPrivateKey(ec)).toThrow(/not an Ed25519 key/);
    expect(() => parseCaPrivateKey('garbage')).toThrow();
  });

  it('reports our own certificate: what is wrong with it, and its expiry a week ahead', () => {
    const k = ca();
    const caCfg = { key: k.pub, network: 'lab' };
    const own = { bareJid: 'node7@vpn.test', fingerprint: FP, uid: UID };
    const soon = signMemberCert(k.priv, payload({ exp: NOW_S + 3 * 86_400 }));
    expect(ownMemberCertStatus(caCfg, soon, own, NOW_S * 1000)).toMatchObject({ problem: null, warning: expect.stringMatching(/^expires in 72 h/) });
    const later = signMemberCert(k.priv, payload({ exp: NOW_S + EXPIRY_WARNING_MS / 1000 + 3600 }));
    expect(ownMemberCertStatus(caCfg, later, own, NOW_S * 1000)).toMatchObject({ problem: null, warning: null, subnets: ['10.44.0.0/24'] });
    expect(ownMemberCertStatus(caCfg, soon, { ...own, fingerprint: certFingerprint('X') }, NOW_S * 1000).problem).toMatch(/^member_cert_wrong_key/);
    expect(ownMemberCertStatus(caCfg, null, own, NOW_S * 1000).problem).toMatch(/no membership certificate/);
  });
});

describe('Membership', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const tempDir = () => {
    const d = mkdtempSync(join(tmpdir(), 'membership-test-'));
    dirs.push(d);
    return d;
  };
  const make = (over: Partial<ConstructorParameters<typeof Membership>[0]> = {}) => {
    const clock = new ManualClock(NOW_S * 1000);
    const { logger, lines } = captureLogger();
    const m = new Membership({ ctl: 'groupvpn', stateDir: null, ownBare: 'me@vpn.test', ca: null, clock, log: logger, ...over });
    return { m, clock, lines };
  };
  const presence = (jid: string, cert: string | null = NODE_CERT, uid = UID) => ({ uid, jid, ...(cert !== null ? { cert } : {}) });

  it('the members filter: roster groups, JIDs, domains; our own account always; nothing before the roster for groups', () => {
    const { m } = make({ members: { groups: ['lab'], jids: ['Bob@Example.org'], domains: ['corp.test'] } });
    expect(m.filtering).toBe(true);
    expect(m.admit(presence('node7@vpn.test/x'))).toMatchObject({ ok: false, reason: 'not_member', detail: 'roster not known yet' });
    expect(m.applyRoster([
      { jid: 'node7@vpn.test', subscription: 'both', groups: ['lab'] },
      { jid: 'node8@vpn.test', subscription: 'both', groups: ['ops'] },
    ], true)).toBe(true);
    expect(m.applyRoster([{ jid: 'node7@vpn.test', subscription: 'both', groups: ['lab'] }, { jid: 'node8@vpn.test', subscription: 'both', groups: ['ops'] }], true)).toBe(false);
    expect(m.admit(presence('node7@vpn.test/x')).ok).toBe(true);
    expect(m.admit(presence('node8@vpn.test/x', NODE_CERT, uidFromIp4('10.1.1.1')))).toMatchObject({ ok: false, reason: 'not_member' });
    expect(m.admit(presence('bob@example.org/x', NODE_CERT, uidFromIp4('10.1.1.2'))).ok).toBe(true);
    expect(m.admit(presence('anyone@corp.test/x', NODE_CERT, uidFromIp4('10.1.1.3'))).ok).toBe(true);
    expect(m.admit(presence('anyone@evil.corp.test/x', NODE_CERT, uidFromIp4('10.1.1.4'))).ok).toBe(false);
    expect(m.admit(presence('me@vpn.test/laptop', NODE_CERT, uidFromIp4('10.1.1.5'))).ok).toBe(true);
    // a push that takes node7 out of the group
    m.applyRoster([{ jid: 'node7@vpn.test', subscription: 'both', groups: [] }], false);
    expect(m.admit(presence('node7@vpn.test/x')).ok).toBe(false);
    // no filter: every contact the roster gate lets through
    expect(make({ members: { groups: [], jids: [], domains: [] } }).m.filtering).toBe(false);
  });

  it('pins the first key, refuses another (key_changed) and remembers it until the operator accepts exactly that key', () => {
    const { m, lines } = make();
    expect(m.admit(presence('node7@vpn.test/x', null))).toMatchObject({ ok: false, reason: 'no_cert' });
    expect(m.admit(presence('node7@vpn.test/x'))).toMatchObject({ ok: true, trust: { cert: NODE_CERT, fingerprint: FP, subnets: null } });
    expect(m.admit(presence('node7@vpn.test/other-resource')).ok).toBe(true);
    const other = Buffer.from('another key').toString('base64');
    expect(m.admit(presence('node7@vpn.test/x', other))).toMatchObject({ ok: false, reason: 'key_changed' });
    // the same key under another UID of the same account is a different pin
    expect(m.admit(presence('node7@vpn.test/x', other, uidFromIp4('10.254.0.99'))).ok).toBe(true);
    const key = pinKey('node7@vpn.test', UID);
    expect(m.status().pending_keys).toEqual([{ jid: 'node7@vpn.test', uid: UID, fingerprint: certFingerprint(other), pinned: FP, first_ms: NOW_S * 1000, last_ms: NOW_S * 1000 }]);
    expect(m.accept(key, FP)).toBe(false);
    expect(m.accept(pinKey('nobody@vpn.test', UID), certFingerprint(other))).toBe(false);
    expect(m.accept(key, certFingerprint(other))).toBe(true);
    expect(m.admit(presence('node7@vpn.test/x', other)).ok).toBe(true);
    expect(m.admit(presence('node7@vpn.test/x'))).toMatchObject({ ok: false, reason: 'key_changed' });
    expect(m.status()).toMatchObject({ mode: 'pinning', pinned: 2 });
    expect(lines.some((l) => l.msg === 'key change accepted by the operator: new key pinned')).toBe(true);
  });

  it('bounds the pins an account can make by announcing ever new UIDs', () => {
    const { m } = make();
    let refused = 0;
    for (let i = 0; i < 1030; i++) {
      const r = m.admit(presence('flood@vpn.test/x', NODE_CERT, uidFromIp4(`10.9.${i >> 8}.${i & 255}`)));
      if (!r.ok) {
        expect(r.reason).toBe('pins_full');
        refused++;
      }
    }
    expect(refused).toBe(6);
    expect(m.admit(presence('other@vpn.test/x')).ok).toBe(true);
  });

  it('with a CA, admits only what a valid certificate binds, and reports what it grants', () => {
    const k = ca();
    const { m } = make({ ca: { key: k.pub, network: 'lab' } });
    expect(m.mode).toBe('ca');
    expect(m.admit({ ...presence('node7@vpn.test/x'), member_cert: signMemberCert(k.priv, payload()) })).toEqual({
      ok: true, trust: { cert: NODE_CERT, fingerprint: FP, subnets: ['10.44.0.0/24'], expiresMs: (NOW_S + 86_400) * 1000 },
    });
    expect(m.admit(presence('node7@vpn.test/x'))).toMatchObject({ ok: false, reason: 'no_member_cert' });
    expect(m.admit({ ...presence('node7@vpn.test/x'), member_cert: signMemberCert(k.priv, payload({ exp: NOW_S - 1, nbf: NOW_S - 10 })) })).toMatchObject({ ok: false, reason: 'member_cert_expired' });
    // no pins are made with a CA
    expect(m.status().pinned).toBe(0);
  });

  it('persists pins atomically (0600), reloads them, refuses a corrupt file, and takes accept requests from the state directory', async () => {
    const dir = tempDir();
    const a = make({ stateDir: dir });
    a.m.admit(presence('node7@vpn.test/x'));
    const other = Buffer.from('another key').toString('base64');
    a.m.admit(presence('node7@vpn.test/x', other));
    await a.m.flush();
    const file = join(dir, 'groupvpn-pins.json');
    expect((await import('node:fs')).statSync(file).mode & 0o777).toBe(0o600);
    const b = make({ stateDir: dir });
    expect(b.m.status()).toMatchObject({ pinned: 1, pending_keys: [expect.objectContaining({ fingerprint: certFingerprint(other) })] });
    expect(b.m.admit(presence('node7@vpn.test/x', other))).toMatchObject({ ok: false, reason: 'key_changed' });
    // tincanctl's request files: a valid one, one for a key not pending, garbage; all consumed
    const key = pinKey('node7@vpn.test', UID);
    writeFileSync(join(dir, 'groupvpn-trust-accept-1.json'), JSON.stringify({ version: 1, accept: [{ key, fingerprint: certFingerprint(other) }] }));
    writeFileSync(join(dir, 'groupvpn-trust-accept-2.json'), JSON.stringify({ version: 1, accept: [{ key: pinKey('x@y', UID), fingerprint: FP }] }));
    writeFileSync(join(dir, 'groupvpn-trust-accept-3.json'), '{"version":1,"accept":[{"key":"../../etc","fingerprint":"x"}]}');
    writeFileSync(join(dir, 'groupvpn-trust-accept-4.json'), 'not json');
    writeFileSync(join(dir, 'socialvpn-trust-accept-5.json'), 'for the other controller');
    expect(b.m.takeAcceptRequests()).toEqual([key]);
    expect(readdirSync(dir).sort()).toEqual(['groupvpn-pins.json', 'socialvpn-trust-accept-5.json']);
    expect(b.m.admit(presence('node7@vpn.test/x', other)).ok).toBe(true);
    await b.m.flush();
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ version: 1, pending: {}, pins: { [key]: { fingerprint: certFingerprint(other) } } });
    writeFileSync(file, '{"version":1,"pins":{"x":{}}}');
    expect(() => make({ stateDir: dir })).toThrow(StateFileError);
  });
});
