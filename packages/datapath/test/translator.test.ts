import { describe, expect, it } from 'vitest';
import { ipv4Checksum, translateIPv4 } from '../src/translator.js';

// ---------------------------------------------------------------------------------------------
// Reference code, deliberately separate from the translator: full one's-complement sums over
// whole packets (RFC 1071), used to build packets and to check every checksum after translation.
// ---------------------------------------------------------------------------------------------

const TCP = 6;
const UDP = 17;
const ICMP = 1;

function ip(a: string): number {
  return a.split('.').reduce((n, x) => n * 256 + Number(x), 0);
}

function ipAt(b: Buffer, i: number): string {
  return [...b.subarray(i, i + 4)].join('.');
}

/** ~(one's-complement sum) of the concatenated parts, odd tail padded with zero. */
function refChecksum(...parts: Buffer[]): number {
  const b = Buffer.concat(parts);
  let s = 0;
  for (let i = 0; i < b.length; i += 2) s += b[i]! * 256 + (i + 1 < b.length ? b[i + 1]! : 0);
  while (s > 0xffff) s = Math.floor(s / 65536) + (s % 65536);
  return 0xffff - s;
}

function pseudo(src: number, dst: number, proto: number, l4len: number): Buffer {
  const p = Buffer.alloc(12);
  p.writeUInt32BE(src, 0);
  p.writeUInt32BE(dst, 4);
  p[9] = proto;
  p.writeUInt16BE(l4len, 10);
  return p;
}

interface IpOpts {
  src: number;
  dst: number;
  proto: number;
  id?: number;
  /** flags (MF = 0x2000, DF = 0x4000) | fragment offset in 8-byte units */
  frag?: number;
  options?: Buffer;
}

/** An IPv4 packet around `payload`, with a correct header checksum. */
function ipPacket(o: IpOpts, payload: Buffer): Buffer {
  const opts = o.options ?? Buffer.alloc(0);
  const h = Buffer.alloc(20 + opts.length);
  h[0] = 0x40 | (h.length / 4);
  h.writeUInt16BE(h.length + payload.length, 2);
  h.writeUInt16BE(o.id ?? 0x1234, 4);
  h.writeUInt16BE(o.frag ?? 0x4000, 6);
  h[8] = 64;
  h[9] = o.proto;
  h.writeUInt32BE(o.src, 12);
  h.writeUInt32BE(o.dst, 16);
  opts.copy(h, 20);
  h.writeUInt16BE(refChecksum(h), 10);
  return Buffer.concat([h, payload]);
}

function tcpSegment(src: number, dst: number, payload: Buffer, sport = 40000, dport = 22): Buffer {
  const t = Buffer.alloc(20);
  t.writeUInt16BE(sport, 0);
  t.writeUInt16BE(dport, 2);
  t.writeUInt32BE(0xdeadbeef, 4);
  t.writeUInt32BE(0x01020304, 8);
  t[12] = 0x50;
  t[13] = 0x18;
  t.writeUInt16BE(502, 14);
  const seg = Buffer.concat([t, payload]);
  seg.writeUInt16BE(refChecksum(pseudo(src, dst, TCP, seg.length), seg), 16);
  return seg;
}

function udpDatagram(src: number, dst: number, payload: Buffer, noChecksum = false, sport = 5353, dport = 53): Buffer {
  const d = Buffer.alloc(8 + payload.length);
  d.writeUInt16BE(sport, 0);
  d.writeUInt16BE(dport, 2);
  d.writeUInt16BE(d.length, 4);
  payload.copy(d, 8);
  if (!noChecksum) d.writeUInt16BE(refChecksum(pseudo(src, dst, UDP, d.length), d) || 0xffff, 6);
  return d;
}

function icmpMessage(type: number, code: number, rest: number, body: Buffer): Buffer {
  const m = Buffer.alloc(8 + body.length);
  m[0] = type;
  m[1] = code;
  m.writeUInt32BE(rest, 4);
  body.copy(m, 8);
  m.writeUInt16BE(refChecksum(m), 2);
  return m;
}

