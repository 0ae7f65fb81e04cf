import * as z from 'zod';
import { IceCandidate, SessionDescription } from './rpc.js';

/**
 * Controller-to-controller signals, carried over XMPP as `send_signal {uid, type, data}` and received
 * as `signal` events. The datapath validates the envelope (XmppSignal); `data` is one of these.
 *
 * A link is negotiated in one round trip: the offerer sends `con_req` (its offer), the answerer
 * `con_resp` (its answer), or `con_reject`. `attempt` names one negotiation: the answer echoes the
 * offer's attempt, so duplicates and late messages are recognised and dropped instead of tearing a
 * working link down; a peer that restarts or re-offers uses a new attempt.
 *
 * Trickle ICE (optional): a con_req or con_resp with `trickle: true` says its sender sends the
 * candidates it gathers after its description as `con_cand` (same attempt), and takes the peer's.
 * A peer that does not know `trickle` ignores the key, never sends con_cand, and drops the sender's
 * con_cand as an unknown type: its link still comes up on the candidates in the descriptions.
 *
 * Objects are not strict: a newer controller may add keys, which older ones ignore.
 */
export const SignalType = { ConReq: 'con_req', ConResp: 'con_resp', ConReject: 'con_reject', ConCand: 'con_cand' } as const;
export type SignalType = (typeof SignalType)[keyof typeof SignalType];

/** One negotiation: 16 lowercase hex digits, random, chosen by the offerer. */
export const Attempt = z.string().regex(/^[0-9a-f]{16}$/, 'an attempt id is 16 lowercase hex digits');
export type Attempt = z.infer<typeof Attempt>;

/** Who the sender is on the overlay: GroupVPN binds the sender's UID to SHA-1(ip4). */
const identity = {
  /** The network id the sender belongs to (GroupVPN: network_id). */
  overlay: z.string().min(1).max(64),
  /** The sender's own virtual IPv4 address (no prefix length). */
  ip4: z.ipv4(),
};

export const ConReq = z.object({
  ...identity,
  attempt: Attempt,
  description: SessionDescription.refine((d) => d.type === 'offer', 'a con_req carries an offer'),
  /** The sender trickles its further candidates (con_cand) and takes ours. */
  trickle: z.boolean().optional(),
  /**
   * A repair: the sender's path to us stopped carrying. Answer it beside the current link
   * (make-before-break, create_link `repair`), which goes only once the new one is up.
   */
  repair: z.boolean().optional(),
});
export type ConReq = z.infer<typeof ConReq>;

export const ConResp = z.object({
  ...identity,
  attempt: Attempt,
  description: SessionDescription.refine((d) => d.type === 'answer', 'a con_resp carries an answer'),
  trickle: z.boolean().optional(),
});
export type ConResp = z.infer<typeof ConResp>;

/** Why a con_req was refused; the receiver backs off before it asks again. */
export const RejectReason = z.string().regex(/^[a-z_]{1,32}$/);
/** Reasons this implementation sends (others may appear from newer peers). */
export const REJECT_REASONS = ['max_links', 'address_mismatch', 'overlay_mismatch'] as const;

export const ConReject = z.object({
  reason: RejectReason,
  /** The attempt of the con_req being refused. */
  attempt: Attempt.optional(),
  message: z.string().max(256).optional(),
});
export type ConReject = z.infer<typeof ConReject>;

/** Most candidates one con_cand carries (a link gathers a handful: host, srflx, relay per family). */
export const MAX_CANDIDATES_PER_SIGNAL = 16;

/**
 * Trickle ICE: candidates the sender gathered after its description, for the link attempt `attempt`
 * (the offerer's attempt id, from either side), and/or `done` once it has gathered them all.
 */
export const ConCand = z.object({
  attempt: Attempt,
  candidates: z.array(IceCandidate).max(MAX_CANDIDATES_PER_SIGNAL).default([]),
  done: z.boolean().optional(),
});
export type ConCand = z.infer<typeof ConCand>;

export type ControllerSignal =
  | { type: 'con_req'; msg: ConReq }
  | { type: 'con_resp'; msg: ConResp }
  | { type: 'con_reject'; msg: ConReject }
  | { type: 'con_cand'; msg: ConCand };

export type ParsedControllerSignal =
  | ({ ok: true } & ControllerSignal)
  | { ok: false; unknownType: boolean; reason: string };

/** Validates a received signal; never throws, whatever `data` holds. */
export function parseControllerSignal(type: string, data: unknown): ParsedControllerSignal {
  const schema =
    type === 'con_req' ? ConReq : type === 'con_resp' ? ConResp : type === 'con_reject' ? ConReject : type === 'con_cand' ? ConCand : null;
  if (!schema) return { ok: false, unknownType: true, reason: `unknown signal type "${String(type).slice(0, 40)}"` };
  const r = schema.safeParse(data);
  if (!r.success) return { ok: false, unknownType: false, reason: z.prettifyError(r.error).slice(0, 500) };
  return { ok: true, type, msg: r.data } as ParsedControllerSignal;
}
