// inside (TUN -> link) and outside (link -> TUN) with stand-ins for the link and the vNIC; the lab
// tests run the same code between real datapaths.
import { describe, expect, it } from 'vitest';
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import {
  FRAME_HEADER_LEN, SEALED_HEADER_LEN, SEALED_HOP_OFFSET, SEALED_INITIAL_HOP_LIMIT, SEALED_OVERHEAD, SEALED_TAG_LEN, ip4ToNumber, ip6ToBytes,
  isSealedFrame, uidFromIp4, uidToBytes, type Uid,
} from '@tincan/protocol';
import { Counters } from '../src/counters.js';
import { ForwardingTable } from '../src/forwarding-table.js';
import { SealedFrames } from '../src/sealing.js';
import { Inside } from '../src/inside.js';
import type { Link } from '../src/link.js';
import { Outside } from '../src/outside.js';
import { VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, VNET_HDR_LEN } from '../src/segmenter.js';
import { ipv4Checksum } from '../src/translator.js';
import type { Vnic } from '../src/vnic.js';

const LOCAL = uidFromIp4('10.254.0.1');
const PEER = uidFromIp4('10.254.0.2');
const OTHER = uidFromIp4('10.254.0.3');
const FAR = uidFromIp4('10.254.0.4');

/** Every node's P-256 key pair (as a node key), for sealed relayed frames (sealing.ts). */
const KEYS = new Map<Uid, { privateKey: KeyObject; publicKey: KeyObject }>(
  [LOCAL, PEER, OTHER, FAR].map((u) => [u, generateKeyPairSync('ec', { namedCurve: 'prime256v1' })]),
);
const trusted = (u: Uid) => ({ fingerprint256: u, publicKey: KEYS.get(u)!.publicKey });

/** Node `u`'s sealing state, trusting `peers`' keys. */
function sealerOf(u: Uid, ...peers: Uid[]) {
  const counters = new Counters();
  const sealed = new SealedFrames(KEYS.get(u)!.privateKey, counters);
  sealed.setLocalUid(uidToBytes(u));
  for (const p of peers) sealed.setPeer(p, trusted(p));
  const table = new ForwardingTable();
  return {
    counters,
    /** A frame `u` sealed for `dst`: a copy. */
    seal: (dst: Uid, packet: Buffer) => Buffer.from(sealed.seal(packet, 0, packet.length, table.ensurePeer(dst))!),
    /** The packet of a frame sealed for `u` by `src`, or null. */
    open: (src: Uid, f: Buffer) => sealed.open(Buffer.from(f), table.ensurePeer(src)),
  };
}
/** The other nodes, each trusting every other: they seal frames for LOCAL and open what it seals. */
const NODES = new Map([PEER, OTHER, FAR].map((u) => [u, sealerOf(u, LOCAL, PEER, OTHER, FAR)]));
const sealedFrame = (src: Uid, dst: Uid, packet: Buffer) => NODES.get(src)!.seal(dst, packet);

function ip4Packet(src: string, dst: string, proto = 17): Buffer {
  const p = Buffer.alloc(28);
  p[0] = 0x45;
  p.writeUInt16BE(28, 2);
  p[8] = 64;
  p[9] = proto;
  p.writeUInt32BE(ip4ToNumber(src), 12);
  p.writeUInt32BE(ip4ToNumber(dst), 16);
  return p;
}

/** An IPv4 packet with random header fields and a correct header checksum. */
function ip4PacketWithChecksum(src: string, dst: string, ttl: number): Buffer {
  const p = ip4Packet(src, dst);
  randomBytes(6).copy(p, 1); // TOS, total length (rewritten below), identification, flags
  p.writeUInt16BE(28, 2);
  p[6]! &= 0x5f;
  p[8] = ttl;
  p.writeUInt16BE(ipv4Checksum(p, 0, 20), 10);
  return p;
}

function ip6Packet(src: string, dst: string, hopLimit = 64): Buffer {
  const p = Buffer.alloc(48);
  p[0] = 0x60;
  p.writeUInt16BE(8, 4);
  p[6] = 17;
  p[7] = hopLimit;
  ip6ToBytes(src).copy(p, 8);
  ip6ToBytes(dst).copy(p, 24);
  return p;
}

function frame(src: string, dst: string, packet: Buffer): Buffer {
  return Buffer.concat([uidToBytes(src), uidToBytes(dst), packet]);
}

function fakeLink(uid: string, up = true) {
  const sent: Buffer[] = [];
  /** Compact frames sent (bare packets on the compact channel). */
  const compactSent: Buffer[] = [];
  const link = {
    uid,
    state: up ? 'up' : 'connecting',
    /** Set to make an up link refuse frames, as back-pressure does. */
    full: false,
    /** The peer takes compact frames and their channel is open. */
    sendsCompact: false,
    /** --offload: the peer takes [virtio_net_hdr][packet] messages; we advertised them (takesOffload). */
    sendsOffload: false,
    takesOffload: false,
    counters: { dropsSpoofed: 0, dropsMalformed: 0, dropsBackpressure: 0, compactOut: 0 },
    send(f: Buffer) {
      return link.accept(f, sent);
    },
    sendCompact(p: Buffer) {
      if (!link.sendsCompact || !link.accept(p, compactSent)) return false;
      link.counters.compactOut++;
      return true;
    },
    accept(f: Buffer, into: Buffer[]) {
      if (link.state !== 'up') return false;
      if (link.full) {
        link.counters.dropsBackpressure++;
        return false;
      }
      into.push(Buffer.from(f));
      return true;
    },
  };
  return { link: link as unknown as Link, sent, compactSent, counters: link.counters, fake: link };
}

/**
 * A TUN read batch as the addon hands it over: one buffer, each packet after FRAME_HEADER_LEN of headroom
 * (with --offload, its virtio_net_hdr in the last 10 bytes of it: give [header][packet] then).
 */
function batchOf(...packets: Buffer[]) {
  return vnetBatchOf(0, ...packets);
}

