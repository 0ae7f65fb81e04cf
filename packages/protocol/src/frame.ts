import { UID_BYTES } from './uid.js';

/**
 * A TinCan frame on a link: [20-byte source UID][20-byte destination UID][IP packet].
 * The same layout carries unmapped packets between the datapath and its controller.
 */
export const FRAME_SRC_OFFSET = 0;
export const FRAME_DST_OFFSET = UID_BYTES;
export const FRAME_HEADER_LEN = 2 * UID_BYTES;

/** Writes the frame header in place in front of a packet (no allocation). */
export function writeFrameHeader(buf: Buffer, offset: number, src: Buffer, dst: Buffer): void {
  src.copy(buf, offset + FRAME_SRC_OFFSET, 0, UID_BYTES);
  dst.copy(buf, offset + FRAME_DST_OFFSET, 0, UID_BYTES);
}

/** IP version of the packet starting at `offset` (4, 6, or something else for garbage). */
export function ipVersion(buf: Uint8Array, offset: number): number {
  return buf[offset]! >> 4;
}

/**
 * Compact frames (direct links only). A frame whose source is the sending node and whose destination
 * is the link's own peer carries no header: the bare IP packet, on the link's second data channel
 * (COMPACT_FRAME_CHANNEL_ID); the receiver takes the link's two ends as source and destination and
 * checks the packet exactly as it checks a full frame. Every other frame (relayed, transit,
 * controller-injected) stays a full frame on FULL_FRAME_CHANNEL_ID.
 *
 * A node that takes compact frames says so with a session-level SDP attribute in the descriptions it
 * signals; a peer sends compact frames only to a node whose description carries it. libdatachannel
 * keeps an unknown session-level attribute verbatim and does nothing with it, so an older peer just
 * ignores the attribute (and sends full frames), and one whose description lacks it gets full frames.
 */
export const FULL_FRAME_CHANNEL_ID = 0;
export const COMPACT_FRAME_CHANNEL_ID = 1;
/** `a=x-tincan-frame:<framings>`: the framings (space-separated) a node takes besides full frames. */
export const FRAME_SDP_ATTRIBUTE = 'x-tincan-frame';
export const COMPACT_FRAMING = 'compact';

/**
 * Segmentation offload (`tincan-datapath --offload`, docs/architecture.md): a node that also takes
 * [virtio_net_hdr][IP packet] messages on the compact channel (a TCP super-packet for its TUN to take
 * as it is) says `offload` besides `compact`. Such a message starts with a zero nibble (the header's
 * flags byte), a bare packet with 4 or 6.
 */
export const OFFLOAD_FRAMING = 'offload';

/**
 * Latency probes (docs/architecture.md, "Latency under load"): a node that echoes probes on the compact
 * channel says `probe` besides `compact`. Only such a peer is sent probes; an older one never sees them.
 */
export const PROBE_FRAMING = 'probe';

/** What a node says it takes besides compact frames (advertiseCompactFrames). */
export interface CompactFramings {
  offload?: boolean;
  probe?: boolean;
}

/**
 * Adds `a=x-tincan-frame:compact` (and ` offload`, ` probe` as asked) at the session level of `sdp`
 * (before the first media section), keeping the description's line endings. A description that
 * already takes compact frames is returned as it is.
 */
export function advertiseCompactFrames(sdp: string, framings: CompactFramings = {}): string {
  if (acceptsCompactFrames(sdp)) return sdp;
  const eol = sdp.includes('\r\n') ? '\r\n' : '\n';
  const extra = `${framings.offload === true ? ` ${OFFLOAD_FRAMING}` : ''}${framings.probe === true ? ` ${PROBE_FRAMING}` : ''}`;
  const line = `a=${FRAME_SDP_ATTRIBUTE}:${COMPACT_FRAMING}${extra}`;
  const media = sdp.search(/(^|\n)m=/);
  if (media < 0) return sdp.endsWith(eol) || sdp === '' ? `${sdp}${line}${eol}` : `${sdp}${eol}${line}${eol}`;
  const at = sdp[media] === '\n' ? media + 1 : media;
  return `${sdp.slice(0, at)}${line}${eol}${sdp.slice(at)}`;
}

/** The framings of every session-level `a=x-tincan-frame:` attribute, or null without one. */
function sessionFramings(sdp: string): string[] | null {
  const prefix = `a=${FRAME_SDP_ATTRIBUTE}:`;
  let framings: string[] | null = null;
  for (const raw of sdp.split('\n')) {
    const line = raw.trimEnd();
    if (line.startsWith('m=')) break;
    if (line.startsWith(prefix)) (framings ??= []).push(...line.slice(prefix.length).split(' '));
  }
  return framings;
}