const tcpPacket = (src: number, dst: number, payload: Buffer, o: Partial<IpOpts> = {}) =>
  ipPacket({ src, dst, proto: TCP, ...o }, tcpSegment(src, dst, payload));
const udpPacket = (src: number, dst: number, payload: Buffer, noChecksum = false) =>
  ipPacket({ src, dst, proto: UDP }, udpDatagram(src, dst, payload, noChecksum));

/** The IP header checksum recomputed from scratch (field zeroed). */
function fullIpSum(p: Buffer): number {
  const h = Buffer.from(p.subarray(0, (p[0]! & 15) * 4));
  h.writeUInt16BE(0, 10);
  return refChecksum(h);
}

/** The TCP/UDP checksum recomputed from scratch over pseudo-header + segment (UDP: 0 → 0xFFFF). */
function fullL4Sum(p: Buffer): number {
  const hl = (p[0]! & 15) * 4;
  const proto = p[9]!;
  const seg = Buffer.from(p.subarray(hl, p.readUInt16BE(2)));
  const at = proto === TCP ? 16 : 6;
  seg.writeUInt16BE(0, at);
  const c = refChecksum(pseudo(p.readUInt32BE(12), p.readUInt32BE(16), proto, seg.length), seg);
  return proto === UDP && c === 0 ? 0xffff : c;
}

/** Every checksum of `p` equals a full recomputation (UDP checksum 0 = none is accepted as is). */
function expectChecksumsExact(p: Buffer): void {
  expect(p.readUInt16BE(10)).toBe(fullIpSum(p));
  const l4 = (p[0]! & 15) * 4;
  if (p[9] === TCP) expect(p.readUInt16BE(l4 + 16)).toBe(fullL4Sum(p));
  if (p[9] === UDP && p.readUInt16BE(l4 + 6) !== 0) expect(p.readUInt16BE(l4 + 6)).toBe(fullL4Sum(p));
  if (p[9] === ICMP) expect(refChecksum(p.subarray(l4, p.readUInt16BE(2)))).toBe(0);
}

const GUARD = 0xa5;

/**
 * Translates a copy of `pkt` placed at an offset inside a larger buffer and checks that nothing
 * outside [off, off+len) was written (and, on false, nothing at all). Returns the result and the packet.
 */
function translate(pkt: Buffer, newSrc: number, newDst: number, len = pkt.length, off = 11, tail = 13) {
  const buf = Buffer.alloc(off + Math.max(len, pkt.length) + tail, GUARD);
  pkt.copy(buf, off);
  const before = Buffer.from(buf);
  const ok = translateIPv4(buf, off, len, newSrc, newDst);
  expect(buf.subarray(0, off).equals(before.subarray(0, off))).toBe(true);
  expect(buf.subarray(off + len).equals(before.subarray(off + len))).toBe(true);
  if (!ok) expect(buf.equals(before)).toBe(true);
  return { ok, out: Buffer.from(buf.subarray(off, off + pkt.length)) };
}

// Paper §4.3: Alice (172.31.0.1) maps Bob to 172.31.0.2; Bob (192.168.0.1) maps Alice to 192.168.0.2.
const ALICE = ip('172.31.0.1');
const BOB_AT_ALICE = ip('172.31.0.2');
const BOB = ip('192.168.0.1');
const ALICE_AT_BOB = ip('192.168.0.2');

/** Arrival at Bob of a packet from Alice: source := Alice in Bob's subnet, destination := Bob. */
const atBob = (p: Buffer, len?: number) => translate(p, ALICE_AT_BOB, BOB, len);
/** Arrival at Alice of a packet from Bob. */
const atAlice = (p: Buffer, len?: number) => translate(p, BOB_AT_ALICE, ALICE, len);

