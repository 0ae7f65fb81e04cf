// inside (TUN -> link) and outside (link -> TUN) with stand-ins for the link and the vNIC; the lab
// tests run the same code between real datapaths.
import { describe, expect, it } from 'vitest';
import { FRAME_HEADER_LEN, ip4ToNumber, uidFromIp4, uidToBytes } from '@tincan/protocol';
import { Counters } from '../src/counters.js';
import { ForwardingTable } from '../src/forwarding-table.js';
import { Inside } from '../src/inside.js';
import type { Link } from '../src/link.js';
import { Outside } from '../src/outside.js';
import type { Vnic } from '../src/vnic.js';

const LOCAL = uidFromIp4('10.254.0.1');
const PEER = uidFromIp4('10.254.0.2');
const OTHER = uidFromIp4('10.254.0.3');

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

function frame(src: string, dst: string, packet: Buffer): Buffer {
  return Buffer.concat([uidToBytes(src), uidToBytes(dst), packet]);
}

function fakeLink(uid: string, up = true) {
  const sent: Buffer[] = [];
  const link = {
    uid,
    state: up ? 'up' : 'connecting',
    counters: { dropsSpoofed: 0, dropsMalformed: 0 },
    send(f: Buffer) {
      if (!up) return false;
      sent.push(Buffer.from(f));
      return true;
    },
  };
  return { link: link as unknown as Link, sent, counters: link.counters };
}

function setup() {
  const table = new ForwardingTable();
  const counters = new Counters();
  const delivered: Buffer[] = [];
  const toController: Buffer[] = [];
  const vnic = { write: (p: Buffer) => delivered.push(Buffer.from(p)) } as unknown as Vnic;
  const sink = { unmapped: (f: Buffer) => toController.push(Buffer.from(f)), transit: (f: Buffer) => toController.push(Buffer.from(f)) };
  const outside = new Outside(table, sink, counters);
  outside.attach(uidToBytes(LOCAL), vnic, ip4ToNumber('10.254.0.1'));
  const inside = new Inside(table, sink, counters);
  inside.setLocalUid(uidToBytes(LOCAL));
  return { table, counters, delivered, toController, outside, inside };
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
  function batchOf(...packets: Buffer[]) {
    const slot = FRAME_HEADER_LEN + 1500;
    const buffer = Buffer.alloc(slot * packets.length);
    const offsets = new Uint32Array(packets.length);
    const lengths = new Uint32Array(packets.length);
    packets.forEach((p, i) => {
      offsets[i] = i * slot + FRAME_HEADER_LEN;
      lengths[i] = p.length;
      p.copy(buffer, offsets[i]!);
    });
    return { buffer, offsets, lengths, count: packets.length };
  }

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
