/**
 * SocialVPN IPv4 address translation (paper §4.3), applied to packets received from a peer whose
 * mapping has `translate` set: the source becomes the peer's address in *our* subnet, the destination
 * our own vNIC address. Runs once per packet, so it allocates nothing and fixes every checksum
 * incrementally (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')) instead of summing the packet again.
 *
 * One's-complement note: a changed 16-bit word m → m' contributes ~m + m'. When the contributions of
 * all changed words sum to (±)0 — nothing changed, or the changes cancel out — the checksum is kept
 * as is, so untouched packets stay byte-identical. Otherwise the result is exactly what a full
 * recomputation gives (never 0xFFFF for a canonical input); only UDP then maps a computed 0 to 0xFFFF
 * (RFC 768: 0 means "no checksum", which is kept as 0).
 */

const PROTO_ICMP = 1;
const PROTO_TCP = 6;
const PROTO_UDP = 17;

/** Offset of the checksum field inside a TCP / UDP header. */
const TCP_CSUM = 16;
const UDP_CSUM = 6;

function get16(b: Buffer, i: number): number {
  return (b[i]! << 8) | b[i + 1]!;
}

function put16(b: Buffer, i: number, v: number): void {
  b[i] = v >>> 8;
  b[i + 1] = v & 0xff;
}

