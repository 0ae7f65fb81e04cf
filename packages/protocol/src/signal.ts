import * as z from 'zod';
import { Uid } from './uid.js';

/**
 * What TinCan puts on XMPP. Presence carries <node xmlns=PRESENCE_NS uid=… overlay=… caps=…/>; a signal is a
 * message stanza carrying <signal xmlns=SIGNAL_NS> whose text is one JSON document of this schema.
 * The datapath validates the envelope; `data` belongs to the controllers (see controller messages).
 */
export const PRESENCE_NS = 'urn:tincan:node:1';
export const SIGNAL_NS = 'urn:tincan:signal:1';
export const MAX_SIGNAL_BYTES = 32_768;

/**
 * A capability a node announces in its presence (`caps="trickle"`, space-separated), so that a peer
 * can use it from the first message on. Today: `trickle` (the controller takes con_cand).
 */
export const NodeCap = z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, 'a capability: a lower-case token of 1–32 letters, digits and -');
export type NodeCap = z.infer<typeof NodeCap>;
/** Most capabilities a presence carries (the register_svc limit; a peer's extra ones are ignored). */
export const NODE_CAPS_MAX = 8;

/**
 * A node's certificate as its presence announces it (`cert="…"`): the DER of the node's persistent
 * DTLS certificate, base64. Its SHA-256 is the fingerprint the node's DTLS handshakes use, so a peer
 * knows the node's key (and can pin or check it) before any link exists.
 */
export const NodeCert = z
  .string()
  .max(4096)
  .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'a certificate: base64 of its DER');
export type NodeCert = z.infer<typeof NodeCert>;

export const XmppSignal = z.strictObject({
  v: z.literal(1),
  /** Sender's node UID; the receiver also checks it against the sender's presence. */
  uid: Uid,
  type: z.string().regex(/^[a-z_]{1,32}$/),
  data: z.json(),
});
export type XmppSignal = z.infer<typeof XmppSignal>;