/** Deterministic PRNG (mulberry32), so failures reproduce. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(r: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

/** Returns a copy of `p` with 16-bit word `at` chosen so that the sum over `covered(p)` hits `target`. */
function fudge(p: Buffer, at: number, covered: (p: Buffer) => number, target: number): Buffer {
  const q = Buffer.from(p);
  for (let w = 0; w <= 0xffff; w++) {
    q.writeUInt16BE(w, at);
    if (covered(q) === target) return q;
  }
  throw new Error('no fudge word found');
}

// ---------------------------------------------------------------------------------------------

describe('ipv4Checksum', () => {
  it('matches the well-known example header (checksum 0xb861) and the reference sum', () => {
    const h = Buffer.from('450000730000400040110000c0a80001c0a800c7', 'hex');
    expect(refChecksum(h)).toBe(0xb861);
    expect(ipv4Checksum(h, 0, 20)).toBe(0xb861);
    h.writeUInt16BE(0xb861, 10);
    expect(ipv4Checksum(h, 0, 20)).toBe(0);
    const odd = Buffer.from('0102030405', 'hex');
    expect(ipv4Checksum(odd, 0, 5)).toBe(refChecksum(odd));
  });
});

describe('translateIPv4: golden packets (literal checksums)', () => {
  it('TCP SYN with MSS option, Alice → Bob', () => {
    const syn = Buffer.from(
      '4500002c1c4640004006c644ac1f0001ac1f0002' + 'd431005001020304000000006002faf06c6c0000020405b4',
      'hex',
    );
    // The literals were computed independently (Python); check them with the reference code too.
    expect(fullIpSum(syn)).toBe(0xc644);
    expect(fullL4Sum(syn)).toBe(0x6c6c);
    const { ok, out } = atBob(syn);
    expect(ok).toBe(true);
    expect(out.toString('hex')).toBe(
      '4500002c1c46400040069d32c0a80002c0a80001' + 'd431005001020304000000006002faf0435a0000020405b4',
    );
    expect(out.readUInt16BE(10)).toBe(0x9d32);
    expect(out.readUInt16BE(36)).toBe(0x435a);
  });

  it('UDP DNS query, Alice → Bob', () => {
    const q = Buffer.from(
      '45000039000140004011e271ac1f0001ac1f0002' +
        'cf08003500255ce9abcd01000001000000000000076578616d706c6503636f6d0000010001',
      'hex',
    );
    expect(fullIpSum(q)).toBe(0xe271);
    expect(fullL4Sum(q)).toBe(0x5ce9);
    const { ok, out } = atBob(q);
    expect(ok).toBe(true);
    expect(out.readUInt16BE(10)).toBe(0xb95f);
    expect(out.readUInt16BE(26)).toBe(0x33d7);
    expect(out.subarray(28).equals(q.subarray(28))).toBe(true);
  });
});

