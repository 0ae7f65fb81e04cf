import { describe, expect, it } from 'vitest';
import {
  Segmenter,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_ECN,
  VNET_GSO_NONE,
  VNET_GSO_TCPV4,
  VNET_GSO_TCPV6,
  VNET_HDR_LEN,
  vnetHeaderValid,
} from '../src/segmenter.js';

// ---------------------------------------------------------------------------------------------
// Reference code, deliberately separate from the segmenter: whole-buffer one's-complement sums
// (RFC 1071) over freshly concatenated pseudo-headers, used to build packets and check segments.
// ---------------------------------------------------------------------------------------------

const TCP = 6;
const UDP = 17;

function refSum(...parts: Buffer[]): number {
  const b = Buffer.concat(parts);
  let s = 0;
  for (let i = 0; i < b.length; i += 2) s += b[i]! * 256 + (i + 1 < b.length ? b[i + 1]! : 0);
  while (s > 0xffff) s = Math.floor(s / 65536) + (s % 65536);
  return s;
}

/** True when the checksum over the parts (which include their checksum field) verifies. */
function verifies(...parts: Buffer[]): boolean {
  return refSum(...parts) === 0xffff;
}

function pseudo4(pkt: Buffer, proto: number, l4len: number): Buffer {
  const p = Buffer.alloc(12);
  pkt.copy(p, 0, 12, 20);
  p[9] = proto;
  p.writeUInt16BE(l4len, 10);
  return p;
}

function pseudo6(pkt: Buffer, proto: number, l4len: number): Buffer {
  const p = Buffer.alloc(40);
  pkt.copy(p, 0, 8, 40);
  p.writeUInt32BE(l4len, 32);
  p[39] = proto;
  return p;
}

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}

/** A TCP header (with 12 bytes of options: data offset 8) and the given flags, checksum 0. */
function tcpHeader(seq: number, flags: number): Buffer {
  const t = Buffer.alloc(32);
  t.writeUInt16BE(40000, 0);
  t.writeUInt16BE(5201, 2);
  t.writeUInt32BE(seq, 4);
  t.writeUInt32BE(0x01020304, 8);
  t[12] = 8 << 4;
  t[13] = flags;
  t.writeUInt16BE(502, 14);
  t.set([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], 20); // NOP NOP timestamps
  return t;
}

function ipv4(proto: number, l4: Buffer, id = 0x4321): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + l4.length, 2);
  h.writeUInt16BE(id, 4);
  h.writeUInt16BE(0x4000, 6);
  h[8] = 64;
  h[9] = proto;
  h.set([10, 0, 0, 1], 12);
  h.set([10, 0, 0, 2], 16);
  h.writeUInt16BE(0xffff - refSum(h), 10);
  return Buffer.concat([h, l4]);
}

function ipv6(proto: number, l4: Buffer): Buffer {
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h.writeUInt16BE(l4.length, 4);
  h[6] = proto;
  h[7] = 64;
  h.set(Buffer.from('fd000000000000000000000000000001', 'hex'), 8);
  h.set(Buffer.from('fd00000000000000000000000000abcd', 'hex'), 24);
  return Buffer.concat([h, l4]);
}

function vnet(flags: number, gsoType: number, hdrLen: number, gsoSize: number, csumStart: number, csumOffset: number): Buffer {
  const v = Buffer.alloc(VNET_HDR_LEN);
  v[0] = flags;
  v[1] = gsoType;
  v.writeUInt16LE(hdrLen, 2);
  v.writeUInt16LE(gsoSize, 4);
  v.writeUInt16LE(csumStart, 6);
  v.writeUInt16LE(csumOffset, 8);
  return v;
}

/** Seeds the L4 checksum field with the folded pseudo-header sum, as the kernel leaves a CHECKSUM_PARTIAL packet. */
function seedPartial(pkt: Buffer, l4: number, field: number, proto: number): void {
  const l4len = pkt.length - l4;
  const p = pkt[0]! >> 4 === 4 ? pseudo4(pkt, proto, l4len) : pseudo6(pkt, proto, l4len);
  pkt.writeUInt16BE(refSum(p), l4 + field);
}

/** [headroom][vnet header][packet] as read from the TUN, returning the offsets. */
function onWire(v: Buffer, pkt: Buffer, headroom = 16): { buf: Buffer; hdrOff: number; pktOff: number } {
  const buf = Buffer.concat([Buffer.alloc(headroom), v, pkt]);
  return { buf, hdrOff: headroom, pktOff: headroom + VNET_HDR_LEN };
}

const HEADROOM = 32;

function segments(s: Segmenter): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < s.count; i++) out.push(Buffer.from(s.buffer.subarray(s.offsets[i]!, s.offsets[i]! + s.lengths[i]!)));
  return out;
}