function get32(b: Buffer, i: number): number {
  return ((b[i]! << 24) | (b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!) >>> 0;
}

function put32(b: Buffer, i: number, v: number): void {
  b[i] = v >>> 24;
  b[i + 1] = (v >>> 16) & 0xff;
  b[i + 2] = (v >>> 8) & 0xff;
  b[i + 3] = v & 0xff;
}

/** ~m + m' for one 16-bit word (unfolded; callers add a handful of these and `adjust` folds). */
function wordDelta(oldWord: number, newWord: number): number {
  return (~oldWord & 0xffff) + newWord;
}

/** wordDelta for both 16-bit halves of a 32-bit value (an IPv4 address). */
function addrDelta(oldAddr: number, newAddr: number): number {
  return wordDelta(oldAddr >>> 16, newAddr >>> 16) + wordDelta(oldAddr & 0xffff, newAddr & 0xffff);
}

/** RFC 1624 eqn. 3: the checksum `hc` updated by a sum of wordDelta contributions. */
function adjust(hc: number, delta: number): number {
  while (delta > 0xffff) delta = (delta & 0xffff) + (delta >>> 16);
  if (delta === 0 || delta === 0xffff) return hc; // the covered data's sum did not change
  let s = (~hc & 0xffff) + delta;
  s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/**
 * Adjusts a TCP or UDP checksum at `pos` by `delta` (a pseudo-header change) and returns the
 * wordDelta of the checksum field itself, for an enclosing checksum (ICMP) that covers it.
 */
function fixL4(buf: Buffer, pos: number, proto: number, delta: number): number {
  const old = get16(buf, pos);
  if (proto === PROTO_UDP && old === 0) return 0; // UDP without checksum stays so
  let hc = adjust(old, delta);
  if (proto === PROTO_UDP && hc === 0) hc = 0xffff;
  put16(buf, pos, hc);
  return wordDelta(old, hc);
}

/** Where the TCP/UDP checksum field of a transport header at `l4` is, or -1 for other protocols. */
function l4ChecksumPos(proto: number, l4: number): number {
  return proto === PROTO_TCP ? l4 + TCP_CSUM : proto === PROTO_UDP ? l4 + UDP_CSUM : -1;
}

function isIcmpError(type: number): boolean {
  return type === 3 || type === 4 || type === 5 || type === 11 || type === 12;
}

/**
 * ICMP error at buf[icmp, end): the quoted packet is one we sent, seen after the peer's translation
 * (source = us in the peer's subnet, destination = the peer itself). Restores our view — source :=
 * ourAddr, destination := peerAddr — with its IP and TCP/UDP checksums and the ICMP checksum.
 * Fewer than 20 quoted bytes: nothing to rewrite, true. A quoted header that is not IPv4: false,
 * with nothing written.
 */
function translateIcmpError(buf: Buffer, icmp: number, end: number, ourAddr: number, peerAddr: number): boolean {
  const e = icmp + 8;
  if (end - e < 20) return true;
  const vihl = buf[e]!;
  if (vihl >>> 4 !== 4 || (vihl & 0x0f) < 5) return false;

  const dAddr = addrDelta(get32(buf, e + 12), ourAddr) + addrDelta(get32(buf, e + 16), peerAddr);
  put32(buf, e + 12, ourAddr);
  put32(buf, e + 16, peerAddr);
  let dIcmp = dAddr;

  const oldIpSum = get16(buf, e + 10);
  const newIpSum = adjust(oldIpSum, dAddr);
  put16(buf, e + 10, newIpSum);
  dIcmp += wordDelta(oldIpSum, newIpSum);

  if ((get16(buf, e + 6) & 0x1fff) === 0) {
    const proto = buf[e + 9]!;
    const pos = l4ChecksumPos(proto, e + (vihl & 0x0f) * 4);
    if (pos >= 0 && pos + 2 <= end) dIcmp += fixL4(buf, pos, proto, dAddr);
  }
  put16(buf, icmp + 2, adjust(get16(buf, icmp + 2), dIcmp));
  return true;
}

/**
 * Rewrites, in place, the IPv4 packet buf[off, off+len): source := newSrc, destination := newDst
 * (both uint32), fixing the IP header checksum and — in the first fragment, when the field is within
 * the packet — the TCP/UDP checksum. In ICMP errors the quoted packet gets source := newDst and
 * destination := newSrc (see translateIcmpError). Never writes outside buf[off, off+len).
 * Returns false, with the packet untouched, if it is not a well-formed IPv4 packet (bad version, IHL
 * or total length, or an ICMP error quoting something that is not IPv4): the caller drops it.
 */
export function translateIPv4(buf: Buffer, off: number, len: number, newSrc: number, newDst: number): boolean {
  if (!Number.isInteger(off) || !Number.isInteger(len) || off < 0 || len < 20 || off + len > buf.length) return false;
  const vihl = buf[off]!;
  const hl = (vihl & 0x0f) * 4;
  if (vihl >>> 4 !== 4 || hl < 20) return false;
  const total = get16(buf, off + 2);
  if (total > len || total < hl) return false;
  newSrc >>>= 0;
  newDst >>>= 0;

  const end = off + total; // link-layer padding past the total length is not ours to touch
  const l4 = off + hl;
  const proto = buf[off + 9]!;
  const firstFragment = (get16(buf, off + 6) & 0x1fff) === 0;
  // The ICMP payload first: it is the one part that can still reject the packet.
  if (firstFragment && proto === PROTO_ICMP && l4 + 8 <= end && isIcmpError(buf[l4]!)) {
    if (!translateIcmpError(buf, l4, end, newDst, newSrc)) return false;
  }

  const delta = addrDelta(get32(buf, off + 12), newSrc) + addrDelta(get32(buf, off + 16), newDst);
  put32(buf, off + 12, newSrc);
  put32(buf, off + 16, newDst);
  put16(buf, off + 10, adjust(get16(buf, off + 10), delta));

  if (firstFragment) {
    const pos = l4ChecksumPos(proto, l4);
    if (pos >= 0 && pos + 2 <= end) fixL4(buf, pos, proto, delta);
  }
  return true;
}

/**
 * Forwarding: decrements the TTL of the IPv4 header at buf[off, off+20), in place, and updates the
 * header checksum incrementally (RFC 1624 eqn. 3). The TTL shares its 16-bit word with the protocol
 * byte, so the word drops by 0x100. The caller has checked that the TTL is above 1 and that the 20
 * bytes are there. The result equals a full recomputation (never a negative zero, see `adjust`).
 */
export function decrementIPv4Ttl(buf: Buffer, off: number): void {
  const word = get16(buf, off + 8);
  const next = word - 0x100;
  put16(buf, off + 8, next);
  put16(buf, off + 10, adjust(get16(buf, off + 10), wordDelta(word, next)));
}

/**
 * The Internet checksum (RFC 1071) of buf[off, off+len): the one's complement of the one's-complement
 * sum of its 16-bit words, an odd last byte padded with zero. Over an IPv4 header whose checksum field
 * is zeroed it gives the field's value; over a header with its checksum in place, 0 means valid.
 */
export function ipv4Checksum(buf: Buffer, off: number, len: number): number {
  let s = 0;
  const end = off + len;
  let i = off;
  for (; i + 1 < end; i += 2) {
    s += get16(buf, i);
    if (s > 0x7fffffff) s = (s & 0xffff) + (s >>> 16);
  }
  if (i < end) s += buf[i]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}
