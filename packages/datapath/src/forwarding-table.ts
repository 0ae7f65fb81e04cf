import { UID_BYTES, bytesToIp6, ip4ToNumber, ip6ToBytes, numberToIp4, parseCidr, uidToBytes, type Uid } from '@tincan/protocol';
import type { Link } from './link.js';

/** One remote node as the forwarding table knows it. */
export interface Peer {
  readonly uid: Uid;
  /** The UID as 20 bytes, written into frame headers without conversion. */
  readonly uidBytes: Buffer;
  /** The link to this peer, once one exists (the controller may map addresses first). */
  link: Link | null;
  /**
   * Overlay route (set_route): when there is no up direct link, frames for this peer go on `via`'s
   * link (one hop of indirection: `via`'s own route is not followed). null: no route.
   */
  via: Peer | null;
  /** Peers whose route goes via this one: while any does, the record stays (their `via` points here). */
  routedThrough: number;
  /** vNIC packets sent to this peer on its route's link (not its direct link): get_state routes[]. */
  routePacketsOut: number;
  readonly ip4: Set<string>;
  readonly ip6: Set<string>;
  /** Router mode: the networks behind this peer (canonical CIDRs). */
  readonly subnets: Set<string>;
  /**
   * SocialVPN: the peer's IPv4 address in this node's subnet (as a number) when its IPv4 packets are
   * translated on receive (source := this, destination := our own address); null otherwise.
   */
  translate4: number | null;
}

interface Route6 {
  readonly address: Buffer;
  readonly peer: Peer;
}

interface Prefix4 {
  readonly cidr: string;
  readonly len: number;
  /** Network and mask as signed 32-bit numbers, so `(address & mask) === net` needs no conversion. */
  readonly net: number;
  readonly mask: number;
  peer: Peer;
}

interface Prefix6 {
  readonly cidr: string;
  readonly len: number;
  readonly net: Buffer;
  peer: Peer;
}

/**
 * The link a frame for `peer` leaves on: its direct link when that is up, otherwise its route's
 * `via` link when that is up; null when neither is usable. Per packet, allocation-free.
 */
export function nextHop(peer: Peer): Link | null {
  const direct = peer.link;
  if (direct !== null && direct.state === 'up') return direct;
  const via = peer.via;
  if (via === null) return null;
  const l = via.link;
  return l !== null && l.state === 'up' ? l : null;
}

/**
 * Virtual IP → peer UID → link. Lookups on the per-packet path read addresses straight out of the
 * packet buffer and allocate nothing: IPv4 keys are the address as a 32-bit number, IPv6 keys a
 * 32-bit hash of the 16 bytes with the full address compared on a hit. A miss in the exact maps falls
 * back to the routed subnets (router mode), longest prefix first. Peers are also found by the 20 UID
 * bytes of a frame header (transit), through a hash of the bytes with a full compare on a hit.
 */
export class ForwardingTable {
  private readonly peers = new Map<Uid, Peer>();
  private readonly v4 = new Map<number, Peer>();
  private readonly v6 = new Map<number, Route6[]>();
  private readonly byUidHash = new Map<number, Peer[]>();
  /** Routed subnets, longest prefix first; scanned only when the exact maps miss. */
  private readonly prefixes4: Prefix4[] = [];
  private readonly prefixes6: Prefix6[] = [];

  peer(uid: Uid): Peer | undefined {
    return this.peers.get(uid);
  }

  /** The peer record for a UID, created empty if it does not exist yet. */
  ensurePeer(uid: Uid): Peer {
    let p = this.peers.get(uid);
    if (!p) {
      p = {
        uid, uidBytes: uidToBytes(uid), link: null, via: null, routedThrough: 0, routePacketsOut: 0,
        ip4: new Set(), ip6: new Set(), subnets: new Set(), translate4: null,
      };
      this.peers.set(uid, p);
      const key = hashBytes(p.uidBytes, 0, UID_BYTES);
      const bucket = this.byUidHash.get(key);
      if (bucket) bucket.push(p);
      else this.byUidHash.set(key, [p]);
    }
    return p;
  }

  allPeers(): IterableIterator<Peer> {
    return this.peers.values();
  }

  /** Per-frame: the peer whose UID is the 20 bytes at buf[offset..offset+20), if the table has it. */
  lookupUid(buf: Buffer, offset: number): Peer | undefined {
    const bucket = this.byUidHash.get(hashBytes(buf, offset, UID_BYTES));
    if (bucket === undefined) return undefined;
    for (let i = 0; i < bucket.length; i++) {
      const p = bucket[i]!;
      if (buf.compare(p.uidBytes, 0, UID_BYTES, offset, offset + UID_BYTES) === 0) return p;
    }
    return undefined;
  }

  /**
   * Maps an IPv4 address to a UID; an address maps to exactly one UID (a later mapping moves it).
   * With `translate`, packets from the peer are rewritten to come from this address.
   */
  map4(uid: Uid, ip: string, translate = false): void {
    const key = ip4ToNumber(ip);
    const old = this.v4.get(key);
    if (old && old.uid !== uid) {
      old.ip4.delete(ip);
      if (old.translate4 === key) old.translate4 = null;
    }
    const p = this.ensurePeer(uid);
    p.ip4.add(ip);
    if (translate) p.translate4 = key;
    else if (p.translate4 === key) p.translate4 = null;
    this.v4.set(key, p);
  }