describe('Segmenter: TCP segmentation', () => {
  for (const version of [4, 6] as const) {
    it(`cuts an IPv${version} TSO super-packet into MSS segments the way the kernel would`, () => {
      const mss = 1324;
      const payload = pattern(10 * mss + 77, version);
      const seq = 0xfffff000; // wraps during the packet
      const CWR = 0x80, ECE = 0x40, PSH = 0x08, ACK = 0x10, FIN = 0x01;
      const tcp = Buffer.concat([tcpHeader(seq, CWR | ECE | PSH | ACK | FIN), payload]);
      const pkt = version === 4 ? ipv4(TCP, tcp) : ipv6(TCP, tcp);
      const l4 = version === 4 ? 20 : 40;
      seedPartial(pkt, l4, 16, TCP);
      const gso = (version === 4 ? VNET_GSO_TCPV4 : VNET_GSO_TCPV6) | VNET_GSO_ECN;
      const { buf, hdrOff, pktOff } = onWire(vnet(VNET_F_NEEDS_CSUM, gso, l4 + 32, mss, l4, 16), pkt);
      const s = new Segmenter(HEADROOM);
      expect(s.process(buf, hdrOff, pktOff, pkt.length)).toBe(11);
      const segs = segments(s);
      const data: Buffer[] = [];
      segs.forEach((seg, i) => {
        expect(s.offsets[i]! >= HEADROOM).toBe(true);
        if (i > 0) expect(s.offsets[i]! - (s.offsets[i - 1]! + s.lengths[i - 1]!)).toBeGreaterThanOrEqual(HEADROOM);
        const dataLen = i < 10 ? mss : 77;
        expect(seg.length).toBe(l4 + 32 + dataLen);
        if (version === 4) {
          expect(seg.readUInt16BE(2)).toBe(seg.length);
          expect(seg.readUInt16BE(4)).toBe((0x4321 + i) & 0xffff);
          expect(verifies(seg.subarray(0, 20))).toBe(true);
          expect(verifies(pseudo4(seg, TCP, seg.length - 20), seg.subarray(20))).toBe(true);
        } else {
          expect(seg.readUInt16BE(4)).toBe(seg.length - 40);
          expect(verifies(pseudo6(seg, TCP, seg.length - 40), seg.subarray(40))).toBe(true);
        }
        const t = seg.subarray(l4);
        expect(t.readUInt32BE(4)).toBe((seq + i * mss) >>> 0);
        expect(t.subarray(20, 32)).toEqual(tcp.subarray(20, 32)); // options copied
        const flags = t[13]!;
        expect((flags & CWR) !== 0).toBe(i === 0);
        expect((flags & (FIN | PSH)) !== 0).toBe(i === 10);
        expect(flags & (FIN | PSH)).toBe(i === 10 ? FIN | PSH : 0);
        expect(flags & (ECE | ACK)).toBe(ECE | ACK);
        data.push(t.subarray(32));
      });
      expect(Buffer.concat(data)).toEqual(payload);
    });
  }

  it('a super-packet of exactly n MSS gives n full segments; one smaller than the MSS gives one', () => {
    const s = new Segmenter(HEADROOM);
    for (const [len, n] of [[3 * 1000, 3], [500, 1]] as const) {
      const pkt = ipv4(TCP, Buffer.concat([tcpHeader(1, 0x18), pattern(len, 1)]));
      const { buf, hdrOff, pktOff } = onWire(vnet(VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 52, 1000, 20, 16), pkt);
      expect(s.process(buf, hdrOff, pktOff, pkt.length)).toBe(n);
      for (const seg of segments(s)) expect(verifies(pseudo4(seg, TCP, seg.length - 20), seg.subarray(20))).toBe(true);
    }
  });
});

describe('Segmenter: checksum completion (NEEDS_CSUM without GSO)', () => {
  it('completes a TCP checksum over IPv4 and IPv6', () => {
    const s = new Segmenter(HEADROOM);
    for (const version of [4, 6]) {
      const l4 = version === 4 ? 20 : 40;
      const tcp = Buffer.concat([tcpHeader(7, 0x18), pattern(333, 3)]); // odd length
      const pkt = version === 4 ? ipv4(TCP, tcp) : ipv6(TCP, tcp);
      seedPartial(pkt, l4, 16, TCP);
      const { buf, hdrOff, pktOff } = onWire(vnet(VNET_F_NEEDS_CSUM, VNET_GSO_NONE, 0, 0, l4, 16), pkt);
      expect(s.process(buf, hdrOff, pktOff, pkt.length)).toBe(1);
      const [seg] = segments(s);
      const ph = version === 4 ? pseudo4(seg!, TCP, tcp.length) : pseudo6(seg!, TCP, tcp.length);
      expect(verifies(ph, seg!.subarray(l4))).toBe(true);
      expect(seg!.subarray(0, l4 + 16)).toEqual(pkt.subarray(0, l4 + 16)); // nothing else changed
      expect(seg!.subarray(l4 + 18)).toEqual(pkt.subarray(l4 + 18));
    }
  });

  it('completes a UDP checksum, and writes 0xffff where the sum gives 0', () => {
    const s = new Segmenter(HEADROOM);
    const udp = Buffer.concat([Buffer.from([0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 0]), pattern(100, 5)]);
    udp.writeUInt16BE(udp.length, 4);
    const pkt = ipv4(UDP, udp);
    seedPartial(pkt, 20, 6, UDP);
    const { buf, hdrOff, pktOff } = onWire(vnet(VNET_F_NEEDS_CSUM, VNET_GSO_NONE, 0, 0, 20, 6), pkt);
    expect(s.process(buf, hdrOff, pktOff, pkt.length)).toBe(1);
    let seg = segments(s)[0]!;
    expect(verifies(pseudo4(seg, UDP, udp.length), seg.subarray(20))).toBe(true);

    // Choose two payload bytes so the whole sum is 0xffff: the computed checksum is then 0.
    pkt.writeUInt16BE(0, 30);
    pkt.writeUInt16BE(0, 26);
    const rest = refSum(pseudo4(pkt, UDP, udp.length), pkt.subarray(20));
    pkt.writeUInt16BE(0xffff - rest, 30);
    seedPartial(pkt, 20, 6, UDP);
    const again = onWire(vnet(VNET_F_NEEDS_CSUM, VNET_GSO_NONE, 0, 0, 20, 6), pkt);
    expect(s.process(again.buf, again.hdrOff, again.pktOff, pkt.length)).toBe(1);
    seg = segments(s)[0]!;
    expect(seg.readUInt16BE(26)).toBe(0xffff);
    expect(verifies(pseudo4(seg, UDP, udp.length), seg.subarray(20))).toBe(true);
  });
});

