import { createCipheriv, createDecipheriv, diffieHellman, hkdfSync, randomBytes, type KeyObject, type X509Certificate } from 'node:crypto';
import {
  FRAME_DST_OFFSET,
  FRAME_SRC_OFFSET,
  SEALED_COUNTER_OFFSET,
  SEALED_EPOCH_OFFSET,
  SEALED_FRAME_TYPE,
  SEALED_HEADER_LEN,
  SEALED_HOP_OFFSET,
  SEALED_INITIAL_HOP_LIMIT,
  SEALED_TAG_LEN,
  SEALED_TYPE_OFFSET,
  UID_BYTES,
  type Uid,
} from '@tincan/protocol';
import type { Counters } from './counters.js';
import type { Peer } from './forwarding-table.js';

/**
 * Sealed relayed frames (docs/security.md, "Relayed frames are sealed end to end"; the layout is in
 * protocol/src/frame.ts; docs/decisions/sealed-relayed-frames.md says why this construction).
 *
 * Keys: ECDH (P-256) between this node's key and the peer's trusted certificate key gives a secret
 * per pair of nodes; HKDF-SHA-256 of it, salted with the sender's epoch and labelled with both UIDs in
 * sending order, gives the AES-256-GCM key of one direction and epoch. An epoch is 4 bytes of the
 * sender's clock (seconds, strictly increasing within a process) and 4 random bytes, new at each
 * datapath start and every EPOCH_LIFETIME_MS. The nonce is the sender's 64-bit frame counter (one
 * counter per datapath start for all destinations, so no nonce repeats under a key however often it is
 * derived again); the receiver keeps a replay window per source and epoch, refuses an epoch older than
 * the newest it authenticated from that source, and one more than MAX_EPOCH_AGE_S older than its clock.
 */

const LABEL = Buffer.from('tincan sealed relayed frame v1 ');
const NONCE_LEN = 12;
/** Counters this far below the highest one accepted are still accepted, once each. */
export const REPLAY_WINDOW = 2048;
/** Epochs kept with their replay windows per source: its current one and some earlier ones. */
export const LIVE_EPOCHS = 4;
/** A sender starts a new epoch (new keys, fresh replay windows at the receivers) this often. */
export const EPOCH_LIFETIME_MS = 3_600_000;
/**
 * A receiver refuses a new epoch whose clock part is older than this by its own clock: frames recorded
 * longer ago cannot be replayed, even to a receiver that restarted and forgot its windows. A sender
 * whose clock is further behind cannot send sealed frames (counted as replays at the receiver).
 */
export const MAX_EPOCH_AGE_S = 24 * 3600;
/** The sender stops here (never reached: 2^53 frames); above it a counter cannot be a JS number exactly. */
const MAX_COUNTER = Number.MAX_SAFE_INTEGER;
const TWO_32 = 2 ** 32;

/** What sealing needs of a peer's trusted certificate (an X509Certificate has both). */
export type TrustedKey = Pick<X509Certificate, 'fingerprint256' | 'publicKey'>;

/** ECDH between our key and the peer certificate's key; null unless both are P-256. */
export function sharedSecret(privateKey: KeyObject, publicKey: KeyObject): Buffer | null {
  if (!isP256(publicKey) || !isP256(privateKey)) return null;
  return diffieHellman({ privateKey, publicKey });
}

function isP256(k: KeyObject): boolean {
  return k.asymmetricKeyType === 'ec' && k.asymmetricKeyDetails?.namedCurve === 'prime256v1';
}

/** The AES-256-GCM key of frames from `src` to `dst` (20-byte UIDs) sealed in the sender epoch `epoch` (8 bytes). */
export function deriveFrameKey(shared: Buffer, epoch: Uint8Array, src: Uint8Array, dst: Uint8Array): Buffer {
  const info = Buffer.concat([LABEL, src.subarray(0, UID_BYTES), dst.subarray(0, UID_BYTES)]);
  return Buffer.from(hkdfSync('sha256', shared, Buffer.from(epoch.subarray(0, 8)), info, 32));
}

