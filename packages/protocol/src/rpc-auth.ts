import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import * as z from 'zod';

/**
 * The RPC's authentication (docs/rpc.md, "Authentication"; docs/decisions/rpc-session-auth.md).
 *
 * The datapath writes a random token (32 bytes, hex) to a 0600 file. The token never goes on the wire:
 * a client and the datapath prove to each other that they know it (HMAC over both sides' nonces,
 * `hello` / `auth`), then derive one key per direction (HKDF) for the session. Every later datagram,
 * control and packet alike, is sealed with AES-256-GCM (docs/decisions/rpc-session-auth.md: a
 * datagram of a live session can reach a squatter after the datapath died, so payloads are encrypted,
 * not only authenticated):
 *
 *   [version 0x03][type][session id: u32][sequence: u64][encrypted payload][tag: 16 bytes]
 *
 * The 12 bytes of session id and sequence number are the GCM nonce (unique: a key per direction and
 * session, the sequence number never repeats), the 14-byte header the additional data. The sequence
 * number starts at 1 in each direction and is checked against a window of the last 32 (replay).
 * Handshake messages and errors to unauthenticated senders are plain JSON of type 0x04.
 */
export const RPC_SEAL_HEADER_LEN = 14;
export const RPC_TAG_LEN = 16;
export const RPC_SEAL_OVERHEAD = RPC_SEAL_HEADER_LEN + RPC_TAG_LEN;
/** Bytes of a token (hex in its file) and of a handshake nonce. */
export const RPC_TOKEN_BYTES = 32;
export const RPC_NONCE_BYTES = 32;
const REPLAY_WINDOW = 32;
/** The controller's session sends a keepalive this often (once it registered with set_cb_endpoint)... */
export const RPC_KEEPALIVE_MS = 1_000;
/** ...and the datapath forgets it as controller after this long without any datagram from it. */
export const RPC_CONTROLLER_TIMEOUT_MS = 5_000;

const Hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lower-case hex digits');
const SessionId = z.number().int().min(1).max(0xffff_ffff);

/** Client → datapath, plain: opens a handshake with the client's nonce. */
export const HelloRequest = z.strictObject({ tid: z.number().int().nonnegative(), m: z.literal('hello'), nonce: Hex64 });
/** Datapath → client, plain: the session id, the datapath's nonce and its proof of the token. */
export const HelloResult = z.strictObject({ session: SessionId, nonce: Hex64, proof: Hex64 });
/** Client → datapath, plain: the client's proof; the datapath answers sealed (`{}`) or with an error. */
export const AuthRequest = z.strictObject({
  tid: z.number().int().nonnegative(),
  m: z.literal('auth'),
  session: SessionId,
  proof: Hex64,
});
export const HandshakeRequest = z.discriminatedUnion('m', [HelloRequest, AuthRequest]);
export type HandshakeRequest = z.infer<typeof HandshakeRequest>;

/** Reads a token file's text: 64 hex digits (and a newline). */
export function parseRpcToken(text: string): Buffer {
  const t = text.trim();
  if (!/^[0-9a-f]{64}$/.test(t)) throw new Error('the RPC token file does not hold a token (64 hex digits)');
  return Buffer.from(t, 'hex');
}

export function newRpcToken(): Buffer {
  return randomBytes(RPC_TOKEN_BYTES);
}

export function newRpcNonce(): string {
  return randomBytes(RPC_NONCE_BYTES).toString('hex');
}

function transcript(clientNonce: string, datapathNonce: string, session: number): Buffer {
  const b = Buffer.alloc(RPC_NONCE_BYTES * 2 + 4);
  Buffer.from(clientNonce, 'hex').copy(b, 0);
  Buffer.from(datapathNonce, 'hex').copy(b, RPC_NONCE_BYTES);
  b.writeUInt32BE(session, RPC_NONCE_BYTES * 2);
  return b;
}

/** The proof of one side (`datapath` or `client`: different labels, so neither can reflect the other's). */
export function rpcProof(token: Buffer, side: 'datapath' | 'client', clientNonce: string, datapathNonce: string, session: number): string {
  return createHmac('sha256', token).update(`tincan-rpc ${side} proof\0`).update(transcript(clientNonce, datapathNonce, session)).digest('hex');
}