describe('translateIPv4: TCP and UDP', () => {
  it('rewrites the paper example both ways', () => {
    const req = tcpPacket(ALICE, BOB_AT_ALICE, Buffer.from('GET / HTTP/1.0\r\n\r\n'));
    const r1 = atBob(req);
    expect(r1.ok).toBe(true);
    expect([ipAt(r1.out, 12), ipAt(r1.out, 16)]).toEqual(['192.168.0.2', '192.168.0.1']);
    expectChecksumsExact(r1.out);

    const reply = udpPacket(BOB, ALICE_AT_BOB, Buffer.from('odd-length reply'));
    const r2 = atAlice(reply);
    expect(r2.ok).toBe(true);
    expect([ipAt(r2.out, 12), ipAt(r2.out, 16)]).toEqual(['172.31.0.2', '172.31.0.1']);
    expectChecksumsExact(r2.out);
  });

  it('matches a full recomputation for random addresses, payloads and IP options', () => {
    const r = rng(1);
    for (let i = 0; i < 300; i++) {
      const [s, d, ns, nd] = [0, 0, 0, 0].map(() => Math.floor(r() * 2 ** 32));
      const payload = randomBytes(r, Math.floor(r() * 200));
      const options = r() < 0.3 ? Buffer.from([1, 1, 1, 0]) : undefined; // NOPs + EOL
      const p =
        r() < 0.5
          ? ipPacket({ src: s!, dst: d!, proto: TCP, options }, tcpSegment(s!, d!, payload))
          : ipPacket({ src: s!, dst: d!, proto: UDP, options }, udpDatagram(s!, d!, payload));
      const { ok, out } = translate(p, ns!, nd!);
      expect(ok).toBe(true);
      expect(out.readUInt32BE(12)).toBe(ns);
      expect(out.readUInt32BE(16)).toBe(nd);
      expectChecksumsExact(out);
      const hl = (p[0]! & 15) * 4;
      const csumAt = hl + (p[9] === TCP ? 16 : 6);
      // Nothing but the addresses and the two checksums changed.
      for (let j = 0; j < p.length; j++) {
        if (j >= 12 && j < 20) continue;
        if (j === 10 || j === 11 || j === csumAt || j === csumAt + 1) continue;
        expect(out[j]).toBe(p[j]);
      }
    }
  });

  it('keeps a UDP checksum of 0 (none) as 0', () => {
    const { ok, out } = atBob(udpPacket(ALICE, BOB_AT_ALICE, Buffer.from('no checksum'), true));
    expect(ok).toBe(true);
    expect(out.readUInt16BE(26)).toBe(0);
    expect(out.readUInt16BE(10)).toBe(fullIpSum(out));
  });

  it('sends a UDP checksum that computes to 0 as 0xFFFF, and translates one that was 0xFFFF', () => {
    // Choose a payload word so that the translated datagram's checksum computes to 0.
    const base = udpPacket(ALICE_AT_BOB, BOB, Buffer.alloc(10, 7));
    const tuned = fudge(base, 28, fullL4Sum, 0xffff);
    expect(fullL4Sum(tuned)).toBe(0xffff); // computed 0, transmitted 0xFFFF
    // The same datagram as Alice sent it.
    const sent = udpPacket(ALICE, BOB_AT_ALICE, tuned.subarray(28));
    expect(sent.readUInt16BE(26)).not.toBe(0xffff);
    const { out } = atBob(sent);
    expect(out.readUInt16BE(26)).toBe(0xffff);
    expect(out.equals(udpPacket(ALICE_AT_BOB, BOB, tuned.subarray(28)))).toBe(true);
    // And back: a datagram carrying 0xFFFF translates to the right nonzero value.
    const back = translate(out, ALICE, BOB_AT_ALICE).out;
    expect(back.equals(sent)).toBe(true);
  });

  it('handles TCP and IP checksums of 0x0000 before and after translation', () => {
    const base = tcpPacket(ALICE, BOB_AT_ALICE, Buffer.alloc(6, 1));
    // Original TCP checksum 0x0000 (sum 0xFFFF).
    const tcp0 = fudge(base, 40, fullL4Sum, 0);
    const fixed0 = Buffer.from(tcp0);
    fixed0.writeUInt16BE(0, 36);
    fixed0.writeUInt16BE(fullIpSum(fixed0), 10);
    const r1 = atBob(fixed0);
    expectChecksumsExact(r1.out);
    expect(r1.out.readUInt16BE(36)).not.toBe(0);
    // Translated TCP checksum 0x0000: tune the payload in Bob's view, then build Alice's packet.
    const viewB = fudge(tcpPacket(ALICE_AT_BOB, BOB, Buffer.alloc(6, 1)), 40, fullL4Sum, 0);
    const sent = tcpPacket(ALICE, BOB_AT_ALICE, viewB.subarray(40));
    const r2 = atBob(sent);
    expect(r2.out.readUInt16BE(36)).toBe(0);
    expectChecksumsExact(r2.out);
    // Translated IP header checksum 0x0000, via the identification field.
    const ipB = fudge(tcpPacket(ALICE_AT_BOB, BOB, Buffer.alloc(2)), 4, fullIpSum, 0);
    const sentIp = tcpPacket(ALICE, BOB_AT_ALICE, Buffer.alloc(2), { id: ipB.readUInt16BE(4) });
    const r3 = atBob(sentIp);
    expect(r3.out.readUInt16BE(10)).toBe(0);
    expectChecksumsExact(r3.out);
  });

  it('leaves a packet byte-identical when the addresses do not change, and fine when they swap', () => {
    for (const p of [
      tcpPacket(ALICE_AT_BOB, BOB, Buffer.from('x')),
      udpPacket(ALICE_AT_BOB, BOB, Buffer.from('y')),
      udpPacket(ALICE_AT_BOB, BOB, Buffer.from('z'), true),
    ]) {
      const same = atBob(p);
      expect(same.ok).toBe(true);
      expect(same.out.equals(p)).toBe(true);
      const swapped = translate(p, BOB, ALICE_AT_BOB);
      expect([ipAt(swapped.out, 12), ipAt(swapped.out, 16)]).toEqual(['192.168.0.1', '192.168.0.2']);
      expectChecksumsExact(swapped.out);
    }
    // Checksum fields holding 0xFFFF (non-canonical zero) are not disturbed by a no-op either.
    const p = tcpPacket(ALICE_AT_BOB, BOB, Buffer.alloc(4));
    p.writeUInt16BE(0xffff, 36);
    expect(atBob(p).out.equals(p)).toBe(true);
  });

  it('skips a transport checksum that is not inside the packet, and ignores bytes past the total length', () => {
    const full = tcpPacket(ALICE, BOB_AT_ALICE, Buffer.alloc(0));
    const short = Buffer.from(full.subarray(0, 30)); // 10 bytes of TCP header: no checksum field
    short.writeUInt16BE(30, 2);
    short.writeUInt16BE(0, 10);
    short.writeUInt16BE(fullIpSum(short), 10);
    const { ok, out } = atBob(short);
    expect(ok).toBe(true);
    expect(out.readUInt16BE(10)).toBe(fullIpSum(out));
    expect(out.subarray(20).equals(short.subarray(20))).toBe(true);

    // Link-layer padding after the packet (len > total length) is left alone.
    const udp = udpPacket(ALICE, BOB_AT_ALICE, Buffer.from('pad me'));
    const padded = Buffer.concat([udp, Buffer.alloc(8, 0xee)]);
    const r = atBob(padded);
    expect(r.ok).toBe(true);
    expect(r.out.subarray(udp.length).equals(Buffer.alloc(8, 0xee))).toBe(true);
    expectChecksumsExact(r.out);
  });
});

