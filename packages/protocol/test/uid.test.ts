import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  Uid, bytesToIp6, ip4ToNumber, ip6FromUid, ip6ToBytes, numberToIp4, parseCidr, uidFromBytes, uidFromIp4, uidToBytes,
} from '../src/index.js';

describe('UIDs and virtual addresses', () => {
  it('binds a GroupVPN UID to the SHA-1 of the dotted IPv4 address', () => {
    expect(uidFromIp4('10.254.0.1')).toBe(createHash('sha1').update('10.254.0.1').digest('hex'));
    expect(uidFromIp4('10.254.0.1')).not.toBe(uidFromIp4('10.254.0.2'));
    expect(Uid.safeParse(uidFromIp4('10.254.0.1')).success).toBe(true);
  });

  it('rejects UIDs that are not 40 lowercase hex digits', () => {
    for (const bad of ['', 'abc', 'A'.repeat(40), '0'.repeat(39), '0'.repeat(41), 'g'.repeat(40)]) {
      expect(Uid.safeParse(bad).success).toBe(false);
    }
  });

  it('round-trips UIDs through bytes', () => {
    const uid = uidFromIp4('192.168.7.9');
    const b = uidToBytes(uid);
    expect(b.length).toBe(20);
    const framed = Buffer.concat([Buffer.from([1, 2, 3]), b]);
    expect(uidFromBytes(framed, 3)).toBe(uid);
  });

  it('derives the IPv6 address from the UID inside the ULA /64', () => {
    const uid = 'a1b2c3d4e5f60718293a4b5c6d7e8f9011223344';
    expect(ip6FromUid(uid)).toBe('fd50:dbc:41f2:4a3c:a1b2:c3d4:e5f6:718');
    expect(ip6FromUid(uid, 'fd00::')).toBe('fd00::a1b2:c3d4:e5f6:718');
  });

  it('parses and prints IPv4 and IPv6 addresses', () => {
    expect(ip4ToNumber('10.254.0.1')).toBe(0x0afe0001);
    expect(numberToIp4(0xc0a80001)).toBe('192.168.0.1');
    expect(() => ip4ToNumber('10.0.0')).toThrow();
    expect(() => ip4ToNumber('10.0.0.256')).toThrow();
    expect(bytesToIp6(ip6ToBytes('fd50:dbc:41f2:4a3c::1'))).toBe('fd50:dbc:41f2:4a3c::1');
    expect(bytesToIp6(ip6ToBytes('::'))).toBe('::');
    expect(bytesToIp6(ip6ToBytes('1:0:0:2:0:0:0:3'))).toBe('1:0:0:2::3');
    expect(() => ip6ToBytes('1::2::3')).toThrow();
    expect(() => ip6ToBytes('12345::')).toThrow();
  });

  it('parses CIDRs with range checks', () => {
    expect(parseCidr('10.254.0.1/16')).toEqual({ address: '10.254.0.1', prefix: 16, family: 4 });
    expect(parseCidr('fd50::1/64')).toEqual({ address: 'fd50::1', prefix: 64, family: 6 });
    expect(() => parseCidr('10.0.0.1')).toThrow();
    expect(() => parseCidr('10.0.0.1/33')).toThrow();
    expect(() => parseCidr('fd50::1/129')).toThrow();
  });
});