/**
 * Writes the sealed frame of the IP packet `packet[off, off+len)` into `out` from 0 and returns its
 * length (`out` must hold SEALED_HEADER_LEN + len + SEALED_TAG_LEN bytes). `nonce` is scratch
 * (NONCE_LEN bytes).
 */
export function sealFrame(
  out: Buffer, key: Buffer, src: Buffer, dst: Buffer, epoch: Buffer, counter: number,
  packet: Buffer, off: number, len: number, nonce: Buffer,
): number {
  src.copy(out, FRAME_SRC_OFFSET, 0, UID_BYTES);
  dst.copy(out, FRAME_DST_OFFSET, 0, UID_BYTES);
  out[SEALED_TYPE_OFFSET] = SEALED_FRAME_TYPE;
  epoch.copy(out, SEALED_EPOCH_OFFSET, 0, 8);
  writeCounter(out, SEALED_COUNTER_OFFSET, counter);
  out[SEALED_HOP_OFFSET] = SEALED_INITIAL_HOP_LIMIT;
  nonceOf(nonce, out);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(out.subarray(0, SEALED_HOP_OFFSET));
  const body = cipher.update(packet.subarray(off, off + len));
  cipher.final(); // GCM: nothing more to write
  body.copy(out, SEALED_HEADER_LEN);
  cipher.getAuthTag().copy(out, SEALED_HEADER_LEN + len);
  return SEALED_HEADER_LEN + len + SEALED_TAG_LEN;
}

/**
 * The IP packet of a sealed frame, or null if it is too short or fails authentication under `key`
 * (anything altered but the hop limit, or another key). `nonce` is scratch.
 */
export function openFrame(frame: Buffer, key: Buffer, nonce: Buffer): Buffer | null {
  const len = frame.length - SEALED_HEADER_LEN - SEALED_TAG_LEN;
  if (len < 0 || frame[SEALED_TYPE_OFFSET] !== SEALED_FRAME_TYPE) return null;
  nonceOf(nonce, frame);
  const decipher = createDecipheriv('aes-256-gcm', key, nonce);
  decipher.setAAD(frame.subarray(0, SEALED_HOP_OFFSET));
  decipher.setAuthTag(frame.subarray(SEALED_HEADER_LEN + len));
  const packet = decipher.update(frame.subarray(SEALED_HEADER_LEN, SEALED_HEADER_LEN + len));
  try {
    decipher.final();
  } catch {
    return null; // "Unsupported state or unable to authenticate data"
  }
  return packet;
}

/** The frame counter of a sealed frame, or -1 above MAX_COUNTER (never sealed by a TinCan node). */
export function frameCounter(frame: Buffer): number {
  const hi = frame.readUInt32BE(SEALED_COUNTER_OFFSET);
  if (hi > 0x1fffff) return -1;
  return hi * TWO_32 + frame.readUInt32BE(SEALED_COUNTER_OFFSET + 4);
}

function writeCounter(buf: Buffer, at: number, counter: number): void {
  buf.writeUInt32BE(Math.floor(counter / TWO_32), at);
  buf.writeUInt32BE(counter >>> 0, at + 4);
}

/** 96-bit nonce: four zero bytes, then the frame's 64-bit counter. */
function nonceOf(nonce: Buffer, frame: Buffer): void {
  nonce.fill(0, 0, 4);
  frame.copy(nonce, 4, SEALED_COUNTER_OFFSET, SEALED_COUNTER_OFFSET + 8);
}

/**
 * Which counters of one (source, epoch) were accepted: any above the highest so far, or one at most
 * REPLAY_WINDOW below it not seen before (data channels are unordered, relays may reorder).
 */
export class ReplayWindow {
  private top = -1;
  private readonly bits = new Uint32Array(REPLAY_WINDOW / 32);

  /** Whether `counter` would be accepted (checked before the frame is authenticated). */
  fresh(counter: number): boolean {
    if (counter > this.top) return true;
    if (this.top - counter >= REPLAY_WINDOW) return false;
    const i = counter % REPLAY_WINDOW;
    return (this.bits[i >>> 5]! & (1 << (i & 31))) === 0;
  }