describe('translateIPv4: fragments', () => {
  function fragments(whole: Buffer, split: number): [Buffer, Buffer] {
    const hl = 20;
    const l4 = whole.subarray(hl);
    const o = { src: whole.readUInt32BE(12), dst: whole.readUInt32BE(16), proto: whole[9]!, id: 0x7777 };
    const first = ipPacket({ ...o, frag: 0x2000 }, l4.subarray(0, split));
    const rest = ipPacket({ ...o, frag: split / 8 }, l4.subarray(split));
    return [first, rest];
  }

  function reassemble(first: Buffer, rest: Buffer): Buffer {
    const l4 = Buffer.concat([first.subarray(20), rest.subarray(20)]);
    return ipPacket({ src: first.readUInt32BE(12), dst: first.readUInt32BE(16), proto: first[9]! }, l4);
  }

  for (const [name, make] of [
    ['UDP', () => udpPacket(ALICE, BOB_AT_ALICE, randomBytes(rng(2), 301))],
    ['TCP', () => tcpPacket(ALICE, BOB_AT_ALICE, randomBytes(rng(3), 300))],
  ] as const) {
    it(`${name}: the L4 checksum over the reassembled datagram is still right`, () => {
      const whole = make();
      const [first, rest] = fragments(whole, 48);
      const a = atBob(first);
      const b = atBob(rest);
      expect(a.ok && b.ok).toBe(true);
      expect(a.out.readUInt16BE(10)).toBe(fullIpSum(a.out));
      expect(b.out.readUInt16BE(10)).toBe(fullIpSum(b.out));
      const joined = reassemble(a.out, b.out);
      expect([ipAt(joined, 12), ipAt(joined, 16)]).toEqual(['192.168.0.2', '192.168.0.1']);
      expectChecksumsExact(joined);
    });
  }

  it('changes only the IP header of a non-first fragment, even if its payload looks like a header', () => {
    // Payload that would be a TCP header with a checksum if this were a first fragment.
    const p = ipPacket({ src: ALICE, dst: BOB_AT_ALICE, proto: TCP, frag: 0x2000 | 3 }, randomBytes(rng(4), 64));
    const { ok, out } = atBob(p);
    expect(ok).toBe(true);
    expect(out.subarray(20).equals(p.subarray(20))).toBe(true);
    expect(out.subarray(0, 10).equals(p.subarray(0, 10))).toBe(true);
    expect(out.readUInt16BE(10)).toBe(fullIpSum(out));
    expect([ipAt(out, 12), ipAt(out, 16)]).toEqual(['192.168.0.2', '192.168.0.1']);
  });
});

