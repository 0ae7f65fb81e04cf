import { X509Certificate, createHmac, createPrivateKey, diffieHellman, hkdfSync, timingSafeEqual, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ControllerMessage, type Uid } from '@tincan/protocol';

/**
 * Authentication of the controllers' channel. Each pair of nodes shares a 32-byte key: HKDF-SHA256
 * over ECDH (P-256) of one node's private key and the other's certificate public key, bound to both
 * UIDs. Every message carries `mac`: HMAC-SHA256 of a label, sender and receiver UIDs and the
 * message's canonical JSON (the schema's own output, `mac` left out), base64url.
 */
const MAC_LABEL = 'tincan controller channel v1\0';
const HKDF_SALT = 'tincan controller channel key v1';
/** The datapath's node key in its state directory (it is created with the node certificate). */
export const NODE_KEY_FILE = 'node-key.pem';

/** The bytes a MAC covers: the message as the schema outputs it (field order fixed), without `mac`. */
function macInput(from: Uid, to: Uid, msg: ControllerMessage): Buffer {
  const { mac: _mac, ...rest } = msg;
  const canonical = JSON.stringify(ControllerMessage.parse(rest));
  return Buffer.from(`${MAC_LABEL}${from}${to}\0${canonical}`, 'utf8');
}

/** The MAC of `msg` sent by `from` to `to` under their pair key. */
export function channelMac(key: Buffer, from: Uid, to: Uid, msg: ControllerMessage): string {
  return createHmac('sha256', key).update(macInput(from, to, msg)).digest('base64url');
}

/** Whether `msg` carries a valid MAC (constant-time comparison). */
export function verifyChannelMac(key: Buffer, from: Uid, to: Uid, msg: ControllerMessage): boolean {
  if (msg.mac === undefined) return false;
  const want = createHmac('sha256', key).update(macInput(from, to, msg)).digest();
  const got = Buffer.from(msg.mac, 'base64url');
  return got.length === want.length && timingSafeEqual(got, want);
}

/** The key two nodes share: both ends compute the same bytes (the UIDs are ordered). */
export function pairKey(privateKey: KeyObject, peerPublicKey: KeyObject, a: Uid, b: Uid): Buffer {
  const secret = diffieHellman({ privateKey, publicKey: peerPublicKey });
  const info = a < b ? `${a}${b}` : `${b}${a}`;
  return Buffer.from(hkdfSync('sha256', secret, HKDF_SALT, info, 32));
}

/** A P-256 public key from a certificate (base64 DER), or why not. */
export function certPublicKey(certB64: string): { ok: true; key: KeyObject } | { ok: false; reason: string } {
  try {
    const key = new X509Certificate(Buffer.from(certB64, 'base64')).publicKey;
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      return { ok: false, reason: 'not a P-256 key' };
    }
    return { ok: true, key };
  } catch {
    return { ok: false, reason: 'not a certificate' };
  }
}

/** Reads the node's P-256 private key (PEM) from the datapath's state directory; null if it cannot. */
export async function loadNodeKey(stateDir: string): Promise<KeyObject | null> {
  try {
    const key = createPrivateKey(await readFile(join(stateDir, NODE_KEY_FILE)));
    return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1' ? key : null;
  } catch {
    return null;
  }
}

export interface ChannelKeyringCounters {
  certs_refused: number;
}

/**
 * The pair keys of this node with its peers, from the node certificate the controller trusts for each
 * (pinned, or bound by a membership certificate — never one merely announced): a key is derived on
 * first use and kept until the peer's trusted certificate changes or the peer is forgotten. At most
 * `maxPeers` peers are remembered (the least recently derived goes first).
 */
export class ChannelKeyring {
  readonly counters: ChannelKeyringCounters = { certs_refused: 0 };
  private privateKey: KeyObject | null = null;
  private readonly peers = new Map<Uid, { cert: string; key: Buffer | null }>();

  constructor(
    private readonly self: Uid,
    private readonly maxPeers = 4096,
  ) {}

  /** This node's private key (null: none, every key is unknown). */
  setPrivateKey(key: KeyObject | null): void {
    if (key === this.privateKey) return;
    this.privateKey = key;
    this.peers.clear();
  }

  get hasPrivateKey(): boolean {
    return this.privateKey !== null;
  }

  forget(uid: Uid): void {
    this.peers.delete(uid);
  }

  /**
   * The key shared with `uid` whose trusted node certificate is `certB64` (base64 DER); null without
   * one, without our own key, or when the certificate holds no P-256 key (counted once per certificate).
   */
  key(uid: Uid, certB64: string | null): Buffer | null {
    if (certB64 === null || this.privateKey === null) return null;
    let p = this.peers.get(uid);
    if (p?.cert !== certB64) {
      const pub = certPublicKey(certB64);
      if (!pub.ok) this.counters.certs_refused++;
      p = { cert: certB64, key: pub.ok ? pairKey(this.privateKey, pub.key, this.self, uid) : null };
      this.peers.delete(uid);
      this.peers.set(uid, p);
      if (this.peers.size > this.maxPeers) this.peers.delete(this.peers.keys().next().value as Uid);
    }
    return p.key;
  }

  get size(): number {
    return this.peers.size;
  }
}
