import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TrustAcceptRequest, uidFromIp4 } from '@tincan/protocol';
import { certFingerprint, generateMemberCa } from '@tincan/controller';
import { describeCertificate, pemFingerprint, pendingChanges, renderTrust, requestsTaken, selectPending, signCertificate, writeAcceptRequests } from '../src/membership.js';
import { renderMembership } from '../src/status-table.js';

const dir = mkdtempSync(join(tmpdir(), 'tincanctl-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const UID = uidFromIp4('10.254.0.2');
const FP_OLD = certFingerprint('AAAA');
const FP_NEW = certFingerprint('BBBB');
// A certificate as the datapath's node-cert.pem holds it (any DER: only its SHA-256 is taken).
const PEM = `-----BEGIN CERTIFICATE-----\n${Buffer.from('some DER').toString('base64')}\n-----END CERTIFICATE-----\n`;

describe('tincanctl trust', () => {
  it('lists pins and refused changes, selects by UID prefix or JID, writes request files the controller takes', () => {
    writeFileSync(join(dir, 'groupvpn-pins.json'), JSON.stringify({
      version: 1,
      pins: { [`bob@vpn.test ${UID}`]: { fingerprint: FP_OLD, since_ms: 1 } },
      pending: { [`bob@vpn.test ${UID}`]: { fingerprint: FP_NEW, jid: 'bob@vpn.test/r', first_ms: 2, last_ms: 3 } },
    }));
    writeFileSync(join(dir, 'socialvpn-pins.json'), 'not json');
    const all = pendingChanges(dir);
    expect(all).toEqual([{ ctl: 'groupvpn', key: `bob@vpn.test ${UID}`, jid: 'bob@vpn.test', uid: UID, fingerprint: FP_NEW, pinned: FP_OLD, lastMs: 3 }]);
    expect(selectPending(all, UID.slice(0, 12))).toHaveLength(1);
    expect(selectPending(all, 'Bob@VPN.test/laptop')).toHaveLength(1);
    expect(selectPending(all, UID.slice(0, 12), FP_OLD)).toEqual([]);
    expect(selectPending(all, 'carol@vpn.test')).toEqual([]);
    for (const bad of ['1234', 'not a uid', '', '../etc']) expect(() => selectPending(all, bad)).toThrow(/neither a JID nor a UID/);
    const text = renderTrust(dir);
    expect(text).toContain('groupvpn: 1 keys pinned');
    expect(text).toContain(`offered ${FP_NEW}`);
    expect(text).toContain('socialvpn: socialvpn-pins.json is unusable (not JSON)');
    const paths = writeAcceptRequests(dir, all);
    expect(paths).toHaveLength(1);
    expect(TrustAcceptRequest.parse(JSON.parse(readFileSync(paths[0]!, 'utf8')))).toEqual({ version: 1, accept: [{ key: `bob@vpn.test ${UID}`, fingerprint: FP_NEW }] });
    expect(readdirSync(dir).some((n) => n.endsWith('.tmp'))).toBe(false);
    expect(requestsTaken(dir, paths)).toBe(false);
    rmSync(paths[0]!);
    expect(requestsTaken(dir, paths)).toBe(true);
  });
});

describe('tincanctl ca', () => {
  it('signs from a node-cert.pem or a fingerprint, refuses bad input, and shows what a certificate says', () => {
    const ca = generateMemberCa();
    const base = { caKeyPem: ca.privatePem, network: 'lab', jid: 'Node7@vpn.test', ip4: '10.254.0.7', subnets: ['10.77.0.0/24'], days: 30, notBefore: new Date(1_700_000_000_000) };
    const text = signCertificate({ ...base, nodeCertPem: PEM });
    expect(pemFingerprint(PEM)).toBe(certFingerprint(Buffer.from('some DER').toString('base64')));
    const shown = describeCertificate(text, ca.publicKey);
    expect(shown).toContain('jid       node7@vpn.test');
    expect(shown).toContain(`node key  ${pemFingerprint(PEM)}`);
    expect(shown).toContain('valid     2023-11-14T22:13:20.000Z to 2023-12-14T22:13:20.000Z');
    expect(shown).toContain('signature good');
    expect(describeCertificate(text, generateMemberCa().publicKey)).toContain('signature NOT by this CA');
    expect(signCertificate({ ...base, fingerprint: FP_NEW.toLowerCase() })).toMatch(/^tcm1\./);
    expect(() => signCertificate({ ...base })).toThrow(/--node-cert/);
    expect(() => signCertificate({ ...base, fingerprint: 'AB:CD' })).toThrow(/not a SHA-256 fingerprint/);
    expect(() => signCertificate({ ...base, nodeCertPem: 'garbage' })).toThrow(/no PEM certificate/);
    expect(() => signCertificate({ ...base, fingerprint: FP_NEW, subnets: ['10.77.0.1/24'] })).toThrow(/not a subnet/);
    expect(() => signCertificate({ ...base, fingerprint: FP_NEW, days: 0 })).toThrow(/--days/);
    expect(() => signCertificate({ ...base, fingerprint: FP_NEW, ip4: '10.254.0.300' })).toThrow(/ip4/);
    expect(() => signCertificate({ ...base, fingerprint: FP_NEW, caKeyPem: 'not a key' })).toThrow();
    expect(() => describeCertificate('garbage')).toThrow(/member_cert_malformed/);
  });
});

describe('tincanctl status: membership', () => {
  it('shows refusals, pending key changes and expiry; skips what it cannot read', () => {
    const now = 1_700_000_000_000;
    const lines = renderMembership('groupvpn', {
      membership: {
        mode: 'ca', pinned: 0, members: { groups: ['lab'], jids: [], domains: [] },
        own_cert: { expires_ms: now + 3 * 3_600_000, problem: null, warning: 'expires in 3 h (…): renew it' },
        expiring: [{ uid: UID, jid: 'bob@vpn.test/r', expires_ms: now + 2 * 86_400_000 }, { uid: 5 }],
        refusals: { member_cert_expired: 2, no_cert: 0, bogus: 'x' },
        pending_keys: [{ jid: 'bob@vpn.test', uid: UID, fingerprint: FP_NEW }, null],
      },
    }, now);
    expect(lines).toEqual([
      '',
      'membership (groupvpn): membership CA',
      '  members: groups lab',
      '  our certificate: WARNING expires in 3 h (…): renew it',
      `  WARNING ${UID.slice(0, 12)} bob@vpn.test/r: its certificate expires 2023-11-16T22:13:20.000Z (2 days left)`,
      '  presences refused: member_cert_expired 2',
      `  KEY CHANGED bob@vpn.test ${UID.slice(0, 12)}: new key ${FP_NEW} refused (tincanctl trust accept ${UID.slice(0, 12)})`,
    ]);
    for (const garbage of [null, 42, 'x', {}, { membership: 'x' }, { membership: null }]) expect(renderMembership('groupvpn', garbage, now)).toEqual([]);
    expect(renderMembership('socialvpn', { membership: { mode: 'pinning', pinned: 3, refusals: {} } }, now)).toEqual([
      '', 'membership (socialvpn): keys pinned on first use, 3 pinned', '  presences refused: none',
    ]);
  });
});