describe('translateIPv4: ICMP and other protocols', () => {
  it('changes only the IP header of an echo request', () => {
    const echo = ipPacket({ src: ALICE, dst: BOB_AT_ALICE, proto: ICMP }, icmpMessage(8, 0, 0x12340001, Buffer.from('ping')));
    const { ok, out } = atBob(echo);
    expect(ok).toBe(true);
    expect(out.subarray(20).equals(echo.subarray(20))).toBe(true);
    expectChecksumsExact(out);
  });

  it('changes only the IP header of GRE, SCTP and IPv6-in-IPv4 packets', () => {
    for (const proto of [47, 132, 41]) {
      const p = ipPacket({ src: ALICE, dst: BOB_AT_ALICE, proto }, randomBytes(rng(proto), 40));
      const { ok, out } = atBob(p);
      expect(ok).toBe(true);
      expect(out.subarray(20).equals(p.subarray(20))).toBe(true);
      expect(out.readUInt16BE(10)).toBe(fullIpSum(out));
    }
  });

  /**
   * Alice sends `sent`; Bob receives it translated; Bob's stack answers with an ICMP error quoting
   * `quote` bytes of what it received; Alice receives the error translated.
   */
  function roundTrip(sent: Buffer, quote: number, type = 3, code = 3) {
    const atB = atBob(sent).out;
    const err = ipPacket({ src: BOB, dst: ALICE_AT_BOB, proto: ICMP }, icmpMessage(type, code, 0, atB.subarray(0, quote)));
    const res = atAlice(err);
    expect(res.ok).toBe(true);
    const out = res.out;
    expect([ipAt(out, 12), ipAt(out, 16)]).toEqual(['172.31.0.2', '172.31.0.1']);
    expectChecksumsExact(out); // outer IP header and the ICMP checksum over the whole message
    return { atB, err, out, quoted: out.subarray(28) };
  }

  it('restores the UDP packet quoted in a port unreachable to what Alice sent', () => {
    const sent = udpPacket(ALICE, BOB_AT_ALICE, Buffer.from('hello bob, are you there?'));
    const { quoted, atB } = roundTrip(sent, sent.length);
    expect([ipAt(atB, 12), ipAt(atB, 16)]).toEqual(['192.168.0.2', '192.168.0.1']);
    expect([ipAt(quoted, 12), ipAt(quoted, 16)]).toEqual(['172.31.0.1', '172.31.0.2']);
    expect(quoted.equals(sent)).toBe(true); // embedded IP and UDP checksums included
  });

  it('keeps a quoted UDP checksum of 0 as 0', () => {
    const sent = udpPacket(ALICE, BOB_AT_ALICE, Buffer.from('no sum'), true);
    const { quoted } = roundTrip(sent, sent.length);
    expect(quoted.readUInt16BE(26)).toBe(0);
    expect(quoted.equals(sent)).toBe(true);
  });

  it('restores a quoted TCP header, with and without its checksum field present', () => {
    const sent = tcpPacket(ALICE, BOB_AT_ALICE, Buffer.from('data'));
    // Whole segment quoted: TCP checksum is fixed too.
    expect(roundTrip(sent, sent.length).quoted.equals(sent)).toBe(true);
    // IP header + 8 bytes (the RFC 792 minimum): ports and sequence number only.
    const { quoted } = roundTrip(sent, 28, 11, 0);
    expect(quoted.equals(sent.subarray(0, 28))).toBe(true);
    expect(quoted.readUInt16BE(10)).toBe(fullIpSum(quoted));
  });

  it('tolerates a quote too short to hold an IP header, and rejects one that is not IPv4', () => {
    const sent = udpPacket(ALICE, BOB_AT_ALICE, Buffer.from('x'));
    const short = roundTrip(sent, 12);
    expect(short.out.subarray(20).equals(short.err.subarray(20))).toBe(true); // ICMP untouched

    const garbage = Buffer.from(sent);
    garbage[0] = 0x65; // version 6
    const err = ipPacket({ src: BOB, dst: ALICE_AT_BOB, proto: ICMP }, icmpMessage(3, 1, 0, garbage));
    expect(atAlice(err).ok).toBe(false);
    const badIhl = Buffer.from(sent);
    badIhl[0] = 0x43;
    const err2 = ipPacket({ src: BOB, dst: ALICE_AT_BOB, proto: ICMP }, icmpMessage(12, 0, 0, badIhl));
    expect(atAlice(err2).ok).toBe(false);
  });

  it('handles every ICMP error type and a quote whose IHL runs past the bytes present', () => {
    const sent = tcpPacket(ALICE, BOB_AT_ALICE, Buffer.alloc(0), { options: Buffer.alloc(40, 1) }); // IHL 15
    for (const type of [3, 4, 5, 11, 12]) {
      const { quoted } = roundTrip(sent, 40, type, 0);
      expect(quoted.equals(sent.subarray(0, 40))).toBe(true);
    }
  });
});

