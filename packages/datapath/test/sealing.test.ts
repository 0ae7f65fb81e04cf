// The sealing codec of relayed frames (sealing.ts) with real P-256 keys: node identities made as the
// datapath makes them (openssl), and generated key pairs.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  SEALED_COUNTER_OFFSET, SEALED_EPOCH_OFFSET, SEALED_HEADER_LEN, SEALED_HOP_OFFSET, SEALED_INITIAL_HOP_LIMIT, SEALED_OVERHEAD,
  SEALED_TAG_LEN, FRAME_HEADER_LEN, isSealedFrame, uidFromIp4, type Uid,
} from '@tincan/protocol';
import { Counters } from '../src/counters.js';
import { ForwardingTable, type Peer } from '../src/forwarding-table.js';
import { loadIdentity, type NodeIdentity } from '../src/identity.js';
import { EPOCH_LIFETIME_MS, LIVE_EPOCHS, MAX_EPOCH_AGE_S, REPLAY_WINDOW, ReplayWindow, SealedFrames, deriveFrameKey, openFrame, sealFrame, sharedSecret } from '../src/sealing.js';

const A = uidFromIp4('10.254.0.1');
const C = uidFromIp4('10.254.0.3');
const M = uidFromIp4('10.254.0.9');

function packet(len = 100): Buffer {
  const p = randomBytes(len);
  p[0] = 0x45;
  return p;
}

/** One node's view: its sealing state, counters, and peer records for the others. */
function node(uid: Uid, id: { privateKey: NodeIdentity['privateKey'] }, now: () => number = Date.now) {
  const counters = new Counters();
  const sealed = new SealedFrames(id.privateKey, counters, now);
  const table = new ForwardingTable();
  sealed.setLocalUid(Buffer.from(uid, 'hex'));
  const peer = (u: Uid): Peer => table.ensurePeer(u);
  return { uid, counters, sealed, peer };
}