function vnetBatchOf(vnetLen: number, ...packets: Buffer[]) {
  const slot = FRAME_HEADER_LEN + 5000;
  const buffer = Buffer.alloc(slot * packets.length);
  const offsets = new Uint32Array(packets.length);
  const lengths = new Uint32Array(packets.length);
  packets.forEach((p, i) => {
    offsets[i] = i * slot + FRAME_HEADER_LEN;
    lengths[i] = p.length - vnetLen;
    p.copy(buffer, offsets[i]! - vnetLen);
  });
  return { buffer, offsets, lengths, count: packets.length };
}

function setup(offload = false) {
  const table = new ForwardingTable();
  const counters = new Counters();
  const delivered: Buffer[] = [];
  /** --offload: [virtio_net_hdr][packet] written to the vNIC as they are. */
  const deliveredVnet: Buffer[] = [];
  const toController: Buffer[] = [];
  const vnic = {
    write: (p: Buffer, off = 0) => delivered.push(Buffer.from(p.subarray(off))),
    writeVnet: (p: Buffer, off: number) => deliveredVnet.push(Buffer.from(p.subarray(off))),
  } as unknown as Vnic;
  const sink = { unmapped: (f: Buffer) => toController.push(Buffer.from(f)), transit: (f: Buffer) => toController.push(Buffer.from(f)) };
  // LOCAL trusts PEER's, OTHER's and FAR's keys (set_peer_cert).
  const sealed = new SealedFrames(KEYS.get(LOCAL)!.privateKey, counters);
  sealed.setLocalUid(uidToBytes(LOCAL));
  for (const u of [PEER, OTHER, FAR]) sealed.setPeer(u, trusted(u));
  const outside = new Outside(table, sink, counters, offload, sealed);
  outside.attach(uidToBytes(LOCAL), vnic, ip4ToNumber('10.254.0.1'));
  const inside = new Inside(table, sink, counters, offload, sealed);
  inside.setLocalUid(uidToBytes(LOCAL));
  return { table, counters, delivered, deliveredVnet, toController, outside, inside, sealed };
}

describe('outside: frames from a link', () => {
  it('delivers a frame from the link peer whose inner source is mapped to that peer', () => {
    const s = setup();
    const l = fakeLink(PEER);
    s.table.map4(PEER, '10.254.0.2');
    s.table.ensurePeer(PEER).link = l.link;
    s.outside.onFrame(l.link, frame(PEER, LOCAL, ip4Packet('10.254.0.2', '10.254.0.1')));
    expect(s.delivered).toHaveLength(1);
    expect(s.delivered[0]!.readUInt32BE(12)).toBe(ip4ToNumber('10.254.0.2'));
  });

  it('drops and counts spoofed source UIDs, spoofed inner addresses and garbage; hands transit to the controller', () => {
    const s = setup();
    const l = fakeLink(PEER);
    s.table.map4(PEER, '10.254.0.2');
    s.table.map4(OTHER, '10.254.0.3');
    s.outside.onFrame(l.link, frame(OTHER, LOCAL, ip4Packet('10.254.0.3', '10.254.0.1'))); // UID of another member
    s.outside.onFrame(l.link, frame(PEER, LOCAL, ip4Packet('10.254.0.3', '10.254.0.1'))); // address of another member
    s.outside.onFrame(l.link, frame(PEER, LOCAL, ip4Packet('10.9.9.9', '10.254.0.1'))); // unmapped address
    s.outside.onFrame(l.link, Buffer.alloc(30)); // too short
    s.outside.onFrame(l.link, frame(PEER, LOCAL, Buffer.alloc(40, 0x77))); // not IP
    s.outside.onFrame(l.link, frame(PEER, OTHER, ip4Packet('10.254.0.2', '10.254.0.3'))); // for someone else
    expect(s.delivered).toHaveLength(0);
    expect(s.counters.framesSpoofedUid).toBe(1);
    expect(s.counters.framesSpoofedAddress).toBe(2);
    expect(s.counters.framesMalformed).toBe(2);
    expect(l.counters.dropsSpoofed).toBe(3);
    expect(s.counters.framesTransitToController).toBe(1);
    expect(s.toController).toHaveLength(1);
  });

  it('translates IPv4 from a translated peer into our subnet, whatever addresses it used', () => {
    const s = setup();
    const l = fakeLink(PEER);
    s.table.map4(PEER, '10.254.0.7', true); // the peer's address in our subnet
    // The peer uses its own subnet: 192.0.2.x stands for "addresses we know nothing about".
    s.outside.onFrame(l.link, frame(PEER, LOCAL, ip4Packet('192.0.2.1', '192.0.2.2')));
    expect(s.delivered).toHaveLength(1);
    expect(s.delivered[0]!.readUInt32BE(12)).toBe(ip4ToNumber('10.254.0.7'));
    expect(s.delivered[0]!.readUInt32BE(16)).toBe(ip4ToNumber('10.254.0.1'));
  });
});

describe('inside: packets from the vNIC', () => {
  it('frames packets for mapped peers with a link, hands the rest to the controller, drops multicast', () => {
    const s = setup();
    const l = fakeLink(PEER);
    s.table.map4(PEER, '10.254.0.2');
    s.table.ensurePeer(PEER).link = l.link;
    s.table.map4(OTHER, '10.254.0.3'); // mapped, no link yet
    s.inside.onPackets(batchOf(
      ip4Packet('10.254.0.1', '10.254.0.2'),
      ip4Packet('10.254.0.1', '10.254.0.3'),
      ip4Packet('10.254.0.1', '10.254.0.9'),
      ip4Packet('10.254.0.1', '224.0.0.251'),
      Buffer.alloc(10),
    ));
    expect(l.sent).toHaveLength(1);
    expect(l.sent[0]!.subarray(0, 20).toString('hex')).toBe(LOCAL);
    expect(l.sent[0]!.subarray(20, 40).toString('hex')).toBe(PEER);
    expect(l.sent[0]!.length).toBe(FRAME_HEADER_LEN + 28);
    expect(s.toController.map((f) => f.subarray(20, 40).toString('hex'))).toEqual([OTHER, '0'.repeat(40)]);
    expect(s.counters.tunMulticastDropped).toBe(1);
    expect(s.counters.tunMalformed).toBe(1);
  });
});

