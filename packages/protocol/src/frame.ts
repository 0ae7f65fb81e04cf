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
