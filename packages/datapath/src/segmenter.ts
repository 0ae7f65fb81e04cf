/**
 * Software segmentation offload for a vNIC opened with IFF_VNET_HDR (--offload). The kernel hands
 * such a TUN "super-packets": one TCP packet of up to gso_max_size bytes whose struct virtio_net_hdr
 * (10 bytes, little-endian, in front of the IP packet) says how to cut it into MSS-sized segments
 * (gso_type, gso_size) and where its checksum is left partial (NEEDS_CSUM: csum_start, csum_offset).
 * Wherever such a packet cannot go as it is (full frames, relayed hops, a peer without the capability,
 * the controller, SocialVPN's translation), the Segmenter turns it into the ordinary packets the
 * kernel would have sent: per segment the headers copied, IPv4 total length, id and header checksum
 * or IPv6 payload length fixed, the TCP sequence number advanced, FIN/PSH on the last segment only,
 * CWR on the first only, and the full TCP checksum; a NEEDS_CSUM packet without GSO gets its partial
 * checksum completed. The output is a PacketBatch-shaped scratch area with `headroom` free bytes in
 * front of every packet, so the normal per-packet code runs on it. Nothing allocates per packet.
 */

/** sizeof(struct virtio_net_hdr): flags u8, gso_type u8, hdr_len, gso_size, csum_start, csum_offset (u16 LE). */
export const VNET_HDR_LEN = 10;
export const VNET_F_NEEDS_CSUM = 1;
export const VNET_F_DATA_VALID = 2;
export const VNET_GSO_NONE = 0;
export const VNET_GSO_TCPV4 = 1;
export const VNET_GSO_TCPV6 = 4;
export const VNET_GSO_ECN = 0x80;

/** The largest IP packet a super-packet may carry. */
const MAX_PACKET = 65535;
const PROTO_TCP = 6;
const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;
/** Largest L4 header start accepted (IPv4 with options: 60; IPv6 with a few extension headers). */
const MAX_L4_START = 256;

/** Whether the packet needs completing or segmenting before it can go anywhere but a vnet-capable TUN. */
export function vnetNeedsWork(buf: Buffer, hdrOff: number): boolean {
  return (buf[hdrOff]! & VNET_F_NEEDS_CSUM) !== 0 || buf[hdrOff + 1] !== VNET_GSO_NONE;
}

/**
 * Checks the virtio_net_hdr at `hdrOff` against the IP packet at `pktOff` (`pktLen` bytes): known
 * flags, gso_type NONE / TCPV4 / TCPV6 (with the ECN bit) matching the IP version, checksum position
 * inside the packet, a TCP header where GSO says so. Returns false for anything else (a malformed drop).
 */
export function vnetHeaderValid(buf: Buffer, hdrOff: number, pktOff: number, pktLen: number): boolean {
  const flags = buf[hdrOff]!;
  const gsoType = buf[hdrOff + 1]!;
  if ((flags & ~(VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID)) !== 0) return false;
  if (pktLen < 20 || pktLen > MAX_PACKET) return false;
  const version = buf[pktOff]! >> 4;
  if (version !== 4 && version !== 6) return false;
  const gso = gsoType & ~VNET_GSO_ECN;
  if (gso === VNET_GSO_NONE) {
    if (gsoType !== VNET_GSO_NONE) return false; // ECN without GSO
  } else if (!((gso === VNET_GSO_TCPV4 && version === 4) || (gso === VNET_GSO_TCPV6 && version === 6))) {
    return false;
  }
  if ((flags & VNET_F_NEEDS_CSUM) === 0) return gso === VNET_GSO_NONE;
  const csumStart = buf.readUInt16LE(hdrOff + 6);
  const csumOffset = buf.readUInt16LE(hdrOff + 8);
  const ipHeaderLen = version === 4 ? (buf[pktOff]! & 0x0f) * 4 : 40;
  if (version === 4 ? csumStart !== ipHeaderLen || ipHeaderLen < 20 : csumStart < 40 || csumStart > MAX_L4_START) return false;
  if (csumStart + csumOffset + 2 > pktLen) return false;
  if (gso === VNET_GSO_NONE) return csumOffset === 16 || csumOffset === 6; // TCP or UDP checksum
  const gsoSize = buf.readUInt16LE(hdrOff + 4);
  if (csumOffset !== 16 || gsoSize === 0) return false;
  if (version === 4 && buf[pktOff + 9] !== PROTO_TCP) return false;
  if (version === 6 && csumStart === 40 && buf[pktOff + 6] !== PROTO_TCP) return false;
  const tcpHeaderLen = (buf[pktOff + csumStart + 12]! >> 4) * 4;
  return tcpHeaderLen >= 20 && csumStart + tcpHeaderLen <= pktLen;
}

/** The one's-complement sum (unfolded) of buf[start, end), an odd tail padded with zero. */
function sumWords(buf: Buffer, start: number, end: number, initial: number): number {
  let s = initial;
  let i = start;
  for (; i + 1 < end; i += 2) s += (buf[i]! << 8) | buf[i + 1]!;
  if (i < end) s += buf[i]! << 8;
  return s;
}

function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