describe('outside with transit on: forwarding frames for other nodes', () => {
  /** LOCAL has links to PEER and OTHER; FAR is behind OTHER. */
  function transitSetup() {
    const s = setup();
    const lp = fakeLink(PEER);
    const lo = fakeLink(OTHER);
    s.table.map4(PEER, '10.254.0.2');
    s.table.map4(OTHER, '10.254.0.3');
    s.table.map4(FAR, '10.254.0.4');
    s.table.map6(FAR, 'fd50::4');
    s.table.ensurePeer(PEER).link = lp.link;
    s.table.ensurePeer(OTHER).link = lo.link;
    s.table.setRoute(FAR, OTHER);
    s.outside.setTransit(true);
    return { ...s, lp, lo };
  }

  it('forwards sealed frames unopened to the next hop, only the outer hop limit decremented', () => {
    const s = transitSetup();
    for (let i = 0; i < 50; i++) {
      const packet = ip4PacketWithChecksum('10.254.0.2', '10.254.0.4', 2 + i);
      const f = sealedFrame(PEER, FAR, packet);
      s.outside.onFrame(s.lp.link, Buffer.from(f));
      const out = s.lo.sent.at(-1)!;
      expect(out[SEALED_HOP_OFFSET]).toBe(SEALED_INITIAL_HOP_LIMIT - 1);
      out[SEALED_HOP_OFFSET] = SEALED_INITIAL_HOP_LIMIT;
      expect(out.equals(f)).toBe(true); // nothing else changed: the relay never opened it
      expect(NODES.get(FAR)!.open(PEER, out)?.equals(packet)).toBe(true); // and FAR can
    }
    // IPv6 inside, and on a direct link when there is one.
    s.outside.onFrame(s.lp.link, sealedFrame(PEER, OTHER, ip6Packet('fd50::2', 'fd50::3', 64)));
    expect(s.lo.sent).toHaveLength(51);
    expect(s.lo.sent[50]!.subarray(20, 40).toString('hex')).toBe(OTHER);
    expect(s.counters.framesForwarded).toBe(51);
    expect(s.counters.sealedIn + s.counters.sealedOut).toBe(0);
    expect(s.delivered).toHaveLength(0);
    expect(s.toController).toHaveLength(0);
  });

  it('drops plaintext frames for others (a relayed frame must be sealed) and plaintext from anyone but the link peer', () => {
    const s = transitSetup();
    s.outside.onFrame(s.lp.link, frame(PEER, FAR, ip4PacketWithChecksum('10.254.0.2', '10.254.0.4', 9)));
    s.outside.onFrame(s.lp.link, frame(PEER, OTHER, ip6Packet('fd50::2', 'fd50::3', 64)));
    expect(s.counters.framesTransitUnsealed).toBe(2);
    s.outside.onFrame(s.lp.link, frame(OTHER, FAR, ip4Packet('10.254.0.3', '10.254.0.4')));
    expect(s.counters.framesSpoofedUid).toBe(1);
    expect(s.lo.sent).toHaveLength(0);
    expect(s.counters.framesForwarded).toBe(0);
  });

  it('drops frames whose hop limit runs out, that would go back where they came from, or that are our own', () => {
    const s = transitSetup();
    for (const hops of [1, 0]) {
      const f = sealedFrame(PEER, FAR, ip4Packet('10.254.0.2', '10.254.0.4'));
      f[SEALED_HOP_OFFSET] = hops;
      s.outside.onFrame(s.lp.link, f);
    }
    expect(s.counters.framesHopLimit).toBe(2);
    // FAR goes via OTHER: a frame for FAR that arrives from OTHER would bounce straight back.
    s.outside.onFrame(s.lo.link, sealedFrame(OTHER, FAR, ip4Packet('10.254.0.3', '10.254.0.4')));
    // A frame from PEER for FAR relayed to us by OTHER: fine; one for PEER from PEER would go back.
    s.outside.onFrame(s.lp.link, sealedFrame(PEER, PEER, ip4Packet('10.254.0.2', '10.254.0.2')));
    // A frame with our own source UID has looped through the overlay.
    const own = sealedFrame(PEER, OTHER, ip4Packet('10.254.0.1', '10.254.0.3'));
    uidToBytes(LOCAL).copy(own, 0);
    s.outside.onFrame(s.lp.link, own);
    expect(s.counters.framesRouteLoop).toBe(3);
    expect(s.lo.sent).toHaveLength(0);
    expect(s.lp.sent).toHaveLength(0);
    expect(s.counters.framesForwarded).toBe(0);
  });

  it('hands sealed frames with no usable next hop to the controller, drops malformed ones and counts back-pressure on the link', () => {
    const s = transitSetup();
    const stranger = uidFromIp4('10.254.0.99');
    const toStranger = sealedFrame(PEER, FAR, ip4Packet('10.254.0.2', '10.254.0.99'));
    uidToBytes(stranger).copy(toStranger, 20); // unknown UID
    s.outside.onFrame(s.lp.link, toStranger);
    s.lo.fake.state = 'down';
    s.outside.onFrame(s.lp.link, sealedFrame(PEER, FAR, ip4Packet('10.254.0.2', '10.254.0.4'))); // via link down
    expect(s.counters.framesTransitToController).toBe(2);
    expect(s.toController.map((f) => f.subarray(20, 40).toString('hex'))).toEqual([stranger, FAR]);
    expect(s.toController[1]![SEALED_HOP_OFFSET]).toBe(SEALED_INITIAL_HOP_LIMIT); // handed over unchanged
    s.lo.fake.state = 'up';
    s.outside.onFrame(s.lp.link, sealedFrame(PEER, FAR, ip4Packet('10.254.0.2', '10.254.0.4')).subarray(0, SEALED_HEADER_LEN + SEALED_TAG_LEN - 1)); // short
    s.outside.onFrame(s.lp.link, frame(PEER, FAR, Buffer.alloc(40, 0x77))); // not IP, not sealed: plaintext transit
    expect(s.counters.framesMalformed).toBe(1);
    expect(s.lp.counters.dropsMalformed).toBe(1);
    expect(s.counters.framesTransitUnsealed).toBe(1);
    s.lo.fake.full = true;
    s.outside.onFrame(s.lp.link, sealedFrame(PEER, FAR, ip4Packet('10.254.0.2', '10.254.0.4')));
    expect(s.lo.counters.dropsBackpressure).toBe(1);
    expect(s.counters.framesForwarded).toBe(0);
    expect(s.toController).toHaveLength(2);
  });

  it('with transit off, keeps handing frames for others to the controller untouched', () => {
    const s = transitSetup();
    s.outside.setTransit(false);
    s.outside.onFrame(s.lp.link, frame(PEER, FAR, ip4Packet('10.254.0.2', '10.254.0.4')));
    s.outside.onFrame(s.lp.link, sealedFrame(PEER, FAR, ip4Packet('10.254.0.2', '10.254.0.4')));
    s.outside.onFrame(s.lp.link, frame(OTHER, FAR, ip4Packet('10.254.0.3', '10.254.0.4'))); // not the link's peer
    expect(s.lo.sent).toHaveLength(0);
    expect(s.counters.framesTransitToController).toBe(2);
    expect(s.counters.framesSpoofedUid).toBe(1);
    expect(s.toController[0]![FRAME_HEADER_LEN + 8]).toBe(64);
    expect(isSealedFrame(s.toController[1]!)).toBe(true);
  });
});