  /** Records an authenticated, fresh counter. */
  accept(counter: number): void {
    if (counter > this.top) {
      if (this.top < 0 || counter - this.top >= REPLAY_WINDOW) this.bits.fill(0);
      else for (let c = this.top + 1; c < counter; c++) this.clear(c % REPLAY_WINDOW);
      this.top = counter;
    }
    const i = counter % REPLAY_WINDOW;
    this.bits[i >>> 5]! |= 1 << (i & 31);
  }

  private clear(i: number): void {
    this.bits[i >>> 5]! &= ~(1 << (i & 31));
  }
}

/** One sender epoch of one source: its key and replay window. */
interface ReceiveEpoch {
  hi: number;
  lo: number;
  key: Buffer;
  window: ReplayWindow;
}

/** What this node holds for one peer with a trusted certificate. */
interface PeerSealState {
  readonly fingerprint: string;
  /** ECDH secret; null when the certificate's key is not P-256 (nothing can be sealed with it). */
  readonly shared: Buffer | null;
  /** Our frames to this peer in our epoch: derived on first use (needs our UID). */
  sendKey: Buffer | null;
  /** Most recently used first; at most LIVE_EPOCHS. */
  readonly receive: ReceiveEpoch[];
  /** The clock part (seconds) of the newest epoch authenticated from this peer; -1 before any. */
  newestEpochS: number;
}

/**
 * The sealing state of one datapath: this node's key and epoch, the frame counter, and per peer with
 * a trusted certificate its ECDH secret, send key and receive epochs. Per frame: no logging, a reused
 * output buffer; Node's cipher objects are the allocation left (docs/decisions/sealed-relayed-frames.md).
 */
export class SealedFrames {
  /** This node's current epoch (8 bytes: clock seconds, then random). */
  epoch = Buffer.alloc(8);
  private epochStartMs = 0;
  private readonly peers = new Map<Uid, PeerSealState>();
  private localUid: Buffer | null = null;
  private counter = 0;
  private out = Buffer.alloc(9200);
  private readonly nonce = Buffer.alloc(NONCE_LEN);

  constructor(
    private readonly privateKey: KeyObject,
    private readonly counters: Counters,
    private readonly now: () => number = Date.now,
  ) {
    this.rotate();
  }

  /**
   * Starts a new epoch if the current one is EPOCH_LIFETIME_MS old, or the clock jumped back as far
   * (call it about once a second).
   */
  rotateIfDue(): void {
    if (Math.abs(this.now() - this.epochStartMs) >= EPOCH_LIFETIME_MS) this.rotate();
  }

  /** A new epoch: its clock part after the last one's even if the clock went back; new send keys. */
  private rotate(): void {
    const previousS = this.epoch.readUInt32BE(0);
    this.epochStartMs = this.now();
    const epoch = Buffer.alloc(8);
    epoch.writeUInt32BE(Math.min(0xffffffff, Math.max(Math.floor(this.epochStartMs / 1000), previousS + 1)), 0);
    randomBytes(4).copy(epoch, 4);
    this.epoch = epoch;
    for (const p of this.peers.values()) p.sendKey = null;
  }

  setLocalUid(uid: Buffer): void {
    if (this.localUid?.equals(uid)) return;
    this.localUid = Buffer.from(uid);
    for (const p of this.peers.values()) {
      p.sendKey = null;
      p.receive.length = 0;
    }
  }

  /**
   * The peer's trusted certificate (null: none). The same certificate again keeps the state (its
   * replay windows above all); another one starts afresh. Returns whether frames can be sealed for it.
   */
  setPeer(uid: Uid, cert: TrustedKey | null): boolean {
    if (cert === null) {
      this.peers.delete(uid);
      return false;
    }
    const old = this.peers.get(uid);
    if (old?.fingerprint === cert.fingerprint256) return old.shared !== null;
    const shared = sharedSecret(this.privateKey, cert.publicKey);
    this.peers.set(uid, { fingerprint: cert.fingerprint256, shared, sendKey: null, receive: [], newestEpochS: -1 });
    return shared !== null;
  }

