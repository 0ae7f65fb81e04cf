import { describe, expect, it } from 'vitest';
import { uidFromIp4 } from '@tincan/protocol';
import { PeerTable } from '../src/peer-table.js';

const local = uidFromIp4('10.1.0.1');
const a = uidFromIp4('10.1.0.2');
const b = uidFromIp4('10.1.0.3');

function table() {
  return new PeerTable({ localUid: local, admit: (p) => (p.overlay === 'lab' ? { ok: true } : { ok: false, reason: 'other overlay' }) });
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

  it('two full JIDs announcing one UID are a conflict until one leaves', () => {
    const t = table();
    t.presence({ uid: a, jid: 'a@x/1', overlay: 'lab', online: true }, 0);
    expect(t.presence({ uid: a, jid: 'a@x/2', overlay: 'lab', online: true }, 1)).toEqual([{ uid: a, before: 'member', after: 'conflict' }]);
    expect(t.conflicts()).toEqual([{ uid: a, jids: ['a@x/1', 'a@x/2'], local: false }]);
    expect(t.verifySender(a, 'a@x/1')).toEqual({ ok: false, reason: 'address_conflict' });
    expect(t.presence({ uid: a, jid: 'a@x/1', overlay: 'lab', online: false }, 2)).toEqual([{ uid: a, before: 'conflict', after: 'member' }]);
    expect(t.member(a)?.jid).toBe('a@x/2');
    expect(t.member(a)?.onlineSinceMs).toBe(1);
  });

  it('ignores its own reflected presence, and reports another node claiming our UID', () => {
    const t = table();
    t.presence({ uid: local, jid: 'me@x/r', overlay: 'lab', online: true }, 0);
    expect(t.conflicts()).toEqual([]); // own JID unknown yet: not judged
    t.setOwnJid('me@x/r', 0);
    expect(t.conflicts()).toEqual([]);
    expect(t.presence({ uid: local, jid: 'evil@x/r', overlay: 'lab', online: true }, 1)).toEqual([
      { uid: local, before: 'absent', after: 'conflict' },
    ]);
    expect(t.conflicts()[0]).toMatchObject({ uid: local, local: true, jids: ['evil@x/r'] });
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