describe('outside: frames relayed to us by a peer on behalf of another', () => {
  function relaySetup(transit: boolean) {
    const s = setup();
    const lp = fakeLink(PEER);
    s.table.map4(PEER, '10.254.0.2');
    s.table.map4(OTHER, '10.254.0.3');
    s.table.map6(OTHER, 'fd50::3');
    s.table.ensurePeer(PEER).link = lp.link;
    s.outside.setTransit(transit);
    return { ...s, lp };
  }

  it('accepts sealed ones with transit on when the inner source belongs to the sealed source', () => {
    const s = relaySetup(true);
    const p4 = ip4Packet('10.254.0.3', '10.254.0.1');
    const p6 = ip6Packet('fd50::3', 'fd50::1');
    s.outside.onFrame(s.lp.link, sealedFrame(OTHER, LOCAL, p4));
    s.outside.onFrame(s.lp.link, sealedFrame(OTHER, LOCAL, p6));
    s.outside.onFrame(s.lp.link, frame(PEER, LOCAL, ip4Packet('10.254.0.2', '10.254.0.1'))); // direct, as ever
    s.outside.onFrame(s.lp.link, sealedFrame(PEER, LOCAL, ip4Packet('10.254.0.2', '10.254.0.1'))); // sealed by the link peer itself
    expect(s.delivered).toEqual([p4, p6, ip4Packet('10.254.0.2', '10.254.0.1'), ip4Packet('10.254.0.2', '10.254.0.1')]);
    expect(s.counters.framesRelayedIn).toBe(2);
    expect(s.counters.sealedIn).toBe(3);
  });

  it('drops plaintext ones as spoofed, transit on or off, and sealed ones with transit off', () => {
    for (const transit of [true, false]) {
      const s = relaySetup(transit);
      s.outside.onFrame(s.lp.link, frame(OTHER, LOCAL, ip4Packet('10.254.0.3', '10.254.0.1')));
      s.outside.onFrame(s.lp.link, frame(OTHER, LOCAL, ip6Packet('fd50::3', 'fd50::1')));
      if (!transit) s.outside.onFrame(s.lp.link, sealedFrame(OTHER, LOCAL, ip4Packet('10.254.0.3', '10.254.0.1')));
      expect(s.delivered).toHaveLength(0);
      expect(s.counters.framesSpoofedUid).toBe(transit ? 2 : 3);
      expect(s.counters.framesRelayedIn).toBe(0);
      expect(s.lp.counters.dropsSpoofed).toBe(transit ? 2 : 3);
    }
  });

  it('drops sealed ones whose inner source belongs to another peer, whose source is unknown or untrusted, altered or replayed', () => {
    const s = relaySetup(true);
    s.outside.onFrame(s.lp.link, sealedFrame(OTHER, LOCAL, ip4Packet('10.254.0.2', '10.254.0.1'))); // the relay's address
    s.outside.onFrame(s.lp.link, sealedFrame(OTHER, LOCAL, ip4Packet('10.254.0.9', '10.254.0.1'))); // nobody's
    s.outside.onFrame(s.lp.link, sealedFrame(OTHER, LOCAL, ip6Packet('fd50::2', 'fd50::1')));
    s.outside.onFrame(s.lp.link, sealedFrame(PEER, LOCAL, ip4Packet('10.254.0.3', '10.254.0.1'))); // the peer, OTHER's address
    expect(s.counters.framesSpoofedAddress).toBe(4);
    s.outside.onFrame(s.lp.link, sealedFrame(FAR, LOCAL, ip4Packet('10.254.0.4', '10.254.0.1'))); // FAR: not in the table
    expect(s.counters.framesSpoofedUid).toBe(1);
    const good = sealedFrame(OTHER, LOCAL, ip4Packet('10.254.0.3', '10.254.0.1'));
    const altered = Buffer.from(good);
    altered[SEALED_HEADER_LEN + 13]! ^= 0x01; // the inner source address, say
    s.outside.onFrame(s.lp.link, altered);
    expect(s.counters.sealedAuthFailed).toBe(1);
    s.outside.onFrame(s.lp.link, Buffer.from(good));
    s.outside.onFrame(s.lp.link, Buffer.from(good));
    expect(s.counters.sealedReplays).toBe(1);
    expect(s.delivered).toHaveLength(1);
    s.sealed.setPeer(OTHER, null); // no trusted key any more
    s.outside.onFrame(s.lp.link, sealedFrame(OTHER, LOCAL, ip4Packet('10.254.0.3', '10.254.0.1')));
    expect(s.counters.sealedNoKeyIn).toBe(1);
    s.outside.onFrame(s.lp.link, sealedFrame(PEER, LOCAL, ip4Packet('10.254.0.2', '10.254.0.1')).subarray(0, SEALED_HEADER_LEN + SEALED_TAG_LEN - 2)); // truncated
    expect(s.counters.framesMalformed).toBe(1);
    expect(s.delivered).toHaveLength(1);
    expect(s.counters.framesRelayedIn).toBe(1);
  });

  it('translates IPv4 from a relayed translated peer as from a direct one', () => {
    const s = relaySetup(true);
    s.table.map4(FAR, '10.254.0.7', true);
    s.outside.onFrame(s.lp.link, sealedFrame(FAR, LOCAL, ip4Packet('192.0.2.1', '192.0.2.2')));
    expect(s.delivered).toHaveLength(1);
    expect(s.delivered[0]!.readUInt32BE(12)).toBe(ip4ToNumber('10.254.0.7'));
    expect(s.delivered[0]!.readUInt32BE(16)).toBe(ip4ToNumber('10.254.0.1'));
    expect(s.counters.framesRelayedIn).toBe(1);
  });

  it('a lane hands sealed frames for us to the primary, which opens them (Outside.fromLane)', () => {
    const s = relaySetup(true);
    const toPrimary: Buffer[] = [];
    const lane = new Outside(s.table, { transit: (f) => toPrimary.push(Buffer.from(f)) }, new Counters());
    lane.attach(uidToBytes(LOCAL), { write: () => { throw new Error('a lane must not deliver it'); } } as unknown as Vnic, null);
    lane.setTransit(true);
    const p = ip4Packet('10.254.0.3', '10.254.0.1');
    lane.onFrame(s.lp.link, sealedFrame(OTHER, LOCAL, p));
    expect(toPrimary).toHaveLength(1);
    s.outside.fromLane(toPrimary[0]!);
    expect(s.delivered).toEqual([p]);
    expect(s.counters.framesRelayedIn).toBe(1);
    s.outside.fromLane(toPrimary[0]!); // one replay window per source, in the primary
    expect(s.counters.sealedReplays).toBe(1);
    s.outside.fromLane(frame(OTHER, LOCAL, p)); // lanes hand over no plaintext for us
    expect(s.counters.framesMalformed).toBe(1);
  });
});

