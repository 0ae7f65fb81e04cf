/**
 * Membership certificates (the format is in @tincan/protocol, member-cert.ts): making a CA key pair,
 * signing, and verifying one against what a peer's presence says. node:crypto's Ed25519 only.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import {
  MEMBER_CERT_MAX_LEN,
  MEMBER_CERT_PREFIX,
  MemberCaKey,
  MemberCert,
  MemberCertPayload,
  uidFromIp4,
  type Uid,
} from '@tincan/protocol';

/** Why a membership certificate is refused (a presence refusal reason, counted and shown). */
export type MemberCertProblem =
  | 'no_member_cert'
  | 'member_cert_malformed'
  | 'member_cert_bad_signature'
  | 'member_cert_wrong_network'
  | 'member_cert_wrong_jid'
  | 'member_cert_wrong_key'
  | 'member_cert_wrong_address'
  | 'member_cert_not_yet_valid'
  | 'member_cert_expired';

/** DER SPKI prefix of an Ed25519 public key (RFC 8410): the raw 32 bytes follow. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** The SHA-256 fingerprint of a certificate given as base64 DER, as SDP and get_state write it. */
export function certFingerprint(certBase64: string): string {
  const hex = createHash('sha256').update(Buffer.from(certBase64, 'base64')).digest('hex').toUpperCase();
  return hex.match(/../g)!.join(':');
}

/** A fresh CA key pair: the private key as PKCS#8 PEM, the public key as `ed25519:<base64url>`. */
export function generateMemberCa(): { privatePem: string; publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), publicKey: caPublicKeyText(publicKey) };
}

/** `ed25519:<base64url>` of a public (or private: its public half) Ed25519 key. */
export function caPublicKeyText(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const der = pub.export({ type: 'spki', format: 'der' });
  return `ed25519:${der.subarray(ED25519_SPKI_PREFIX.length).toString('base64url')}`;
}

/** The public key object of `ed25519:<base64url>`; throws on anything else. */
export function parseCaPublicKey(text: string): KeyObject {
  if (!MemberCaKey.safeParse(text).success) throw new Error('not a membership CA key ("ed25519:" and 43 base64url characters)');
  const raw = Buffer.from(text.slice('ed25519:'.length), 'base64url');
  if (raw.length !== 32) throw new Error('a membership CA key has 32 bytes');
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

/** Loads a CA private key (PKCS#8 PEM); throws unless it is an Ed25519 key. */
export function parseCaPrivateKey(pem: string): KeyObject {
  const key = createPrivateKey(pem);
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`not an Ed25519 key (${key.asymmetricKeyType ?? 'unknown type'})`);
  return key;
}

/** Signs a payload (validated first) into the compact text form; throws if it would not fit. */
export function signMemberCert(caPrivate: KeyObject, payload: MemberCertPayload): string {
  const p = MemberCertPayload.parse(payload);
  const body = `${MEMBER_CERT_PREFIX}.${Buffer.from(JSON.stringify(p), 'utf8').toString('base64url')}`;
  const sig = sign(null, Buffer.from(body, 'ascii'), caPrivate).toString('base64url');
  const text = `${body}.${sig}`;
  if (text.length > MEMBER_CERT_MAX_LEN) throw new Error(`the certificate would be ${text.length} characters (at most ${MEMBER_CERT_MAX_LEN}): fewer subnets`);
  return text;
}

export type DecodedMemberCert =
  | { ok: true; payload: MemberCertPayload; body: string; signature: Buffer }
  | { ok: false; problem: 'member_cert_malformed'; detail: string };

/** Splits and parses a certificate without checking its signature (tools, and the first step of verifying). */
export function decodeMemberCert(text: unknown): DecodedMemberCert {
  if (!MemberCert.safeParse(text).success) return { ok: false, problem: 'member_cert_malformed', detail: 'not of the form tcm1.<payload>.<signature>' };
  const [prefix, payloadB64, sigB64] = (text as string).split('.') as [string, string, string];
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(payloadB64, 'base64url').toString('utf8'));
  } catch {
    return { ok: false, problem: 'member_cert_malformed', detail: 'the payload is not JSON' };
  }
  const parsed = MemberCertPayload.safeParse(json);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    return { ok: false, problem: 'member_cert_malformed', detail: `payload: ${i ? `${i.path.join('.') || '(root)'}: ${i.message}` : 'invalid'}` };
  }
  const signature = Buffer.from(sigB64, 'base64url');
  if (signature.length !== 64) return { ok: false, problem: 'member_cert_malformed', detail: 'the signature is not 64 bytes' };
  return { ok: true, payload: parsed.data, body: `${prefix}.${payloadB64}`, signature };
}

/** Whether `text` is a well-formed certificate signed by `ca` (what it says is not checked). */
export function memberCertSignedBy(ca: KeyObject, text: string): boolean {
  const d = decodeMemberCert(text);
  if (!d.ok) return false;
  try {
    return verify(null, Buffer.from(d.body, 'ascii'), ca, d.signature);
  } catch {
    return false;
  }
}

/** What a presence claims, to hold a certificate against. */
export interface MemberClaim {
  network: string;
  /** The sender's bare JID (lower case). */
  bareJid: string;
  /** The fingerprint of the node certificate in the same presence. */
  fingerprint: string;
  uid: Uid;
  /** Seconds since the epoch. */
  nowS: number;
}

export type MemberCertCheck =
  | { ok: true; payload: MemberCertPayload }
  | { ok: false; problem: MemberCertProblem; detail: string; payload?: MemberCertPayload };

/**
 * Verifies a membership certificate for a presence: the CA's signature, then that it names this
 * network, the sender's bare JID, the key in its presence, an address whose SHA-1 is the UID the
 * presence announces, and that it is valid now. Never throws.
 */
export function verifyMemberCert(ca: KeyObject, text: string | null | undefined, claim: MemberClaim): MemberCertCheck {
  if (text === null || text === undefined) return { ok: false, problem: 'no_member_cert', detail: 'the presence carries no membership certificate' };
  const d = decodeMemberCert(text);
  if (!d.ok) return d;
  const p = d.payload;
  if (!memberCertSignedBy(ca, text)) return { ok: false, problem: 'member_cert_bad_signature', detail: 'not signed by this network\'s membership CA', payload: p };
  if (p.net !== claim.network) return { ok: false, problem: 'member_cert_wrong_network', detail: `for network ${JSON.stringify(p.net)}`, payload: p };
  if (p.jid !== claim.bareJid) return { ok: false, problem: 'member_cert_wrong_jid', detail: `for ${p.jid}, presence from ${claim.bareJid}`, payload: p };
  if (p.fp !== claim.fingerprint) return { ok: false, problem: 'member_cert_wrong_key', detail: `for key ${p.fp.slice(0, 23)}…, presence key ${claim.fingerprint.slice(0, 23)}…`, payload: p };
  if (uidFromIp4(p.ip4) !== claim.uid) return { ok: false, problem: 'member_cert_wrong_address', detail: `for ${p.ip4}, whose UID is not ${claim.uid.slice(0, 12)}`, payload: p };
  if (claim.nowS < p.nbf) return { ok: false, problem: 'member_cert_not_yet_valid', detail: `valid from ${new Date(p.nbf * 1000).toISOString()}`, payload: p };
  if (claim.nowS >= p.exp) return { ok: false, problem: 'member_cert_expired', detail: `expired ${new Date(p.exp * 1000).toISOString()}`, payload: p };
  return { ok: true, payload: p };
}