describe('translateIPv4: malformed input', () => {
  const good = udpPacket(ALICE, BOB_AT_ALICE, Buffer.from('payload'));

  it('rejects non-IPv4 and inconsistent headers without touching them', () => {
    const mutate = (f: (b: Buffer) => void) => {
      const b = Buffer.from(good);
      f(b);
      return b;
    };
    expect(atBob(mutate((b) => (b[0] = 0x60))).ok).toBe(false); // IPv6
    expect(atBob(mutate((b) => (b[0] = 0x44))).ok).toBe(false); // IHL 4
    expect(atBob(mutate((b) => b.writeUInt16BE(good.length + 1, 2))).ok).toBe(false); // total > len
    expect(atBob(mutate((b) => b.writeUInt16BE(19, 2))).ok).toBe(false); // total < IHL*4
    expect(atBob(mutate((b) => (b[0] = 0x4f))).ok).toBe(false); // IHL 60 > total
    expect(atBob(good, 19).ok).toBe(false); // shorter than a header
    expect(atBob(good, good.length - 1).ok).toBe(false); // total length says more
  });

  it('rejects bounds outside the buffer', () => {
    const b = Buffer.from(good);
    expect(translateIPv4(b, 0, b.length + 1, 1, 2)).toBe(false);
    expect(translateIPv4(b, 1, b.length, 1, 2)).toBe(false);
    expect(translateIPv4(b, -1, 20, 1, 2)).toBe(false);
    expect(translateIPv4(b, 0.5, 20, 1, 2)).toBe(false);
    expect(translateIPv4(Buffer.alloc(0), 0, 0, 1, 2)).toBe(false);
    expect(b.equals(good)).toBe(true);
  });

  it('fuzz: 10,000 random and mutated buffers never throw nor write outside [off, off+len)', () => {
    const r = rng(42);
    const templates = [
      good,
      tcpPacket(ALICE, BOB_AT_ALICE, Buffer.from('some tcp data')),
      ipPacket({ src: ALICE, dst: BOB_AT_ALICE, proto: UDP, frag: 0x2000 }, udpDatagram(ALICE, BOB_AT_ALICE, Buffer.alloc(40)).subarray(0, 24)),
      ipPacket({ src: BOB, dst: ALICE_AT_BOB, proto: ICMP }, icmpMessage(3, 3, 0, good)),
      ipPacket({ src: BOB, dst: ALICE_AT_BOB, proto: ICMP }, icmpMessage(11, 0, 0, tcpPacket(ALICE, BOB, Buffer.alloc(30)))),
      ipPacket({ src: BOB, dst: ALICE_AT_BOB, proto: ICMP }, icmpMessage(8, 0, 0, Buffer.alloc(20))),
    ];
    let translated = 0;
    for (let i = 0; i < 10_000; i++) {
      let pkt: Buffer;
      const mode = r();
      if (mode < 0.3) {
        pkt = randomBytes(r, Math.floor(r() * 1501));
      } else if (mode < 0.5) {
        // Random bytes behind a plausible IPv4 start, to get past the first checks.
        pkt = randomBytes(r, 20 + Math.floor(r() * 1481));
        pkt[0] = 0x45 + Math.floor(r() * 4);
        pkt.writeUInt16BE(Math.floor(r() * (pkt.length + 1)), 2);
        if (r() < 0.5) pkt.writeUInt16BE(0, 6);
        pkt[9] = [ICMP, TCP, UDP][Math.floor(r() * 3)]!;
        if (pkt[9] === ICMP) pkt[20 + 4 * (pkt[0]! - 0x45)] = [3, 4, 5, 11, 12][Math.floor(r() * 5)]!;
      } else {
        pkt = Buffer.from(templates[Math.floor(r() * templates.length)]!);
        for (let k = 1 + Math.floor(r() * 4); k > 0; k--) pkt[Math.floor(r() * pkt.length)] = Math.floor(r() * 256);
      }
      let len = pkt.length;
      if (r() < 0.2) len = Math.floor(r() * (pkt.length + 1)); // truncated
      const off = Math.floor(r() * 9);
      const tail = Math.floor(r() * 9);
      const buf = Buffer.alloc(off + pkt.length + tail, GUARD);
      pkt.copy(buf, off);
      const before = Buffer.from(buf);
      const ipValid = len >= 20 && ipv4Checksum(buf, off, Math.min(len, (buf[off]! & 15) * 4)) === 0;
      const ns = Math.floor(r() * 2 ** 32);
      const nd = Math.floor(r() * 2 ** 32);
      let ok: boolean;
      try {
        ok = translateIPv4(buf, off, len, ns, nd);
      } catch (e) {
        throw new Error(`iteration ${i} threw: ${String(e)} on ${pkt.subarray(0, len).toString('hex')}`);
      }
      const outside = !buf.subarray(0, off).equals(before.subarray(0, off)) || !buf.subarray(off + len).equals(before.subarray(off + len));
      if (outside) throw new Error(`iteration ${i} wrote outside the packet`);
      if (!ok) {
        if (!buf.equals(before)) throw new Error(`iteration ${i} returned false after writing`);
        continue;
      }
      translated++;
      if (buf.readUInt32BE(off + 12) !== ns || buf.readUInt32BE(off + 16) !== nd) throw new Error(`iteration ${i}: addresses`);
      // An incremental update keeps a valid header checksum valid.
      if (ipValid && ipv4Checksum(buf, off, (buf[off]! & 15) * 4) !== 0) throw new Error(`iteration ${i}: IP checksum`);
    }
    expect(translated).toBeGreaterThan(2000); // the fuzz reached the translating paths
  });
});