describe('router mode: subnets behind peers', () => {
  it('accepts packets sourced from a subnet only from the peer it lies behind', () => {
    const s = setup();
    const lp = fakeLink(PEER);
    const lo = fakeLink(OTHER);
    s.table.map4(PEER, '10.254.0.2');
    s.table.map4(OTHER, '10.254.0.3');
    s.table.mapSubnet(PEER, '10.44.0.0/24');
    s.outside.onFrame(lp.link, frame(PEER, LOCAL, ip4Packet('10.44.0.7', '10.254.0.1')));
    s.outside.onFrame(lo.link, frame(OTHER, LOCAL, ip4Packet('10.44.0.7', '10.254.0.1')));
    s.outside.onFrame(lp.link, frame(PEER, LOCAL, ip4Packet('10.44.1.7', '10.254.0.1')));
    expect(s.delivered).toHaveLength(1);
    expect(s.counters.framesSpoofedAddress).toBe(2);
  });
});

describe('inside: overlay routes and subnets', () => {
  it('sends packets for a routed peer on its via link (counted), a direct up link winning', () => {
    const s = setup();
    const lp = fakeLink(PEER);
    s.table.map4(PEER, '10.254.0.2');
    s.table.ensurePeer(PEER).link = lp.link;
    s.table.map4(FAR, '10.254.0.4');
    s.table.map6(FAR, 'fd50::4');
    s.table.setRoute(FAR, PEER);
    const packets = [ip4Packet('10.254.0.1', '10.254.0.4'), ip6Packet('fd50::1', 'fd50::4')];
    s.inside.onPackets(batchOf(...packets));
    expect(lp.sent).toHaveLength(2);
    lp.sent.forEach((f, i) => {
      expect(f.subarray(20, 40).toString('hex')).toBe(FAR); // addressed to FAR, not PEER
      expect(isSealedFrame(f)).toBe(true); // sealed for FAR: PEER sees no plaintext
      expect(f.length).toBe(FRAME_HEADER_LEN + packets[i]!.length + SEALED_OVERHEAD);
      expect(NODES.get(FAR)!.open(LOCAL, f)?.equals(packets[i]!)).toBe(true);
      expect(NODES.get(PEER)!.open(LOCAL, f)).toBeNull();
    });
    expect(s.counters.sealedOut).toBe(2);
    expect(s.table.routes()).toEqual([{ uid: FAR, via: PEER, packets_out: 2 }]);
    const lf = fakeLink(FAR);
    s.table.ensurePeer(FAR).link = lf.link;
    s.inside.onPackets(batchOf(ip4Packet('10.254.0.1', '10.254.0.4'), ip4Packet('10.254.0.1', '10.254.0.2')));
    expect(lf.sent).toHaveLength(1);
    expect(lp.sent).toHaveLength(3);
    expect(s.table.routes()[0]!.packets_out).toBe(2); // direct traffic is not the route's
    lf.fake.state = 'down'; // the direct link goes: back to the route at once
    s.inside.onPackets(batchOf(ip4Packet('10.254.0.1', '10.254.0.4')));
    expect(lp.sent).toHaveLength(4);
    expect(s.table.routes()[0]!.packets_out).toBe(3);
    expect(s.toController).toHaveLength(0);
    // Without a trusted key for FAR nothing goes through the relay: dropped and counted, never plaintext.
    s.sealed.setPeer(FAR, null);
    s.inside.onPackets(batchOf(ip4Packet('10.254.0.1', '10.254.0.4')));
    expect(lp.sent).toHaveLength(4);
    expect(s.counters.sealedNoKeyOut).toBe(1);
    expect(s.table.routes()[0]!.packets_out).toBe(3);
  });

  it('a lane (no sealing state) hands packets for a routed peer to the primary, which seals them', () => {
    const s = setup();
    const toPrimary: Buffer[] = [];
    const lane = new Inside(s.table, { unmapped: (f) => toPrimary.push(Buffer.from(f)) }, new Counters());
    lane.setLocalUid(uidToBytes(LOCAL));
    const lp = fakeLink(PEER);
    s.table.ensurePeer(PEER).link = lp.link;
    s.table.map4(FAR, '10.254.0.4');
    s.table.setRoute(FAR, PEER);
    lane.onPackets(batchOf(ip4Packet('10.254.0.1', '10.254.0.4')));
    expect(lp.sent).toHaveLength(0);
    expect(toPrimary).toHaveLength(1);
    s.inside.onPlainPackets(batchOf(toPrimary[0]!.subarray(FRAME_HEADER_LEN)));
    expect(lp.sent).toHaveLength(1);
    expect(NODES.get(FAR)!.open(LOCAL, lp.sent[0]!)?.equals(ip4Packet('10.254.0.1', '10.254.0.4'))).toBe(true);
  });

  it('hands packets to the controller when neither link is usable; back-pressure on the via link is a drop', () => {
    const s = setup();
    const lp = fakeLink(PEER, false);
    s.table.ensurePeer(PEER).link = lp.link;
    s.table.map4(FAR, '10.254.0.4');
    s.table.setRoute(FAR, PEER);
    s.inside.onPackets(batchOf(ip4Packet('10.254.0.1', '10.254.0.4')));
    expect(s.toController.map((f) => f.subarray(20, 40).toString('hex'))).toEqual([FAR]);
    lp.fake.state = 'up';
    lp.fake.full = true;
    s.inside.onPackets(batchOf(ip4Packet('10.254.0.1', '10.254.0.4')));
    expect(s.toController).toHaveLength(1);
    expect(lp.counters.dropsBackpressure).toBe(1);
    expect(s.table.routes()[0]!.packets_out).toBe(0);
  });

  it('sends packets for a routed subnet to the peer it lies behind, through that peer\'s route if need be', () => {
    const s = setup();
    const lp = fakeLink(PEER);
    s.table.ensurePeer(PEER).link = lp.link;
    s.table.mapSubnet(FAR, '10.44.0.0/24');
    s.table.mapSubnet(FAR, 'fd44::/64');
    s.inside.onPackets(batchOf(ip4Packet('10.254.0.1', '10.44.0.5')));
    expect(s.toController.map((f) => f.subarray(20, 40).toString('hex'))).toEqual([FAR]); // no link to FAR yet
    s.table.setRoute(FAR, PEER);
    s.inside.onPackets(batchOf(ip4Packet('10.254.0.1', '10.44.0.5'), ip6Packet('fd50::1', 'fd44::5'), ip4Packet('10.254.0.1', '10.44.1.5')));
    expect(lp.sent.map((f) => f.subarray(20, 40).toString('hex'))).toEqual([FAR, FAR]);
    expect(s.toController.map((f) => f.subarray(20, 40).toString('hex'))).toEqual([FAR, '0'.repeat(40)]);
    expect(s.table.routes()[0]!.packets_out).toBe(2);
  });
});

