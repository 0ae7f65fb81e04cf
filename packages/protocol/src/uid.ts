import { createHash } from 'node:crypto';
import * as z from 'zod';

/** A node UID: 160 bits, written as 40 lowercase hex digits on every JSON wire. */
export const UID_BYTES = 20;
export const Uid = z
  .string()
  .regex(/^[0-9a-f]{40}$/, 'a UID is 40 lowercase hex digits (160 bits)');
export type Uid = z.infer<typeof Uid>;

/** GroupVPN binding (paper §4.3): the UID is the SHA-1 of the virtual IPv4 address (dotted quad). */
export function uidFromIp4(ip4: string): Uid {
  return createHash('sha1').update(ip4).digest('hex');
}

export function uidToBytes(uid: Uid): Buffer {
  return Buffer.from(uid, 'hex');
}

export function uidFromBytes(buf: Uint8Array, offset = 0): Uid {
  return Buffer.from(buf.buffer, buf.byteOffset + offset, UID_BYTES).toString('hex');
}

/** The IPv6 ULA prefix of the original TinCan; a node's host part is the first 64 bits of its UID. */
export const DEFAULT_IP6_PREFIX = 'fd50:dbc:41f2:4a3c::';
export const IP6_PREFIX_LEN = 64;

/** The node's virtual IPv6 address: ULA /64 prefix + the UID's first 64 bits (paper §4.1). */
export function ip6FromUid(uid: Uid, prefix: string = DEFAULT_IP6_PREFIX): string {
  const bytes = ip6ToBytes(prefix);
  uidToBytes(uid).copy(bytes, 8, 0, 8);
  return bytesToIp6(bytes);
}

export function ip4ToNumber(ip: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4) throw new Error(`not an IPv4 address: ${ip}`);
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) throw new Error(`not an IPv4 address: ${ip}`);
    n = n * 256 + Number(p);
  }
  return n >>> 0;
}

export function numberToIp4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

export function ip6ToBytes(ip: string): Buffer {
  const out = Buffer.alloc(16);
  const halves = ip.split('::');
  if (halves.length > 2) throw new Error(`not an IPv6 address: ${ip}`);
  const head = halves[0] ? halves[0].split(':') : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  if (halves.length === 1 && head.length !== 8) throw new Error(`not an IPv6 address: ${ip}`);
  if (head.length + tail.length > (halves.length === 2 ? 7 : 8)) throw new Error(`not an IPv6 address: ${ip}`);
  const put = (groups: string[], start: number) => {
    groups.forEach((g, i) => {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw new Error(`not an IPv6 address: ${ip}`);
      out.writeUInt16BE(parseInt(g, 16), (start + i) * 2);
    });
  };
  put(head, 0);
  put(tail, 8 - tail.length);
  return out;
}

export function bytesToIp6(b: Uint8Array, offset = 0): string {
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(((b[offset + 2 * i]! << 8) | b[offset + 2 * i + 1]!).toString(16));
  // RFC 5952: compress the longest run (≥ 2) of zero groups.
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** Parses "a.b.c.d/len" or "x::y/len" into address and prefix length, with range checks. */
export function parseCidr(cidr: string): { address: string; prefix: number; family: 4 | 6 } {
  const slash = cidr.lastIndexOf('/');
  if (slash < 0) throw new Error(`not an address/prefix: ${cidr}`);
  const address = cidr.slice(0, slash);
  const prefix = Number(cidr.slice(slash + 1));
  const family = address.includes(':') ? 6 : 4;
  if (family === 4) ip4ToNumber(address);
  else ip6ToBytes(address);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128)) {
    throw new Error(`bad prefix length in ${cidr}`);
  }
  return { address, prefix, family };
}

/** Whether `address` (IPv4 or IPv6) lies inside `cidr`; false across families or for garbage. */
export function cidrContains(cidr: string, address: string): boolean {
  try {
    const { address: net, prefix, family } = parseCidr(cidr);
    if (family === 4) {
      if (address.includes(':')) return false;
      const mask = prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0;
      return ((ip4ToNumber(net) & mask) >>> 0) === ((ip4ToNumber(address) & mask) >>> 0);
    }
    if (!address.includes(':')) return false;
    const a = ip6ToBytes(net);
    const b = ip6ToBytes(address.split('%')[0]!);
    for (let bit = 0; bit < prefix; bit += 8) {
      const bits = Math.min(8, prefix - bit);
      const mask = (0xff << (8 - bits)) & 0xff;
      if ((a[bit / 8]! & mask) !== (b[bit / 8]! & mask)) return false;
    }
    return true;
  } catch {
    return false;
  }
}