/** Constant-time comparison of two hex proofs. */
export function proofMatches(expected: string, got: string): boolean {
  return expected.length === got.length && timingSafeEqual(Buffer.from(expected), Buffer.from(got));
}

export type OpenedDatagram =
  | { ok: true; type: number; payload: Buffer }
  | { ok: false; reason: 'tag' | 'replay' };

/**
 * One side of an authenticated session: seals what it sends, opens what it receives. `side` is who
 * holds this object; each direction has its own key, so a datagram cannot be reflected to its sender.
 */
export class RpcSessionKeys {
  private readonly sendKey: Buffer;
  private readonly recvKey: Buffer;
  private sendSeq = 0;
  private recvMax = 0;
  /** Bit i: sequence number recvMax − i was received (bit 0: recvMax itself). */
  private recvSeen = 0;

  constructor(
    readonly session: number,
    token: Buffer,
    side: 'datapath' | 'client',
    clientNonce: string,
    datapathNonce: string,
  ) {
    const salt = transcript(clientNonce, datapathNonce, session);
    const key = (dir: string) => Buffer.from(hkdfSync('sha256', token, salt, `tincan-rpc ${dir}`, 32));
    const c2d = key('client to datapath');
    const d2c = key('datapath to client');
    this.sendKey = side === 'client' ? c2d : d2c;
    this.recvKey = side === 'client' ? d2c : c2d;
  }

  /** [version][type][session][seq][payload][tag]: `version` is the caller's RPC version byte. */
  seal(version: number, type: number, payload: Buffer): Buffer {
    const out = Buffer.allocUnsafe(RPC_SEAL_OVERHEAD + payload.length);
    out[0] = version;
    out[1] = type;
    out.writeUInt32BE(this.session, 2);
    const seq = ++this.sendSeq;
    out.writeUInt32BE(Math.floor(seq / 0x1_0000_0000), 6);
    out.writeUInt32BE(seq >>> 0, 10);
    const c = createCipheriv('aes-256-gcm', this.sendKey, out.subarray(2, RPC_SEAL_HEADER_LEN), { authTagLength: RPC_TAG_LEN });
    c.setAAD(out.subarray(0, RPC_SEAL_HEADER_LEN));
    const n = c.update(payload).copy(out, RPC_SEAL_HEADER_LEN);
    c.final();
    c.getAuthTag().copy(out, RPC_SEAL_HEADER_LEN + n);
    return out;
  }

  /**
   * Verifies and decrypts a sealed datagram of this session (the caller read its session id), then
   * checks its sequence number.
   */
  open(buf: Buffer): OpenedDatagram {
    if (buf.length < RPC_SEAL_OVERHEAD) return { ok: false, reason: 'tag' };
    const end = buf.length - RPC_TAG_LEN;
    let payload: Buffer;
    try {
      const d = createDecipheriv('aes-256-gcm', this.recvKey, buf.subarray(2, RPC_SEAL_HEADER_LEN), { authTagLength: RPC_TAG_LEN });
      d.setAAD(buf.subarray(0, RPC_SEAL_HEADER_LEN));
      d.setAuthTag(buf.subarray(end));
      payload = d.update(buf.subarray(RPC_SEAL_HEADER_LEN, end));
      d.final();
    } catch {
      return { ok: false, reason: 'tag' };
    }
    const seq = buf.readUInt32BE(6) * 0x1_0000_0000 + buf.readUInt32BE(10);
    if (!this.accept(seq)) return { ok: false, reason: 'replay' };
    return { ok: true, type: buf[1]!, payload };
  }

  private accept(seq: number): boolean {
    if (seq === 0) return false;
    if (seq > this.recvMax) {
      const shift = seq - this.recvMax;
      this.recvSeen = shift >= REPLAY_WINDOW ? 1 : ((this.recvSeen << shift) | 1) >>> 0;
      this.recvMax = seq;
      return true;
    }
    const back = this.recvMax - seq;
    if (back >= REPLAY_WINDOW) return false;
    const bit = (1 << back) >>> 0;
    if ((this.recvSeen & bit) !== 0) return false;
    this.recvSeen = (this.recvSeen | bit) >>> 0;
    return true;
  }
}

/** The session id of a sealed datagram (no check of anything else). */
export function sealedSessionId(buf: Buffer): number | null {
  return buf.length >= RPC_SEAL_OVERHEAD ? buf.readUInt32BE(2) : null;
}
