import { describe, expect, it } from 'vitest';
import { ip6ToBytes, uidFromIp4 } from '@tincan/protocol';
import { ForwardingTable } from '../src/forwarding-table.js';

const A = uidFromIp4('10.254.0.2');
const B = uidFromIp4('10.254.0.3');

function ip4Packet(dst: string): Buffer {
  const p = Buffer.alloc(20);
  p[0] = 0x45;
  Buffer.from(dst.split('.').map(Number)).copy(p, 16);
  return p;
}

describe('ForwardingTable', () => {
  it('finds the peer of an IPv4 destination read straight from a packet', () => {
    const t = new ForwardingTable();
    t.map4(A, '10.254.0.2');
    t.map4(B, '10.254.0.3');
    expect(t.lookup4(ip4Packet('10.254.0.2'), 16)?.uid).toBe(A);
    expect(t.lookup4(ip4Packet('10.254.0.3'), 16)?.uid).toBe(B);
    expect(t.lookup4(ip4Packet('10.254.0.4'), 16)).toBeUndefined();
  });

  it('finds IPv6 peers, including addresses that share a hash bucket', () => {
    const t = new ForwardingTable();
    t.map6(A, 'fd50::a');
    t.map6(B, 'fd50::b');
    const buf = Buffer.concat([Buffer.alloc(8), ip6ToBytes('fd50::b')]);
    expect(t.lookup6(buf, 8)?.uid).toBe(B);
    expect(t.lookup6(ip6ToBytes('fd50::c'), 0)).toBeUndefined();
    // Force a collision: many addresses, each must still resolve to its own peer.
    for (let i = 0; i < 2000; i++) t.map6(i % 2 ? A : B, `fd51::${i.toString(16)}`);
    for (let i = 0; i < 2000; i++) expect(t.lookup6(ip6ToBytes(`fd51::${i.toString(16)}`), 0)?.uid).toBe(i % 2 ? A : B);
  });

  it('moves an address to its latest owner and forgets unmapped peers', () => {
    const t = new ForwardingTable();
    t.map4(A, '10.254.0.9');
    t.map4(B, '10.254.0.9');
    expect(t.lookup4(ip4Packet('10.254.0.9'), 16)?.uid).toBe(B);
    expect(t.peer(A)?.ip4.size).toBe(0);
    t.unmap4(A, '10.254.0.9'); // not A's any more: no effect on B
    expect(t.lookup4(ip4Packet('10.254.0.9'), 16)?.uid).toBe(B);
    t.unmap4(B, '10.254.0.9');
    expect(t.lookup4(ip4Packet('10.254.0.9'), 16)).toBeUndefined();
    expect(t.peer(B)).toBeUndefined();
    t.map6(A, 'fd50::1');
    t.map6(B, 'fd50::1');
    expect(t.peer(A)?.ip6.size).toBe(0);
    t.removePeer(B);
    expect(t.lookup6(ip6ToBytes('fd50::1'), 0)).toBeUndefined();
  });

  it('remembers which peer is translated, and forgets it with the mapping', () => {
    const t = new ForwardingTable();
    t.map4(A, '172.31.0.2', true);
    expect(t.peer(A)?.translate4).toBe(0xac1f0002);
    t.map4(A, '172.31.0.2');
    expect(t.peer(A)?.translate4).toBeNull();
    t.map4(A, '172.31.0.2', true);
    t.map4(B, '172.31.0.2'); // the address moves to B: A is no longer translated to it
    expect(t.peer(A)?.translate4).toBeNull();
    t.map4(A, '172.31.0.3', true);
    t.unmap4(A, '172.31.0.3');
    expect(t.peer(A)?.translate4 ?? null).toBeNull();
  });
});