  unmap4(uid: Uid, ip: string): void {
    const key = ip4ToNumber(ip);
    if (this.v4.get(key)?.uid === uid) this.v4.delete(key);
    const p = this.peers.get(uid);
    p?.ip4.delete(ip);
    if (p?.translate4 === key) p.translate4 = null;
    this.dropIfEmpty(uid);
  }

  map6(uid: Uid, ip: string): void {
    const address = ip6ToBytes(ip);
    this.unmap6Bytes(address);
    const p = this.ensurePeer(uid);
    p.ip6.add(ip);
    const key = hashBytes(address, 0, 16);
    const bucket = this.v6.get(key);
    if (bucket) bucket.push({ address, peer: p });
    else this.v6.set(key, [{ address, peer: p }]);
  }

  unmap6(uid: Uid, ip: string): void {
    const address = ip6ToBytes(ip);
    const bucket = this.v6.get(hashBytes(address, 0, 16));
    const route = bucket?.find((r) => r.address.equals(address));
    if (route && route.peer.uid === uid) this.unmap6Bytes(address);
    this.dropIfEmpty(uid);
  }

  /**
   * Installs (`via` a UID) or removes (`via` null) the overlay route of `uid`, replacing any earlier
   * one. `via` need not have a link yet: the route is simply unusable until it has an up one.
   */
  setRoute(uid: Uid, via: Uid | null): void {
    if (via === uid) throw new Error('a route cannot go via its own destination');
    if (via === null) {
      const p = this.peers.get(uid);
      if (!p || p.via === null) return;
      const old = p.via;
      p.via = null;
      old.routedThrough--;
      this.dropIfEmpty(old.uid);
      this.dropIfEmpty(uid);
      return;
    }
    const p = this.ensurePeer(uid);
    const v = this.ensurePeer(via);
    if (p.via === v) return;
    const old = p.via;
    p.via = v;
    v.routedThrough++;
    if (old) {
      old.routedThrough--;
      this.dropIfEmpty(old.uid);
    }
  }

  /** The installed routes (for get_state). */
  routes(): { uid: Uid; via: Uid; packets_out: number }[] {
    const out: { uid: Uid; via: Uid; packets_out: number }[] = [];
    for (const p of this.peers.values()) {
      if (p.via !== null) out.push({ uid: p.uid, via: p.via.uid, packets_out: p.routePacketsOut });
    }
    return out;
  }

  /**
   * Router mode: the network `cidr` (no host bits) lies behind `uid`. A subnet maps to exactly one
   * UID (a later mapping moves it). Returns the canonical form of the CIDR, the key of the mapping.
   */
  mapSubnet(uid: Uid, cidr: string): string {
    const n = normalizeSubnet(cidr);
    const p = this.ensurePeer(uid);
    const list: (Prefix4 | Prefix6)[] = n.family === 4 ? this.prefixes4 : this.prefixes6;
    const existing = list.find((r) => r.cidr === n.cidr);
    if (existing) {
      if (existing.peer === p) return n.cidr;
      const old = existing.peer;
      old.subnets.delete(n.cidr);
      existing.peer = p;
      p.subnets.add(n.cidr);
      this.dropIfEmpty(old.uid);
      return n.cidr;
    }
    p.subnets.add(n.cidr);
    if (n.family === 4) {
      const mask = n.prefix === 0 ? 0 : (0xffffffff << (32 - n.prefix)) | 0;
      insertByLength(this.prefixes4, { cidr: n.cidr, len: n.prefix, net: n.net4 & mask, mask, peer: p });
    } else {
      insertByLength(this.prefixes6, { cidr: n.cidr, len: n.prefix, net: n.net6, peer: p });
    }
    return n.cidr;
  }

  /** Removes the subnet if it is mapped to `uid`; true if it was. */
  unmapSubnet(uid: Uid, cidr: string): boolean {
    const n = normalizeSubnet(cidr);
    const list: (Prefix4 | Prefix6)[] = n.family === 4 ? this.prefixes4 : this.prefixes6;
    const i = list.findIndex((r) => r.cidr === n.cidr);
    if (i < 0 || list[i]!.peer.uid !== uid) return false;
    list.splice(i, 1);
    this.peers.get(uid)?.subnets.delete(n.cidr);
    this.dropIfEmpty(uid);
    return true;
  }

  /** The UID a subnet is mapped to, if any (`cidr` in any form parseCidr accepts). */
  subnetOwner(cidr: string): Uid | undefined {
    const n = normalizeSubnet(cidr);
    const list: (Prefix4 | Prefix6)[] = n.family === 4 ? this.prefixes4 : this.prefixes6;
    return list.find((r) => r.cidr === n.cidr)?.peer.uid;
  }