describe('compact frames: the bare packet on a direct link, source and destination its two ends', () => {
  function compactSetup() {
    const s = setup();
    const lp = fakeLink(PEER);
    const lo = fakeLink(OTHER);
    lp.fake.sendsCompact = true;
    lo.fake.sendsCompact = true;
    s.table.map4(PEER, '10.254.0.2');
    s.table.map6(PEER, 'fd50::2');
    s.table.map4(OTHER, '10.254.0.3');
    s.table.ensurePeer(PEER).link = lp.link;
    s.table.ensurePeer(OTHER).link = lo.link;
    return { ...s, lp, lo };
  }

  it('outside: delivers IPv4 and IPv6 from the link peer unchanged, with the same counters as full frames', () => {
    const s = compactSetup();
    const p4 = ip4Packet('10.254.0.2', '10.254.0.1');
    const p6 = ip6Packet('fd50::2', 'fd50::1');
    s.outside.onCompactFrame(s.lp.link, Buffer.from(p4));
    s.outside.onCompactFrame(s.lp.link, Buffer.from(p6));
    expect(s.delivered).toEqual([p4, p6]);
    expect(s.counters.framesRelayedIn).toBe(0);
    expect(s.counters.framesMalformed + s.counters.framesSpoofedAddress + s.counters.framesSpoofedUid).toBe(0);
    s.outside.setTransit(true); // transit changes nothing for a frame from the peer to us
    s.outside.onCompactFrame(s.lp.link, Buffer.from(p4));
    expect(s.delivered).toHaveLength(3);
    expect(s.counters.framesForwarded + s.counters.framesTransitToController).toBe(0);
  });

  it('outside: drops and counts an inner source that is not the link peer\'s, as for a full frame', () => {
    for (const transit of [false, true]) {
      const s = compactSetup();
      s.outside.setTransit(transit);
      s.outside.onCompactFrame(s.lp.link, ip4Packet('10.254.0.3', '10.254.0.1')); // OTHER's address over PEER's link
      s.outside.onCompactFrame(s.lp.link, ip4Packet('10.9.9.9', '10.254.0.1')); // nobody's
      s.outside.onCompactFrame(s.lp.link, ip6Packet('fd50::3', 'fd50::1'));
      s.outside.onCompactFrame(s.lp.link, ip4Packet('10.254.0.1', '10.254.0.1')); // our own address
      expect(s.delivered).toHaveLength(0);
      expect(s.counters.framesSpoofedAddress).toBe(4);
      expect(s.lp.counters.dropsSpoofed).toBe(4);
      expect(s.counters.framesRelayedIn).toBe(0);
      // the same packets as full frames get the same verdicts
      const f = setup();
      const l = fakeLink(PEER);
      f.table.map4(PEER, '10.254.0.2');
      f.table.map4(OTHER, '10.254.0.3');
      f.outside.setTransit(transit);
      f.outside.onFrame(l.link, frame(PEER, LOCAL, ip4Packet('10.254.0.3', '10.254.0.1')));
      expect(f.counters.framesSpoofedAddress).toBe(1);
    }
  });

  it('outside: translates IPv4 from a translated peer into our subnet', () => {
    const s = setup();
    const l = fakeLink(PEER);
    s.table.map4(PEER, '10.254.0.7', true);
    s.outside.onCompactFrame(l.link, ip4PacketWithChecksum('192.0.2.1', '192.0.2.2', 64));
    expect(s.delivered).toHaveLength(1);
    expect(s.delivered[0]!.readUInt32BE(12)).toBe(ip4ToNumber('10.254.0.7'));
    expect(s.delivered[0]!.readUInt32BE(16)).toBe(ip4ToNumber('10.254.0.1'));
    expect(ipv4Checksum(s.delivered[0]!, 0, 20)).toBe(0);
    const bad = ip4Packet('192.0.2.1', '192.0.2.2');
    bad.writeUInt16BE(2000, 2); // total length beyond the message: not well-formed
    s.outside.onCompactFrame(l.link, bad);
    expect(s.delivered).toHaveLength(1);
    expect(s.counters.framesMalformed).toBe(1);
    expect(l.counters.dropsMalformed).toBe(1);
  });

  it('outside: counts short, non-IP and unknown-link packets as malformed; random garbage never throws or gets through', () => {
    const s = compactSetup();
    s.outside.onCompactFrame(s.lp.link, Buffer.alloc(0));
    s.outside.onCompactFrame(s.lp.link, ip4Packet('10.254.0.2', '10.254.0.1').subarray(0, 19)); // shorter than an IPv4 header
    s.outside.onCompactFrame(s.lp.link, ip6Packet('fd50::2', 'fd50::1').subarray(0, 39)); // shorter than an IPv6 header
    s.outside.onCompactFrame(s.lp.link, Buffer.alloc(40, 0x77)); // not IP
    s.outside.onCompactFrame(fakeLink(FAR).link, ip4Packet('10.254.0.4', '10.254.0.1')); // a link to no known peer
    expect(s.counters.framesMalformed).toBe(5);
    expect(s.lp.counters.dropsMalformed).toBe(4);
    expect(s.delivered).toHaveLength(0);
    for (let i = 0; i < 5000; i++) {
      const g = randomBytes(i % 100);
      if (g.length > 0 && i % 3 === 0) g[0] = 0x45; // some that look like IPv4
      s.outside.onCompactFrame(s.lp.link, g);
    }
    // Random sources are never PEER's 10.254.0.2 / fd50::2 (odds ~2^-32): nothing is delivered.
    expect(s.delivered).toHaveLength(0);
  });

  it('inside: sends the bare packet on the destination\'s own direct link when it takes compact frames', () => {
    const s = compactSetup();
    const p4 = ip4Packet('10.254.0.1', '10.254.0.2');
    const p6 = ip6Packet('fd50::1', 'fd50::2');
    s.inside.onPackets(batchOf(p4, p6));
    expect(s.lp.compactSent).toEqual([p4, p6]);
    expect(s.lp.sent).toHaveLength(0);
    expect(s.lp.counters.compactOut).toBe(2);
    s.lp.fake.sendsCompact = false; // the peer did not offer them (or their channel closed): full frames
    s.inside.onPackets(batchOf(p4));
    expect(s.lp.sent).toHaveLength(1);
    expect(s.lp.sent[0]!.equals(frame(LOCAL, PEER, p4))).toBe(true);
    expect(s.lp.compactSent).toHaveLength(2);
  });

  it('inside: frames for a peer reached through another (overlay route) are sealed full frames, addressed to the peer', () => {
    const s = compactSetup();
    s.table.map4(FAR, '10.254.0.4');
    s.table.setRoute(FAR, OTHER);
    s.inside.onPackets(batchOf(ip4Packet('10.254.0.1', '10.254.0.4')));
    expect(s.lo.compactSent).toHaveLength(0);
    expect(s.lo.sent).toHaveLength(1);
    expect(s.lo.sent[0]!.subarray(0, 40).equals(frame(LOCAL, FAR, Buffer.alloc(0)))).toBe(true);
    expect(isSealedFrame(s.lo.sent[0]!)).toBe(true);
    expect(s.table.routes()[0]!.packets_out).toBe(1);
    // and a compact packet refused by back-pressure is a drop on the link, not a full frame instead
    s.lp.fake.full = true;
    s.inside.onPackets(batchOf(ip4Packet('10.254.0.1', '10.254.0.2')));
    expect(s.lp.counters.dropsBackpressure).toBe(1);
    expect(s.lp.sent).toHaveLength(0);
    expect(s.toController).toHaveLength(0);
  });

  it('transit: a sealed frame forwarded for others stays a full frame, even on a link that takes compact frames', () => {
    const s = compactSetup();
    s.outside.setTransit(true);
    s.outside.onFrame(s.lo.link, sealedFrame(OTHER, PEER, ip4PacketWithChecksum('10.254.0.3', '10.254.0.2', 9)));
    expect(s.lp.compactSent).toHaveLength(0);
    expect(s.lp.sent).toHaveLength(1);
    expect(s.lp.sent[0]!.subarray(0, 40).equals(frame(OTHER, PEER, Buffer.alloc(0)))).toBe(true);
  });
});