function put16(b: Buffer, i: number, v: number): void {
  b[i] = v >>> 8;
  b[i + 1] = v & 0xff;
}

/** Sum of the IPv4 (12-byte) or IPv6 (40-byte) pseudo-header for a `l4Len`-byte payload of `proto`. */
function pseudoSum(buf: Buffer, pktOff: number, version: number, proto: number, l4Len: number): number {
  return version === 4
    ? sumWords(buf, pktOff + 12, pktOff + 20, proto + l4Len)
    : sumWords(buf, pktOff + 8, pktOff + 40, proto + l4Len);
}

export class Segmenter {
  /** The output packets: packet i is buffer[offsets[i], offsets[i] + lengths[i]). Valid until the next call. */
  readonly buffer: Buffer;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  count = 0;

  /**
   * @param headroom free bytes kept in front of every output packet (e.g. a frame header's)
   * @param maxSegments the most segments one super-packet may become (bounds gso_size from below)
   */
  constructor(
    private readonly headroom: number,
    private readonly maxSegments = 1024,
  ) {
    this.buffer = Buffer.alloc(MAX_PACKET + maxSegments * (headroom + MAX_L4_START + 60));
    this.offsets = new Uint32Array(maxSegments);
    this.lengths = new Uint32Array(maxSegments);
  }

  /**
   * Turns the [virtio_net_hdr at hdrOff][IP packet at pktOff, pktLen bytes] into ordinary packets in
   * the scratch area; returns their count (also `count`), 0 if the header or packet is malformed.
   */
  process(buf: Buffer, hdrOff: number, pktOff: number, pktLen: number): number {
    this.count = 0;
    if (!vnetHeaderValid(buf, hdrOff, pktOff, pktLen)) return 0;
    const out = this.buffer;
    const gso = buf[hdrOff + 1]! & ~VNET_GSO_ECN;
    const first = this.headroom;
    if (gso === VNET_GSO_NONE) {
      buf.copy(out, first, pktOff, pktOff + pktLen);
      if ((buf[hdrOff]! & VNET_F_NEEDS_CSUM) !== 0) {
        const start = first + buf.readUInt16LE(hdrOff + 6);
        const field = start + buf.readUInt16LE(hdrOff + 8);
        // The field holds the pseudo-header sum the kernel seeded: the sum over [start, end) includes it.
        let c = ~fold(sumWords(out, start, first + pktLen, 0)) & 0xffff;
        if (c === 0 && buf.readUInt16LE(hdrOff + 8) === 6) c = 0xffff; // UDP: 0 means "no checksum"
        put16(out, field, c);
      }
      this.offsets[0] = first;
      this.lengths[0] = pktLen;
      return (this.count = 1);
    }
    return this.segmentTcp(buf, hdrOff, pktOff, pktLen);
  }

  private segmentTcp(buf: Buffer, hdrOff: number, pktOff: number, pktLen: number): number {
    const out = this.buffer;
    const version = buf[pktOff]! >> 4;
    const l4 = buf.readUInt16LE(hdrOff + 6);
    const tcpLen = (buf[pktOff + l4 + 12]! >> 4) * 4;
    const headersLen = l4 + tcpLen;
    const mss = buf.readUInt16LE(hdrOff + 4);
    const payloadLen = pktLen - headersLen;
    const segments = payloadLen <= 0 ? 1 : Math.ceil(payloadLen / mss);
    if (segments > this.maxSegments) return 0;
    const seq0 = buf.readUInt32BE(pktOff + l4 + 4);
    const id0 = version === 4 ? buf.readUInt16BE(pktOff + 4) : 0;
    const flags0 = buf[pktOff + l4 + 13]!;
    let pos = this.headroom;
    for (let i = 0; i < segments; i++) {
      const dataStart = i * mss;
      const dataLen = Math.min(mss, Math.max(payloadLen - dataStart, 0));
      const segLen = headersLen + dataLen;
      buf.copy(out, pos, pktOff, pktOff + headersLen);
      buf.copy(out, pos + headersLen, pktOff + headersLen + dataStart, pktOff + headersLen + dataStart + dataLen);
      if (version === 4) {
        put16(out, pos + 2, segLen);
        put16(out, pos + 4, (id0 + i) & 0xffff);
        put16(out, pos + 10, 0);
        put16(out, pos + 10, ~fold(sumWords(out, pos, pos + l4, 0)) & 0xffff);
      } else {
        put16(out, pos + 4, segLen - 40);
      }
      const t = pos + l4;
      out.writeUInt32BE((seq0 + dataStart) >>> 0, t + 4);
      let flags = flags0;
      if (i !== segments - 1) flags &= ~(TCP_FIN | TCP_PSH);
      if (i !== 0) flags &= ~TCP_CWR;
      out[t + 13] = flags;
      put16(out, t + 16, 0);
      const sum = sumWords(out, t, pos + segLen, pseudoSum(out, pos, version, PROTO_TCP, segLen - l4));
      put16(out, t + 16, ~fold(sum) & 0xffff);
      this.offsets[i] = pos;
      this.lengths[i] = segLen;
      pos += segLen + this.headroom;
    }
    return (this.count = segments);
  }
}
