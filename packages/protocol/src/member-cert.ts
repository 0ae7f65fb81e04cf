import * as z from 'zod';

/**
 * Membership certificates (docs/security.md, "Membership"): a network's creator signs, with an offline
 * Ed25519 key, that a bare JID's node key may hold a virtual IPv4 address (and route some subnets) in
 * a network until a date. Compact text, carried in presence (`mcert="…"`):
 *
 *     tcm1.<payload>.<signature>
 *
 * `payload` is base64url (no padding) of the UTF-8 JSON MemberCertPayload; `signature` is base64url of
 * the 64-byte Ed25519 signature over the ASCII bytes `tcm1.<payload>` (the prefix binds the version).
 * The CA public key is written `ed25519:<base64url of its 32 raw bytes>`.
 */
export const MEMBER_CERT_PREFIX = 'tcm1';
export const MEMBER_CERT_MAX_LEN = 2048;
/** Most subnets a certificate grants. */
export const MEMBER_CERT_SUBNETS_MAX = 16;

/** A membership certificate as text (syntax only: the signature and content are checked by the verifier). */
export const MemberCert = z
  .string()
  .max(MEMBER_CERT_MAX_LEN)
  .regex(/^tcm1\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{86}$/, 'a membership certificate: tcm1.<payload>.<signature> (base64url)');
export type MemberCert = z.infer<typeof MemberCert>;

/** A membership CA public key: `ed25519:` and the raw 32-byte key in base64url. */
export const MemberCaKey = z
  .string()
  .regex(/^ed25519:[A-Za-z0-9_-]{43}$/, 'expected "ed25519:" and 43 base64url characters (tincanctl ca init prints it)');

/** SHA-256 certificate fingerprint as in SDP and get_state: 32 colon-separated upper-case hex bytes. */
export const CertFingerprint = z
  .string()
  .regex(/^[0-9A-F]{2}(:[0-9A-F]{2}){31}$/, 'a SHA-256 fingerprint: 32 colon-separated hex bytes (AB:CD:…)');

const BareJid = z.string().max(1024).regex(/^[^@/\s]+@[^@/\s]+$/, 'a bare JID (user@domain)');

/** What a membership certificate says. Times are seconds since the epoch. */
export const MemberCertPayload = z.strictObject({
  v: z.literal(1),
  /** The network id (GroupVPN network_id). */
  net: z.string().min(1).max(64),
  /** The member's bare JID, lower case. */
  jid: BareJid,
  /** The SHA-256 fingerprint of the member's node certificate (the key in its presence). */
  fp: CertFingerprint,
  /** Its virtual IPv4 address (GroupVPN: its UID is SHA-1 of it). */
  ip4: z.ipv4(),
  /** Subnets it may route for (router mode), canonical CIDR. */
  subnets: z.array(z.union([z.cidrv4(), z.cidrv6()])).max(MEMBER_CERT_SUBNETS_MAX).default([]),
  nbf: z.number().int().nonnegative(),
  exp: z.number().int().nonnegative(),
});
export type MemberCertPayload = z.infer<typeof MemberCertPayload>;