describe('--offload: super-packets whole to offload peers, segmented for everything else', () => {
  /** [virtio_net_hdr: NEEDS_CSUM, TCPV4, gso_size 1000][IPv4 TCP, 3000 bytes of data] as the TUN reads it. */
  function superPacket(src: string, dst: string): Buffer {
    const tcp = Buffer.alloc(20 + 3000, 7);
    tcp[12] = 5 << 4;
    tcp[13] = 0x18; // PSH ACK
    const p = Buffer.alloc(20 + tcp.length);
    p[0] = 0x45;
    p.writeUInt16BE(p.length, 2);
    p[8] = 64;
    p[9] = 6;
    p.writeUInt32BE(ip4ToNumber(src), 12);
    p.writeUInt32BE(ip4ToNumber(dst), 16);
    tcp.copy(p, 20);
    const h = Buffer.alloc(VNET_HDR_LEN);
    h[0] = VNET_F_NEEDS_CSUM;
    h[1] = VNET_GSO_TCPV4;
    h.writeUInt16LE(40, 2);
    h.writeUInt16LE(1000, 4);
    h.writeUInt16LE(20, 6);
    h.writeUInt16LE(16, 8);
    return Buffer.concat([h, p]);
  }

  function offloadSetup() {
    const s = setup(true);
    const lp = fakeLink(PEER);
    s.table.map4(PEER, '10.254.0.2');
    s.table.map4(OTHER, '10.254.0.3', true);
    s.table.ensurePeer(PEER).link = lp.link;
    return { ...s, lp };
  }

  it('inside: a super-packet goes whole only to a peer that took offload, else as 3 segments (compact, full or to the controller)', () => {
    const s = offloadSetup();
    const sp = superPacket('10.254.0.1', '10.254.0.2');
    s.lp.fake.sendsCompact = true;
    s.lp.fake.sendsOffload = true;
    s.inside.onPackets(vnetBatchOf(VNET_HDR_LEN, sp));
    expect(s.lp.compactSent).toEqual([sp]);
    expect(s.counters.offloadSuperPacketsOut).toBe(1);

    s.lp.fake.sendsOffload = false; // compact, no offload: three bare segments
    s.inside.onPackets(vnetBatchOf(VNET_HDR_LEN, sp));
    expect(s.lp.compactSent.slice(1).map((p) => p.length)).toEqual([1040, 1040, 1040]);
    expect(s.lp.compactSent.slice(1).every((p) => p[0] === 0x45 && ipv4Checksum(p, 0, 20) === 0)).toBe(true);
    s.lp.fake.sendsCompact = false; // full frames
    s.inside.onPackets(vnetBatchOf(VNET_HDR_LEN, sp));
    expect(s.lp.sent.map((f) => f.length)).toEqual([1040 + FRAME_HEADER_LEN, 1040 + FRAME_HEADER_LEN, 1040 + FRAME_HEADER_LEN]);
    expect(s.lp.sent[0]!.subarray(0, FRAME_HEADER_LEN)).toEqual(frame(LOCAL, PEER, Buffer.alloc(0)));
    s.inside.onPackets(vnetBatchOf(VNET_HDR_LEN, superPacket('10.254.0.1', '10.254.0.3'))); // no link: the controller
    expect(s.toController).toHaveLength(3);
    expect(s.counters.offloadSegmentedOut).toBe(3);
    expect(s.counters.offloadSuperPacketsOut).toBe(1);

    // A header that needs no work is an ordinary packet; a broken one is a counted drop.
    s.lp.fake.sendsCompact = true;
    s.lp.fake.sendsOffload = true;
    const plain = Buffer.concat([Buffer.alloc(VNET_HDR_LEN), ip4Packet('10.254.0.1', '10.254.0.2')]);
    s.inside.onPackets(vnetBatchOf(VNET_HDR_LEN, plain));
    expect(s.lp.compactSent.at(-1)).toEqual(plain.subarray(VNET_HDR_LEN));
    const broken = Buffer.from(sp);
    broken[1] = 3; // GSO UDP: not taken
    s.lp.fake.sendsOffload = false;
    s.inside.onPackets(vnetBatchOf(VNET_HDR_LEN, broken));
    expect(s.counters.tunMalformed).toBe(1);
  });

  it('outside: takes [header][packet] only on a link that advertised offload, with the usual spoof checks', () => {
    const s = offloadSetup();
    const sp = superPacket('10.254.0.2', '10.254.0.1');
    s.outside.onCompactFrame(s.lp.link, Buffer.from(sp)); // not advertised on this link
    expect(s.counters.framesMalformed).toBe(1);
    s.lp.fake.takesOffload = true;
    s.outside.onCompactFrame(s.lp.link, Buffer.from(sp));
    expect(s.deliveredVnet).toEqual([sp]);
    expect(s.counters.offloadSuperPacketsIn).toBe(1);
    s.outside.onCompactFrame(s.lp.link, superPacket('10.254.0.3', '10.254.0.1')); // OTHER's address on PEER's link
    expect(s.counters.framesSpoofedAddress).toBe(1);
    const bad = Buffer.from(sp);
    bad.writeUInt16LE(5000, 8); // checksum beyond the packet
    s.outside.onCompactFrame(s.lp.link, bad);
    expect(s.counters.framesMalformed).toBe(2);
    expect(s.deliveredVnet).toHaveLength(1);
    expect(s.delivered).toHaveLength(0);
    for (let i = 0; i < 3000; i++) {
      const g = randomBytes(i % 120);
      if (g.length > 0) g[0]! &= 0x0f; // vnet-looking first nibble
      s.outside.onCompactFrame(s.lp.link, g);
    }
    expect(s.deliveredVnet).toHaveLength(1);
  });

  it('outside: a translated peer\'s super-packet is segmented in software, then translated', () => {
    const s = setup(true);
    const l = fakeLink(PEER);
    l.fake.takesOffload = true;
    s.table.map4(PEER, '10.254.0.7', true);
    s.outside.onCompactFrame(l.link, superPacket('192.0.2.1', '192.0.2.2'));
    expect(s.counters.offloadSegmentedIn).toBe(1);
    expect(s.deliveredVnet).toHaveLength(0);
    expect(s.delivered.map((p) => p.length)).toEqual([1040, 1040, 1040]);
    for (const p of s.delivered) {
      expect(p.readUInt32BE(12)).toBe(ip4ToNumber('10.254.0.7'));
      expect(ipv4Checksum(p, 0, 20)).toBe(0);
    }
  });
});
