import { ip4ToNumber, ip6ToBytes, uidToBytes, type Uid } from '@tincan/protocol';
import type { Link } from './link.js';

/** One remote node as the forwarding table knows it. */
export interface Peer {
  readonly uid: Uid;
  /** The UID as 20 bytes, written into frame headers without conversion. */
  readonly uidBytes: Buffer;
  /** The link to this peer, once one exists (the controller may map addresses first). */
  link: Link | null;
  readonly ip4: Set<string>;
  readonly ip6: Set<string>;
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

/**
 * Virtual IP → peer UID → link. Lookups on the per-packet path read addresses straight out of the
 * packet buffer and allocate nothing: IPv4 keys are the address as a 32-bit number, IPv6 keys a
 * 32-bit hash of the 16 bytes with the full address compared on a hit.
 */
export class ForwardingTable {
  private readonly peers = new Map<Uid, Peer>();
  private readonly v4 = new Map<number, Peer>();
  private readonly v6 = new Map<number, Route6[]>();

  peer(uid: Uid): Peer | undefined {
    return this.peers.get(uid);
  }

  /** The peer record for a UID, created empty if it does not exist yet. */
  ensurePeer(uid: Uid): Peer {
    let p = this.peers.get(uid);
    if (!p) {
      p = { uid, uidBytes: uidToBytes(uid), link: null, ip4: new Set(), ip6: new Set(), translate4: null };
      this.peers.set(uid, p);
    }
    return p;
  }

  allPeers(): IterableIterator<Peer> {
    return this.peers.values();
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
    const key = hash16(address, 0);
    const bucket = this.v6.get(key);
    if (bucket) bucket.push({ address, peer: p });
    else this.v6.set(key, [{ address, peer: p }]);
  }

  unmap6(uid: Uid, ip: string): void {
    const address = ip6ToBytes(ip);
    const bucket = this.v6.get(hash16(address, 0));
    const route = bucket?.find((r) => r.address.equals(address));
    if (route && route.peer.uid === uid) this.unmap6Bytes(address);
    this.dropIfEmpty(uid);
  }

  /** Forgets everything about a peer: its addresses and its link reference. */
  removePeer(uid: Uid): void {
    const p = this.peers.get(uid);
    if (!p) return;
    for (const ip of [...p.ip4]) this.unmap4(uid, ip);
    for (const ip of [...p.ip6]) this.unmap6(uid, ip);
    this.peers.delete(uid);
  }

  /** Per-packet: the peer owning the IPv4 address stored big-endian at buf[offset..offset+4). */
  lookup4(buf: Buffer, offset: number): Peer | undefined {
    return this.v4.get(buf.readUInt32BE(offset));
  }

  /** Per-packet: the peer owning the IPv6 address stored at buf[offset..offset+16). */
  lookup6(buf: Buffer, offset: number): Peer | undefined {
    const bucket = this.v6.get(hash16(buf, offset));
    if (!bucket) return undefined;
    for (let i = 0; i < bucket.length; i++) {
      const r = bucket[i]!;
      if (buf.compare(r.address, 0, 16, offset, offset + 16) === 0) return r.peer;
    }
    return undefined;
  }

  private unmap6Bytes(address: Buffer): void {
    const key = hash16(address, 0);
    const bucket = this.v6.get(key);
    if (!bucket) return;
    const i = bucket.findIndex((r) => r.address.equals(address));
    if (i < 0) return;
    const [route] = bucket.splice(i, 1);
    if (bucket.length === 0) this.v6.delete(key);
    for (const ip of route!.peer.ip6) if (ip6ToBytes(ip).equals(address)) route!.peer.ip6.delete(ip);
  }

  private dropIfEmpty(uid: Uid): void {
    const p = this.peers.get(uid);
    if (p && !p.link && p.ip4.size === 0 && p.ip6.size === 0) this.peers.delete(uid);
  }
}

/** FNV-1a over 16 bytes, as an unsigned 32-bit number. */
function hash16(buf: Uint8Array, offset: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < 16; i++) {
    h ^= buf[offset + i]!;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