  /**
   * Per packet: the sealed frame of the IP packet `buf[off, off+len)` from this node to `dst`, in a
   * buffer reused by the next call (send it before sealing another); null, counted, when `dst` has no
   * usable trusted certificate.
   */
  seal(buf: Buffer, off: number, len: number, dst: Peer): Buffer | null {
    const p = this.peers.get(dst.uid);
    const local = this.localUid;
    if (p === undefined || p.shared === null || local === null || this.counter >= MAX_COUNTER) {
      this.counters.sealedNoKeyOut++;
      return null;
    }
    const key = (p.sendKey ??= deriveFrameKey(p.shared, this.epoch, local, dst.uidBytes));
    const need = SEALED_HEADER_LEN + len + SEALED_TAG_LEN;
    if (this.out.length < need) this.out = Buffer.alloc(need);
    const n = sealFrame(this.out, key, local, dst.uidBytes, this.epoch, this.counter++, buf, off, len, this.nonce);
    this.counters.sealedOut++;
    return this.out.subarray(0, n);
  }

  /**
   * Per frame: the IP packet of a sealed frame for this node from `src` (the peer its source UID
   * names), or null — counted — when `src` has no trusted key, the frame fails authentication or is
   * a replay (a frame too short to be sealed counts as malformed). The caller has checked that the
   * destination UID is ours.
   */
  open(frame: Buffer, src: Peer): Buffer | null {
    if (frame.length < SEALED_HEADER_LEN + SEALED_TAG_LEN) {
      this.counters.framesMalformed++;
      return null;
    }
    const p = this.peers.get(src.uid);
    const local = this.localUid;
    if (p === undefined || p.shared === null || local === null) {
      this.counters.sealedNoKeyIn++;
      return null;
    }
    const counter = frameCounter(frame);
    if (counter < 0) {
      this.counters.sealedAuthFailed++;
      return null;
    }
    const hi = frame.readUInt32BE(SEALED_EPOCH_OFFSET);
    const lo = frame.readUInt32BE(SEALED_EPOCH_OFFSET + 4);
    const receive = p.receive;
    let e: ReceiveEpoch | undefined;
    let at = 0;
    for (; at < receive.length; at++) {
      const r = receive[at]!;
      if (r.hi === hi && r.lo === lo) {
        e = r;
        break;
      }
    }
    if (e !== undefined && !e.window.fresh(counter)) {
      this.counters.sealedReplays++;
      return null;
    }
    // An epoch not live here: the source never goes back to an older one, and it must be recent.
    if (e === undefined && (hi < p.newestEpochS || hi < this.now() / 1000 - MAX_EPOCH_AGE_S)) {
      this.counters.sealedReplays++;
      return null;
    }
    const key = e?.key ?? deriveFrameKey(p.shared, frame.subarray(SEALED_EPOCH_OFFSET, SEALED_EPOCH_OFFSET + 8), src.uidBytes, local);
    const packet = openFrame(frame, key, this.nonce);
    if (packet === null) {
      this.counters.sealedAuthFailed++;
      return null;
    }
    if (e === undefined) {
      // A new epoch of this source, authenticated: it goes first, and beyond LIVE_EPOCHS the oldest
      // is forgotten (older than the newest, so it stays refused).
      e = { hi, lo, key, window: new ReplayWindow() };
      receive.unshift(e);
      if (hi > p.newestEpochS) p.newestEpochS = hi;
      if (receive.length > LIVE_EPOCHS) receive.splice(oldestEpoch(receive), 1);
    } else if (at > 0) {
      receive.splice(at, 1);
      receive.unshift(e);
    }
    e.window.accept(counter);
    this.counters.sealedIn++;
    return packet;
  }
}

/** Where the epoch with the oldest clock part is in `receive`. */
function oldestEpoch(receive: readonly ReceiveEpoch[]): number {
  let at = 0;
  for (let i = 1; i < receive.length; i++) if (receive[i]!.hi < receive[at]!.hi) at = i;
  return at;
}
