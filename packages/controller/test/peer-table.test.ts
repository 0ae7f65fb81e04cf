import { describe, expect, it } from 'vitest';
import { uidFromIp4 } from '@tincan/protocol';
import { PeerTable } from '../src/peer-table.js';

const local = uidFromIp4('10.1.0.1');
const a = uidFromIp4('10.1.0.2');
const b = uidFromIp4('10.1.0.3');

const trust = (fingerprint: string) => ({ cert: 'AAAA', fingerprint, subnets: null, expiresMs: null });

function table(refused: string[] = []) {
  return new PeerTable({
    localUid: local,
    // the key is what the presence's `cert` says (a stand-in for the membership checks)
    admit: (p) => (p.overlay === 'lab' ? { ok: true, ...(p.cert ? { trust: trust(p.cert) } : {}) } : { ok: false, reason: 'other overlay' }),
    onRefused: (p, reason) => refused.push(`${p.jid} ${reason}`),
  });
}

describe('PeerTable', () => {
  it('admits presences of the same overlay only', () => {
    const t = table();
    expect(t.presence({ uid: a, jid: 'a@x/1', overlay: 'lab', online: true }, 0)).toEqual([{ uid: a, before: 'absent', after: 'member' }]);
    expect(t.presence({ uid: b, jid: 'b@x/1', overlay: 'other', online: true }, 0)).toEqual([]);
    expect(t.member(a)?.jid).toBe('a@x/1');
    expect(t.member(b)).toBeUndefined();
    expect(t.verifySender(a, 'a@x/1').ok).toBe(true);
    expect(t.verifySender(a, 'a@x/2')).toEqual({ ok: false, reason: 'jid_mismatch' });
    expect(t.verifySender(b, 'b@x/1')).toEqual({ ok: false, reason: 'not_admitted' });
    expect(t.verifySender(b, 'nobody@x/1')).toEqual({ ok: false, reason: 'unknown_sender' });
    expect(t.presence({ uid: a, jid: 'a@x/1', overlay: 'lab', online: false }, 1)).toEqual([{ uid: a, before: 'member', after: 'absent' }]);
  });

  it('the first admitted JID holds a UID: another claiming it is refused (uid_taken) and waits until the holder leaves', () => {
    const refused: string[] = [];
    const t = table(refused);
    t.presence({ uid: a, jid: 'a@x/1', overlay: 'lab', online: true, cert: 'K1' }, 0);
    expect(t.presence({ uid: a, jid: 'mallory@x/1', overlay: 'lab', online: true, cert: 'K9' }, 1)).toEqual([]);
    expect(t.presence({ uid: a, jid: 'a@x/2', overlay: 'lab', online: true, cert: 'K2' }, 1)).toEqual([]); // same account, other key
    expect(refused).toEqual(['mallory@x/1 uid_taken', 'a@x/2 uid_taken']);
    expect(t.member(a)?.jid).toBe('a@x/1');
    expect(t.conflicts()).toEqual([]);
    expect(t.verifySender(a, 'a@x/1').ok).toBe(true);
    expect(t.verifySender(a, 'mallory@x/1')).toEqual({ ok: false, reason: 'jid_mismatch' });
    // the holder leaves: the first waiting claimant is judged again
    expect(t.presence({ uid: a, jid: 'a@x/1', overlay: 'lab', online: false }, 2)).toEqual([{ uid: a, before: 'member', after: 'absent' }, { uid: a, before: 'absent', after: 'member' }]);
    expect(t.member(a)?.jid).toBe('mallory@x/1');
    expect(t.member(a)?.onlineSinceMs).toBe(2);
  });

  it('the same account with the same key under another resource is the same node: it takes the claim over', () => {
    const t = table();
    t.presence({ uid: a, jid: 'a@x/old', overlay: 'lab', online: true, cert: 'K1' }, 0);
    expect(t.presence({ uid: a, jid: 'a@x/new', overlay: 'lab', online: true, cert: 'K1' }, 1)).toEqual([]);
    expect(t.member(a)?.jid).toBe('a@x/new');
    expect(t.trustOf(a)?.fingerprint).toBe('K1');
    // but another account with the same key does not
    expect(t.presence({ uid: a, jid: 'b@x/1', overlay: 'lab', online: true, cert: 'K1' }, 2)).toEqual([]);
    expect(t.member(a)?.jid).toBe('a@x/new');
  });

  it('never admits anyone announcing our own UID (uid_taken), its own reflection included', () => {
    const refused: string[] = [];
    const t = table(refused);
    expect(t.presence({ uid: local, jid: 'me@x/r', overlay: 'lab', online: true }, 0)).toEqual([]);
    t.setOwnJid('me@x/r', 0);
    expect(t.presence({ uid: local, jid: 'evil@x/r', overlay: 'lab', online: true }, 1)).toEqual([]);
    expect(t.conflicts()).toEqual([]);
    expect(refused).toEqual(['me@x/r uid_taken', 'evil@x/r uid_taken']);
    expect(t.member(local)).toBeUndefined();
  });

  it('judges presences again on request: a refused one admitted, an admitted one refused', () => {
    let allow = new Set(['a@x/1']);
    const t = new PeerTable({ localUid: local, admit: (p) => (allow.has(p.jid) ? { ok: true } : { ok: false, reason: 'no' }) });
    t.presence({ uid: a, jid: 'a@x/1', overlay: 'lab', online: true }, 0);
    t.presence({ uid: b, jid: 'b@x/1', overlay: 'lab', online: true }, 0);
    expect(t.member(b)).toBeUndefined();
    allow = new Set(['b@x/1']);
    expect(t.rejudge(() => true, 1)).toEqual([{ uid: a, before: 'member', after: 'absent' }, { uid: b, before: 'absent', after: 'member' }]);
    expect(t.rejudge((p) => p.jid === 'nobody@x/1', 2)).toEqual([]);
  });

  it('a JID announcing a new UID drops its old claim', () => {
    const t = table();
    t.presence({ uid: a, jid: 'n@x/1', overlay: 'lab', online: true }, 0);
    const ch = t.presence({ uid: b, jid: 'n@x/1', overlay: 'lab', online: true }, 1);
    expect(ch).toEqual([
      { uid: a, before: 'member', after: 'absent' },
      { uid: b, before: 'absent', after: 'member' },
    ]);
  });

  it('syncs with the datapath list: missing claims leave after the grace, new ones arrive', () => {
    const t = table();
    t.presence({ uid: a, jid: 'a@x/1', overlay: 'lab', online: true }, 0);
    expect(t.syncOnline([], 1000, 5000)).toEqual([]);
    expect(t.syncOnline([{ uid: b, jid: 'b@x/1', overlay: 'lab' }], 6000, 5000, false)).toEqual([{ uid: b, before: 'absent', after: 'member' }]);
    expect(t.syncOnline([{ uid: b, jid: 'b@x/1', overlay: 'lab' }], 6000, 5000)).toEqual([{ uid: a, before: 'member', after: 'absent' }]);
  });
});