  /** The routed subnets (for get_state), longest prefix first, IPv4 before IPv6. */
  subnets(): { subnet: string; uid: Uid }[] {
    return [...this.prefixes4, ...this.prefixes6].map((r) => ({ subnet: r.cidr, uid: r.peer.uid }));
  }

  /** Forgets everything about a peer: its addresses, subnets, route and link reference. */
  removePeer(uid: Uid): void {
    const p = this.peers.get(uid);
    if (!p) return;
    for (const ip of [...p.ip4]) this.unmap4(uid, ip);
    for (const ip of [...p.ip6]) this.unmap6(uid, ip);
    for (const cidr of [...p.subnets]) this.unmapSubnet(uid, cidr);
    this.setRoute(uid, null);
    // Routes through this peer go too: their `via` would otherwise point at a forgotten record.
    for (const q of [...this.peers.values()]) if (q.via === p) this.setRoute(q.uid, null);
    this.forget(p);
  }

  /** Per-packet: the peer owning the IPv4 address stored big-endian at buf[offset..offset+4). */
  lookup4(buf: Buffer, offset: number): Peer | undefined {
    const address = buf.readUInt32BE(offset);
    const exact = this.v4.get(address);
    if (exact !== undefined) return exact;
    const prefixes = this.prefixes4;
    for (let i = 0; i < prefixes.length; i++) {
      const r = prefixes[i]!;
      if ((address & r.mask) === r.net) return r.peer;
    }
    return undefined;
  }

  /** Per-packet: the peer owning the IPv6 address stored at buf[offset..offset+16). */
  lookup6(buf: Buffer, offset: number): Peer | undefined {
    const bucket = this.v6.get(hashBytes(buf, offset, 16));
    if (bucket !== undefined) {
      for (let i = 0; i < bucket.length; i++) {
        const r = bucket[i]!;
        if (buf.compare(r.address, 0, 16, offset, offset + 16) === 0) return r.peer;
      }
    }
    const prefixes = this.prefixes6;
    for (let i = 0; i < prefixes.length; i++) {
      const r = prefixes[i]!;
      if (prefixMatches6(buf, offset, r.net, r.len)) return r.peer;
    }
    return undefined;
  }

  private unmap6Bytes(address: Buffer): void {
    const key = hashBytes(address, 0, 16);
    const bucket = this.v6.get(key);
    if (!bucket) return;
    const i = bucket.findIndex((r) => r.address.equals(address));
    if (i < 0) return;
    const [route] = bucket.splice(i, 1);
    if (bucket.length === 0) this.v6.delete(key);
    for (const ip of route!.peer.ip6) if (ip6ToBytes(ip).equals(address)) route!.peer.ip6.delete(ip);
  }

  /** Drops a record nothing needs any more: no link, addresses, subnets, route, or routes through it. */
  private dropIfEmpty(uid: Uid): void {
    const p = this.peers.get(uid);
    if (
      p && !p.link && p.ip4.size === 0 && p.ip6.size === 0 && p.subnets.size === 0 &&
      p.via === null && p.routedThrough === 0
    ) {
      this.forget(p);
    }
  }

  private forget(p: Peer): void {
    if (this.peers.get(p.uid) !== p) return;
    this.peers.delete(p.uid);
    const key = hashBytes(p.uidBytes, 0, UID_BYTES);
    const bucket = this.byUidHash.get(key);
    if (!bucket) return;
    const i = bucket.indexOf(p);
    if (i >= 0) bucket.splice(i, 1);
    if (bucket.length === 0) this.byUidHash.delete(key);
  }
}

/** FNV-1a over buf[offset..offset+n), as an unsigned 32-bit number. */
function hashBytes(buf: Uint8Array, offset: number, n: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < n; i++) {
    h ^= buf[offset + i]!;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Whether the first `len` bits of buf[offset..offset+16) equal those of `net`. */
function prefixMatches6(buf: Buffer, offset: number, net: Buffer, len: number): boolean {
  const whole = len >> 3;
  for (let i = 0; i < whole; i++) if (buf[offset + i] !== net[i]) return false;
  const rest = len & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (buf[offset + whole]! & mask) === (net[whole]! & mask);
}

/** Keeps `list` sorted by prefix length, longest first (equal lengths: in insertion order). */
function insertByLength<T extends { len: number }>(list: T[], r: T): void {
  let i = 0;
  while (i < list.length && list[i]!.len >= r.len) i++;
  list.splice(i, 0, r);
}

type NormalizedSubnet =
  | { family: 4; cidr: string; prefix: number; net4: number }
  | { family: 6; cidr: string; prefix: number; net6: Buffer };

/** A CIDR in canonical form (IPv6 compressed, lowercase), with its network as a number or bytes. */
export function normalizeSubnet(cidr: string): NormalizedSubnet {
  const { address, prefix, family } = parseCidr(cidr);
  if (family === 4) {
    const n = ip4ToNumber(address);
    return { family, prefix, net4: n | 0, cidr: `${numberToIp4(n)}/${prefix}` };
  }
  const net6 = ip6ToBytes(address);
  return { family, prefix, net6, cidr: `${bytesToIp6(net6)}/${prefix}` };
}