/**
 * Whether a peer's signaled description says it takes compact frames: a session-level (before the
 * first `m=` line) `a=x-tincan-frame:` attribute whose space-separated values include `compact`.
 * The same attribute inside a media section, a longer name or a value that merely contains the word
 * does not count. Never throws: anything else is "no" (full frames).
 */
export function acceptsCompactFrames(sdp: string): boolean {
  return sessionFramings(sdp)?.includes(COMPACT_FRAMING) ?? false;
}

/** Whether the description also takes offload messages (OFFLOAD_FRAMING) on the compact channel. */
export function acceptsOffloadFrames(sdp: string): boolean {
  const framings = sessionFramings(sdp);
  return framings !== null && framings.includes(COMPACT_FRAMING) && framings.includes(OFFLOAD_FRAMING);
}

/** Whether the description also echoes latency probes (PROBE_FRAMING) on the compact channel. */
export function acceptsProbes(sdp: string): boolean {
  const framings = sessionFramings(sdp);
  return framings !== null && framings.includes(COMPACT_FRAMING) && framings.includes(PROBE_FRAMING);
}

/**
 * Latency probes and their echoes, on the compact channel (PROBE_FRAMING). Their first byte has the
 * high nibble 0xf, which no compact message can have (an IP packet starts with 4 or 6, a
 * [virtio_net_hdr] message with 0), and they never go on the full-frame channel (whose messages start
 * with a UID, any byte at all).
 *
 *   probe: [0xf1][0][0][0][seq: u32 BE]      8 bytes
 *   echo:  [0xf2][0][0][0][seq: u32 BE]      8 bytes, sent back at once by the probe's receiver
 *
 * The prober keeps each probe's send time itself: an echo carries nothing it has to trust.
 */
export const PROBE_TYPE = 0xf1;
export const PROBE_ECHO_TYPE = 0xf2;
export const PROBE_LEN = 8;

/** True for a compact-channel message that is a probe or an echo (or claims to be one). */
export function isProbeMessage(msg: Uint8Array): boolean {
  return msg.length > 0 && msg[0]! >> 4 === 0xf;
}

/** Writes a probe (PROBE_TYPE) or an echo (PROBE_ECHO_TYPE) of `seq` into `buf` (PROBE_LEN bytes from 0); no allocation. */
export function writeProbe(buf: Buffer, type: typeof PROBE_TYPE | typeof PROBE_ECHO_TYPE, seq: number): void {
  buf.writeUInt32BE(type << 24 >>> 0, 0);
  buf.writeUInt32BE(seq >>> 0, 4);
}

/** The sequence number of a well-formed message of `type` (a probe or an echo), else -1. */
export function readProbe(msg: Buffer, type: typeof PROBE_TYPE | typeof PROBE_ECHO_TYPE): number {
  if (msg.length !== PROBE_LEN || msg.readUInt32BE(0) !== type << 24 >>> 0) return -1;
  return msg.readUInt32BE(4);
}

/**
 * Sealed frames (docs/security.md, "Relayed frames are sealed end to end"): a frame its source sends
 * through a relay is encrypted and authenticated for its destination (AES-256-GCM). It stays a full
 * frame (same UIDs in front, so relays route it as any other), and the byte where a plaintext frame's
 * IP version nibble is (4 or 6) holds SEALED_FRAME_TYPE instead:
 *
 *   [src UID 20][dst UID 20][type 1][sender epoch 8][counter 8][hop limit 1][ciphertext][tag 16]
 *
 * The authenticated data is everything before the hop limit (the one byte relays change).
 */
export const SEALED_FRAME_TYPE = 0x01;
export const SEALED_TYPE_OFFSET = FRAME_HEADER_LEN;
export const SEALED_EPOCH_OFFSET = SEALED_TYPE_OFFSET + 1;
export const SEALED_COUNTER_OFFSET = SEALED_EPOCH_OFFSET + 8;
export const SEALED_HOP_OFFSET = SEALED_COUNTER_OFFSET + 8;
/** Where the ciphertext starts; the authenticated data is frame[0, SEALED_HOP_OFFSET). */
export const SEALED_HEADER_LEN = SEALED_HOP_OFFSET + 1;
export const SEALED_TAG_LEN = 16;
/** Bytes a sealed frame adds to the full frame of the same packet. */
export const SEALED_OVERHEAD = SEALED_HEADER_LEN - FRAME_HEADER_LEN + SEALED_TAG_LEN;
/** The outer hop limit a sealed frame leaves its source with; each relay takes one off. */
export const SEALED_INITIAL_HOP_LIMIT = 16;

/** Whether the full frame `frame` is sealed (its type byte, where a plaintext frame's IP version is). */
export function isSealedFrame(frame: Uint8Array): boolean {
  return frame.length > SEALED_TYPE_OFFSET && frame[SEALED_TYPE_OFFSET] === SEALED_FRAME_TYPE;
}