describe('Segmenter: malformed headers are refused, never a crash', () => {
  const tcp = Buffer.concat([tcpHeader(1, 0x10), pattern(3000, 9)]);
  const pkt4 = ipv4(TCP, tcp);
  const pkt6 = ipv6(TCP, tcp);
  const cases: [string, Buffer, Buffer][] = [
    ['unknown flag bits', vnet(0x04, VNET_GSO_NONE, 0, 0, 0, 0), pkt4],
    ['GSO UDP (3)', vnet(VNET_F_NEEDS_CSUM, 3, 52, 1000, 20, 16), pkt4],
    ['ECN without GSO', vnet(0, VNET_GSO_ECN, 0, 0, 0, 0), pkt4],
    ['TCPV4 on an IPv6 packet', vnet(VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 72, 1000, 40, 16), pkt6],
    ['TCPV6 on an IPv4 packet', vnet(VNET_F_NEEDS_CSUM, VNET_GSO_TCPV6, 52, 1000, 20, 16), pkt4],
    ['GSO without NEEDS_CSUM', vnet(0, VNET_GSO_TCPV4, 52, 1000, 20, 16), pkt4],
    ['gso_size 0', vnet(VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 52, 0, 20, 16), pkt4],
    ['too many segments', vnet(VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 52, 1, 20, 16), pkt4],
    ['csum_start off the IPv4 header', vnet(VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 52, 1000, 24, 16), pkt4],
    ['checksum beyond the packet', vnet(VNET_F_NEEDS_CSUM, VNET_GSO_NONE, 0, 0, 20, 4000), pkt4],
    ['a checksum offset that is neither TCP nor UDP', vnet(VNET_F_NEEDS_CSUM, VNET_GSO_NONE, 0, 0, 20, 2), pkt4],
    ['not an IP packet', vnet(0, VNET_GSO_NONE, 0, 0, 0, 0), Buffer.alloc(60)],
  ];
  for (const [what, v, pkt] of cases) {
    it(`refuses ${what}`, () => {
      const s = new Segmenter(HEADROOM, 64);
      const { buf, hdrOff, pktOff } = onWire(v, pkt);
      expect(s.process(buf, hdrOff, pktOff, pkt.length)).toBe(0);
      expect(s.count).toBe(0);
    });
  }

  it('accepts a plain header (no flags, no GSO) on an IPv4 packet', () => {
    const { buf, hdrOff, pktOff } = onWire(vnet(0, VNET_GSO_NONE, 0, 0, 0, 0), pkt4);
    expect(vnetHeaderValid(buf, hdrOff, pktOff, pkt4.length)).toBe(true);
  });

  it('survives random headers and packets', () => {
    const s = new Segmenter(HEADROOM, 256);
    let seed = 12345;
    const rnd = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
    for (let n = 0; n < 3000; n++) {
      const len = 20 + (rnd() % 3000);
      const buf = Buffer.alloc(HEADROOM + VNET_HDR_LEN + len);
      for (let i = 0; i < buf.length; i++) buf[i] = rnd() & 0xff;
      buf[HEADROOM] = rnd() % 4;
      buf[HEADROOM + 1] = [0, 1, 4, 0x81, 0x84, 3][rnd() % 6]!;
      buf[HEADROOM + VNET_HDR_LEN] = rnd() % 2 ? 0x45 : 0x60;
      buf.writeUInt16LE(rnd() % 2 ? 20 : 40, HEADROOM + 6);
      const count = s.process(buf, HEADROOM, HEADROOM + VNET_HDR_LEN, len);
      expect(count).toBeGreaterThanOrEqual(0);
      for (let i = 0; i < count; i++) expect(s.offsets[i]! + s.lengths[i]!).toBeLessThanOrEqual(s.buffer.length);
    }
  });
});