describe('sealed relayed frames: the codec', () => {
  const dirs: string[] = [];
  let idA: NodeIdentity;
  let idC: NodeIdentity;
  let idM: NodeIdentity;
  beforeAll(async () => {
    for (let i = 0; i < 3; i++) dirs.push(mkdtempSync(join(tmpdir(), 'tincan-seal-')));
    const ids = await Promise.all(dirs.map((d) => loadIdentity(d)));
    [idA, idC, idM] = [ids[0]!, ids[1]!, ids[2]!];
  });
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  /** A and C trust each other's node certificates (as set_peer_cert does). */
  function pair() {
    const a = node(A, idA);
    const c = node(C, idC);
    expect(a.sealed.setPeer(C, idC.certificate)).toBe(true);
    expect(c.sealed.setPeer(A, idA.certificate)).toBe(true);
    return { a, c };
  }

  it('both ends derive the same secret by ECDH from their own key and the other\'s certificate', () => {
    const ac = sharedSecret(idA.privateKey, idC.certificate.publicKey)!;
    const ca = sharedSecret(idC.privateKey, idA.certificate.publicKey)!;
    expect(ac.length).toBe(32);
    expect(ac.equals(ca)).toBe(true);
    expect(sharedSecret(idA.privateKey, idM.certificate.publicKey)!.equals(ac)).toBe(false);
    // Not P-256: nothing to seal with.
    const ed = generateKeyPairSync('ed25519');
    expect(sharedSecret(idA.privateKey, ed.publicKey)).toBeNull();
    const k1 = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    expect(sharedSecret(idA.privateKey, k1.publicKey)).toBeNull();
  });

  it('keys differ per direction and per epoch', () => {
    const s = sharedSecret(idA.privateKey, idC.certificate.publicKey)!;
    const e1 = randomBytes(8);
    const e2 = randomBytes(8);
    const ab = Buffer.from(A, 'hex');
    const cb = Buffer.from(C, 'hex');
    const k = deriveFrameKey(s, e1, ab, cb);
    expect(k.length).toBe(32);
    expect(deriveFrameKey(s, e1, ab, cb).equals(k)).toBe(true);
    expect(deriveFrameKey(s, e1, cb, ab).equals(k)).toBe(false);
    expect(deriveFrameKey(s, e2, ab, cb).equals(k)).toBe(false);
  });

  it('round trip: A seals for C, C opens the same packet; the frame is a full frame from A to C, marked sealed', () => {
    const { a, c } = pair();
    for (const len of [20, 100, 1280, 9000]) {
      const p = packet(len);
      const buf = Buffer.concat([Buffer.alloc(FRAME_HEADER_LEN), p]);
      const sealed = Buffer.from(a.sealed.seal(buf, FRAME_HEADER_LEN, len, a.peer(C))!);
      expect(sealed.length).toBe(FRAME_HEADER_LEN + len + SEALED_OVERHEAD);
      expect(sealed.subarray(0, 20).toString('hex')).toBe(A);
      expect(sealed.subarray(20, 40).toString('hex')).toBe(C);
      expect(isSealedFrame(sealed)).toBe(true);
      expect(sealed[SEALED_HOP_OFFSET]).toBe(SEALED_INITIAL_HOP_LIMIT);
      expect(sealed.subarray(SEALED_EPOCH_OFFSET, SEALED_EPOCH_OFFSET + 8).equals(a.sealed.epoch)).toBe(true);
      expect(sealed.includes(p.subarray(1, 17))).toBe(false); // no plaintext in it
      const opened = c.sealed.open(sealed, c.peer(A));
      expect(opened?.equals(p)).toBe(true);
    }
    expect(a.counters.sealedOut).toBe(4);
    expect(c.counters.sealedIn).toBe(4);
    // And the other way.
    const p = packet();
    const back = Buffer.from(c.sealed.seal(p, 0, p.length, c.peer(A))!);
    expect(a.sealed.open(back, a.peer(C))?.equals(p)).toBe(true);
  });

  it('altering any byte but the hop limit makes the frame fail, counted; the hop limit is for relays to change', () => {
    const { a, c } = pair();
    const p = packet(60);
    const sealed = Buffer.from(a.sealed.seal(p, 0, p.length, a.peer(C))!);
    let failed = 0;
    for (let i = 0; i < sealed.length; i++) {
      if (i === SEALED_HOP_OFFSET || i < FRAME_HEADER_LEN) continue; // UIDs: checked below (they pick the key)
      const bad = Buffer.from(sealed);
      bad[i]! ^= 0x01 << (i % 8);
      expect(c.sealed.open(bad, c.peer(A)), `byte ${i}`).toBeNull();
      failed++;
    }
    expect(c.counters.sealedAuthFailed + c.counters.sealedReplays).toBe(failed);
    // A source UID altered to another peer C trusts: opened with that peer's key, fails.
    c.sealed.setPeer(M, idM.certificate);
    const relabelled = Buffer.from(sealed);
    Buffer.from(M, 'hex').copy(relabelled, 0);
    const authBefore = c.counters.sealedAuthFailed;
    expect(c.sealed.open(relabelled, c.peer(M))).toBeNull();
    expect(c.counters.sealedAuthFailed).toBe(authBefore + 1);
    // The destination UID is in the key and the authenticated data: another node cannot open it.
    const m = node(M, idM);
    m.sealed.setPeer(A, idA.certificate);
    expect(m.sealed.open(sealed, m.peer(A))).toBeNull();
    expect(m.counters.sealedAuthFailed).toBe(1);
    // The hop limit is not authenticated: a relay's decrement leaves the frame valid.
    const relayed = Buffer.from(sealed);
    relayed[SEALED_HOP_OFFSET] = 3;
    expect(c.sealed.open(relayed, c.peer(A))?.equals(p)).toBe(true);
  });

  it('refuses replays within the window, frames older than the window, and an epoch older than the newest', () => {
    const { a, c } = pair();
    const frames: Buffer[] = [];
    for (let i = 0; i < 5; i++) {
      const p = packet();
      frames.push(Buffer.from(a.sealed.seal(p, 0, p.length, a.peer(C))!));
    }
    // Out of order is fine, each once.
    for (const i of [1, 0, 3, 2]) expect(c.sealed.open(frames[i]!, c.peer(A))).not.toBeNull();
    for (const i of [0, 1, 2, 3]) expect(c.sealed.open(frames[i]!, c.peer(A))).toBeNull();
    expect(c.counters.sealedReplays).toBe(4);
    expect(c.sealed.open(frames[4]!, c.peer(A))).not.toBeNull();
    expect(c.counters.sealedIn).toBe(5);
    // A replay with the relay's hop limit changed is still a replay.
    const again = Buffer.from(frames[4]!);
    again[SEALED_HOP_OFFSET]!--;
    expect(c.sealed.open(again, c.peer(A))).toBeNull();
    expect(c.counters.sealedReplays).toBe(5);

    // LIVE_EPOCHS newer epochs of A (restarts, a second apart) push the first out: its frames are
    // refused from then on, being older than the newest epoch C authenticated from A.
    for (let e = 1; e <= LIVE_EPOCHS; e++) {
      const restarted = node(A, idA, () => Date.now() + e * 1000);
      restarted.sealed.setPeer(C, idC.certificate);
      const p = packet();
      expect(c.sealed.open(Buffer.from(restarted.sealed.seal(p, 0, p.length, restarted.peer(C))!), c.peer(A))?.equals(p)).toBe(true);
    }
    const early = Buffer.from(a.sealed.seal(packet(), 0, 100, a.peer(C))!); // a fresh counter of the forgotten epoch
    expect(c.sealed.open(early, c.peer(A))).toBeNull();
    expect(c.counters.sealedReplays).toBe(6);
  });

  it('a sender starts a new epoch every EPOCH_LIFETIME_MS, later than the last even if its clock went back', () => {
    let now = Date.now();
    const a = node(A, idA, () => now);
    const c = node(C, idC);
    a.sealed.setPeer(C, idC.certificate);
    c.sealed.setPeer(A, idA.certificate);
    const first = Buffer.from(a.sealed.epoch);
    a.sealed.rotateIfDue();
    expect(a.sealed.epoch.equals(first)).toBe(true); // not due yet
    const p = packet();
    expect(c.sealed.open(Buffer.from(a.sealed.seal(p, 0, p.length, a.peer(C))!), c.peer(A))?.equals(p)).toBe(true);
    const old = Buffer.from(a.sealed.seal(p, 0, p.length, a.peer(C))!);
    now += EPOCH_LIFETIME_MS;
    a.sealed.rotateIfDue();
    expect(a.sealed.epoch.equals(first)).toBe(false);
    expect(a.sealed.epoch.readUInt32BE(0)).toBe(Math.floor(now / 1000));
    const fresh = Buffer.from(a.sealed.seal(p, 0, p.length, a.peer(C))!);
    expect(fresh.subarray(SEALED_EPOCH_OFFSET, SEALED_EPOCH_OFFSET + 8).equals(a.sealed.epoch)).toBe(true);
    // Both epochs are live at C: a frame of the old one still in flight opens, once.
    expect(c.sealed.open(fresh, c.peer(A))?.equals(p)).toBe(true);
    expect(c.sealed.open(old, c.peer(A))?.equals(p)).toBe(true);
    expect(c.sealed.open(old, c.peer(A))).toBeNull();
    // The clock goes back an hour: the next epoch is still later than the last.
    const last = a.sealed.epoch.readUInt32BE(0);
    now -= 2 * EPOCH_LIFETIME_MS;
    a.sealed.rotateIfDue(); // "due": the clock moved by more than the lifetime
    expect(a.sealed.epoch.readUInt32BE(0)).toBe(last + 1);
  });

  it('an epoch older than MAX_EPOCH_AGE_S by the receiver\'s clock is refused, even by a receiver that forgot everything', () => {
    const recorded = node(A, idA, () => Date.now() - (MAX_EPOCH_AGE_S + 60) * 1000);
    recorded.sealed.setPeer(C, idC.certificate);
    const p = packet();
    const frame = Buffer.from(recorded.sealed.seal(p, 0, p.length, recorded.peer(C))!);
    const c = node(C, idC); // a receiver that just started: no windows, no newest epoch
    c.sealed.setPeer(A, idA.certificate);
    expect(c.sealed.open(frame, c.peer(A))).toBeNull();
    expect(c.counters.sealedReplays).toBe(1);
    const recent = node(A, idA, () => Date.now() - (MAX_EPOCH_AGE_S - 60) * 1000);
    recent.sealed.setPeer(C, idC.certificate);
    expect(c.sealed.open(Buffer.from(recent.sealed.seal(p, 0, p.length, recent.peer(C))!), c.peer(A))?.equals(p)).toBe(true);
  });

  it('the replay window: anything above the top, and unseen counters up to REPLAY_WINDOW below it, once', () => {
    const w = new ReplayWindow();
    expect(w.fresh(0)).toBe(true);
    w.accept(0);
    expect(w.fresh(0)).toBe(false);
    w.accept(10);
    for (let i = 1; i < 10; i++) expect(w.fresh(i)).toBe(true);
    w.accept(5);
    expect(w.fresh(5)).toBe(false);
    w.accept(10 + REPLAY_WINDOW - 1);
    expect(w.fresh(9)).toBe(false); // fell out of the window
    expect(w.fresh(11)).toBe(true);
    expect(w.fresh(10)).toBe(false); // accepted, and still inside the window
    w.accept(10 + 10 * REPLAY_WINDOW); // a jump clears everything
    expect(w.fresh(10 + 9 * REPLAY_WINDOW + 11)).toBe(true);
    expect(w.fresh(10 + 10 * REPLAY_WINDOW)).toBe(false);
    // Bits reused around the ring after a slow walk stay exact.
    const v = new ReplayWindow();
    for (let i = 0; i < 3 * REPLAY_WINDOW; i += 3) v.accept(i);
    const top = 3 * REPLAY_WINDOW - 3;
    for (let i = top - REPLAY_WINDOW + 1; i <= top; i++) expect(v.fresh(i)).toBe(i % 3 !== 0);
  });

  it('a frame sealed in another epoch or by another key than the one trusted is refused; the epoch is authenticated', () => {
    const { a, c } = pair();
    const p = packet();
    const sealed = Buffer.from(a.sealed.seal(p, 0, p.length, a.peer(C))!);
    const otherEpoch = Buffer.from(sealed);
    otherEpoch[SEALED_EPOCH_OFFSET + 7]! ^= 0x80;
    expect(c.sealed.open(otherEpoch, c.peer(A))).toBeNull();
    // A node holding another key (M) that claims A's UID: C trusts A's certificate, not M's key.
    const impostor = node(A, idM);
    impostor.sealed.setPeer(C, idC.certificate);
    const forged = Buffer.from(impostor.sealed.seal(p, 0, p.length, impostor.peer(C))!);
    expect(c.sealed.open(forged, c.peer(A))).toBeNull();
    expect(c.counters.sealedAuthFailed).toBe(2);
    // The real one still opens (failures did not touch its window).
    expect(c.sealed.open(sealed, c.peer(A))?.equals(p)).toBe(true);
  });

  it('no trusted certificate: nothing is sealed or opened, counted; forgetting a certificate stops both', () => {
    const { a, c } = pair();
    const stranger = node(M, idM);
    const p = packet();
    expect(stranger.sealed.seal(p, 0, p.length, stranger.peer(C))).toBeNull();
    expect(stranger.counters.sealedNoKeyOut).toBe(1);
    const sealed = Buffer.from(a.sealed.seal(p, 0, p.length, a.peer(C))!);
    c.sealed.setPeer(A, null);
    expect(c.sealed.open(sealed, c.peer(A))).toBeNull();
    expect(c.counters.sealedNoKeyIn).toBe(1);
    a.sealed.setPeer(C, null);
    expect(a.sealed.seal(p, 0, p.length, a.peer(C))).toBeNull();
    expect(a.counters.sealedNoKeyOut).toBe(1);
    // A certificate whose key is not P-256 is recorded but cannot seal.
    const ed = generateKeyPairSync('ed25519');
    expect(a.sealed.setPeer(C, { fingerprint256: 'ED', publicKey: ed.publicKey })).toBe(false);
    expect(a.sealed.seal(p, 0, p.length, a.peer(C))).toBeNull();
  });

  it('setting the same certificate again keeps the replay windows; the counter never restarts within an epoch', () => {
    const { a, c } = pair();
    const p = packet();
    const first = Buffer.from(a.sealed.seal(p, 0, p.length, a.peer(C))!);
    expect(c.sealed.open(first, c.peer(A))).not.toBeNull();
    c.sealed.setPeer(A, idA.certificate);
    a.sealed.setPeer(C, idC.certificate);
    expect(c.sealed.open(first, c.peer(A))).toBeNull();
    expect(c.counters.sealedReplays).toBe(1);
    const second = Buffer.from(a.sealed.seal(p, 0, p.length, a.peer(C))!);
    expect(second.readUInt32BE(SEALED_COUNTER_OFFSET + 4)).toBe(1);
    // A different certificate for a peer starts its state afresh (and A's old frames no longer open).
    c.sealed.setPeer(A, idM.certificate);
    expect(c.sealed.open(second, c.peer(A))).toBeNull();
    expect(c.counters.sealedAuthFailed).toBe(1);
  });

  it('truncated frames and garbage never throw and never open', () => {
    const { a, c } = pair();
    const p = packet(200);
    const sealed = Buffer.from(a.sealed.seal(p, 0, p.length, a.peer(C))!);
    for (let n = 0; n < sealed.length; n++) expect(c.sealed.open(Buffer.from(sealed.subarray(0, n)), c.peer(A))).toBeNull();
    expect(c.counters.framesMalformed).toBe(SEALED_HEADER_LEN + SEALED_TAG_LEN);
    for (let i = 0; i < 2000; i++) {
      const g = randomBytes(SEALED_HEADER_LEN + SEALED_TAG_LEN + Math.floor(Math.random() * 300));
      expect(c.sealed.open(g, c.peer(A))).toBeNull();
      expect(openFrame(g, randomBytes(32), Buffer.alloc(12))).toBeNull();
    }
    expect(c.counters.sealedIn).toBe(0);
    // The low-level codec with a wrong key, and a too-short frame.
    const key = randomBytes(32);
    const out = Buffer.alloc(SEALED_HEADER_LEN + 100 + SEALED_TAG_LEN);
    const n = sealFrame(out, key, Buffer.from(A, 'hex'), Buffer.from(C, 'hex'), randomBytes(8), 7, p, 0, 100, Buffer.alloc(12));
    expect(openFrame(out.subarray(0, n), key, Buffer.alloc(12))?.equals(p.subarray(0, 100))).toBe(true);
    expect(openFrame(out.subarray(0, n), randomBytes(32), Buffer.alloc(12))).toBeNull();
    expect(openFrame(out.subarray(0, SEALED_HEADER_LEN + SEALED_TAG_LEN - 1), key, Buffer.alloc(12))).toBeNull();
  });
});
