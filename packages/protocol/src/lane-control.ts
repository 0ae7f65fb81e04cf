import * as z from 'zod';

/**
 * Lane control (datapath ↔ datapath, in-band on a link): with `tincan-datapath --lanes N`, a datapath
 * runs N-1 lane processes beside itself, each on its own queue of a multi-queue vNIC, and each keeps,
 * per peer, its own PeerConnection (a *lane link*) to the same lane of the peer's datapath. The two
 * primaries set those up, invisible to their controllers, by exchanging these messages — one UTF-8
 * JSON document each — on a reliable, ordered, negotiated data channel of the primary link
 * (LANE_CONTROL_CHANNEL_ID). Lanes used = min(ours, theirs). The primary link's offerer offers every
 * lane link; an answerer whose lane link went away asks for a new offer with `renew`.
 *
 * Everything here comes from a peer: a message that does not parse is dropped and counted.
 */
export const LANE_CONTROL_CHANNEL_ID = 2;
export const LANE_CONTROL_LABEL = 'tincan-lanes';
/** Lanes per datapath, the primary included (`--lanes`). */
export const MAX_LANES = 8;
/** A whole session description with candidates is a few KB; anything much larger is garbage. */
const MAX_SDP = 16_384;

/** A lane index on the wire: lane 0 is the primary link itself, lane links are 1..MAX_LANES-1. */
const LaneIndex = z.number().int().min(1).max(MAX_LANES - 1);

export const LaneHello = z.strictObject({ t: z.literal('hello'), lanes: z.number().int().min(1).max(MAX_LANES) });
/** `attempt` numbers the offers of one lane: an answer to an older offer than the latest is ignored. */
const Attempt = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
export const LaneOffer = z.strictObject({ t: z.literal('offer'), lane: LaneIndex, attempt: Attempt, sdp: z.string().min(1).max(MAX_SDP) });
export const LaneAnswer = z.strictObject({ t: z.literal('answer'), lane: LaneIndex, attempt: Attempt, sdp: z.string().min(1).max(MAX_SDP) });
/** The answerer's lane link is gone (its lane process restarted, or the link failed): offer again. */
export const LaneRenew = z.strictObject({ t: z.literal('renew'), lane: LaneIndex });

export const LaneControlMessage = z.discriminatedUnion('t', [LaneHello, LaneOffer, LaneAnswer, LaneRenew]);
export type LaneControlMessage = z.infer<typeof LaneControlMessage>;

/** Parses one message from a peer; null (the caller counts a drop) for anything that is not one. */
export function parseLaneControl(text: string): LaneControlMessage | null {
  if (text.length > MAX_SDP + 256) return null;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return null;
  }
  const r = LaneControlMessage.safeParse(json);
  return r.success ? r.data : null;
}

/** The SHA-256 certificate fingerprint a session description carries (upper case), or null. */
export function sdpFingerprint(sdp: string): string | null {
  const m = /^a=fingerprint:sha-256 ([0-9A-Fa-f:]+)\s*$/m.exec(sdp);
  return m ? m[1]!.toUpperCase() : null;
}
