import { describe, expect, it } from 'vitest';
import { ip6ToBytes, uidFromIp4, uidToBytes } from '@tincan/protocol';
import { ForwardingTable, nextHop } from '../src/forwarding-table.js';
import type { Link } from '../src/link.js';

const A = uidFromIp4('10.254.0.2');
const B = uidFromIp4('10.254.0.3');
const C = uidFromIp4('10.254.0.4');

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

  it('routes IPv4 subnets by longest prefix after the exact addresses, moves and removes them', () => {
    const t = new ForwardingTable();
    expect(t.mapSubnet(A, '10.44.0.0/16')).toBe('10.44.0.0/16');
    t.mapSubnet(B, '10.44.5.0/24');
    t.mapSubnet(C, '10.44.5.128/25');
    t.map4(C, '10.44.5.9'); // an exact address wins over every prefix
    const at = (ip: string) => t.lookup4(ip4Packet(ip), 16)?.uid;
    expect(at('10.44.5.7')).toBe(B);
    expect(at('10.44.5.200')).toBe(C);
    expect(at('10.44.5.9')).toBe(C);
    expect(at('10.44.6.1')).toBe(A);
    expect(at('10.44.255.255')).toBe(A);
    expect(at('10.45.0.1')).toBeUndefined();
    expect(at('10.43.255.255')).toBeUndefined();
    expect(t.subnets()).toEqual([
      { subnet: '10.44.5.128/25', uid: C }, { subnet: '10.44.5.0/24', uid: B }, { subnet: '10.44.0.0/16', uid: A },
    ]);
    // A subnet maps to one UID: a later mapping moves it.
    t.mapSubnet(A, '10.44.5.0/24');
    expect(at('10.44.5.7')).toBe(A);
    expect(t.peer(B)).toBeUndefined(); // B had nothing else
    expect(t.peer(A)?.subnets).toEqual(new Set(['10.44.0.0/16', '10.44.5.0/24']));
    expect(t.unmapSubnet(B, '10.44.5.0/24')).toBe(false); // not B's
    expect(t.unmapSubnet(A, '10.44.5.0/24')).toBe(true);
    expect(at('10.44.5.7')).toBe(A); // the /16 still covers it
    expect(t.unmapSubnet(A, '10.44.0.0/16')).toBe(true);
    expect(at('10.44.5.7')).toBeUndefined();
    expect(t.peer(A)).toBeUndefined();
    // Exact-prefix /32 and a default route both work as prefixes.
    t.mapSubnet(B, '192.0.2.1/32');
    t.mapSubnet(A, '0.0.0.0/0');
    expect(at('192.0.2.1')).toBe(B);
    expect(at('192.0.2.2')).toBe(A);
    expect(at('255.255.255.255')).toBe(A);
  });

  it('routes IPv6 subnets by longest prefix, including prefixes that end inside a byte', () => {
    const t = new ForwardingTable();
    t.mapSubnet(A, 'fd00:44::/48');
    t.mapSubnet(B, 'FD00:44:0:10::/60'); // kept in canonical form
    t.mapSubnet(C, 'fd00:44:0:10:8000::/65');
    t.map6(A, 'fd00:44:0:10::9');
    const at = (ip: string) => t.lookup6(Buffer.concat([Buffer.alloc(8), ip6ToBytes(ip)]), 8)?.uid;
    expect(at('fd00:44:0:10::1')).toBe(B);
    expect(at('fd00:44:0:1f:ffff::1')).toBe(B);
    expect(at('fd00:44:0:10:8000::1')).toBe(C);
    expect(at('fd00:44:0:10:7fff::1')).toBe(B);
    expect(at('fd00:44:0:10::9')).toBe(A);
    expect(at('fd00:44:0:20::1')).toBe(A);
    expect(at('fd00:45::1')).toBeUndefined();
    expect(t.subnetOwner('fd00:44:0:10::/60')).toBe(B);
    expect(t.subnets().map((s) => s.subnet)).toEqual(['fd00:44:0:10:8000::/65', 'fd00:44:0:10::/60', 'fd00:44::/48']);
    t.mapSubnet(C, 'fd00:44:0:10::/60');
    expect(at('fd00:44:0:10::1')).toBe(C);
    expect(t.unmapSubnet(C, 'fd00:44:0:10::/60')).toBe(true);
    expect(at('fd00:44:0:10::1')).toBe(A);
  });

  it('finds peers by the UID bytes of a frame header, through hash collisions and removals', () => {
    const t = new ForwardingTable();
    const uids = Array.from({ length: 3000 }, (_, i) => uidFromIp4(`10.1.${i >> 8}.${i & 255}`));
    uids.forEach((u, i) => t.map4(u, `10.2.${i >> 8}.${i & 255}`));
    // Two UIDs whose FNV-1a hashes are equal (0xc562b146): one bucket, told apart by the full compare.
    const twins = ['08e513c861dbf6c277e28ef00365cc321ac97c4d', 'f570b2854a227558f874912217006bab4d4d823c'];
    t.map4(twins[0]!, '10.3.0.1');
    const frame = Buffer.alloc(40);
    uidToBytes(twins[1]!).copy(frame, 20);
    expect(t.lookupUid(frame, 20)).toBeUndefined();
    t.map4(twins[1]!, '10.3.0.2');
    for (const u of twins) {
      uidToBytes(u).copy(frame, 20);
      expect(t.lookupUid(frame, 20)?.uid).toBe(u);
    }
    t.unmap4(twins[0]!, '10.3.0.1');
    expect(t.lookupUid(frame, 20)?.uid).toBe(twins[1]);
    for (const u of uids) {
      uidToBytes(u).copy(frame, 20);
      expect(t.lookupUid(frame, 20)?.uid).toBe(u);
    }
    uidToBytes(uidFromIp4('10.9.9.9')).copy(frame, 0);
    expect(t.lookupUid(frame, 0)).toBeUndefined();
    t.removePeer(uids[7]!);
    uidToBytes(uids[7]!).copy(frame, 0);
    expect(t.lookupUid(frame, 0)).toBeUndefined();
    t.unmap4(uids[8]!, '10.2.0.8'); // dropped when empty: out of the index too
    uidToBytes(uids[8]!).copy(frame, 0);
    expect(t.lookupUid(frame, 0)).toBeUndefined();
    t.map4(uids[8]!, '10.2.0.8');
    expect(t.lookupUid(frame, 0)?.uid).toBe(uids[8]);
  });

  it('picks the next hop: an up direct link first, else the route via another peer, else none', () => {
    const t = new ForwardingTable();
    const link = (uid: string, state = 'up') => ({ uid, state }) as unknown as Link & { state: string };
    t.setRoute(C, B); // B has no link yet: the route exists but is unusable
    expect(t.routes()).toEqual([{ uid: C, via: B, packets_out: 0 }]);
    const c = t.peer(C)!;
    expect(nextHop(c)).toBeNull();
    const lb = link(B);
    t.ensurePeer(B).link = lb;
    expect(nextHop(c)).toBe(lb);
    const lc = link(C, 'connecting');
    c.link = lc;
    expect(nextHop(c)).toBe(lb); // a direct link that is not up does not win
    lc.state = 'up';
    expect(nextHop(c)).toBe(lc); // an up direct link always wins
    lc.state = 'down';
    expect(nextHop(c)).toBe(lb); // and when it goes down, the route takes over at once
    lb.state = 'down';
    expect(nextHop(c)).toBeNull();
    lb.state = 'up';
    t.setRoute(C, A); // replaces the via
    expect(nextHop(c)).toBeNull();
    expect(t.routes()).toEqual([{ uid: C, via: A, packets_out: 0 }]);
    t.setRoute(C, null);
    expect(t.routes()).toEqual([]);
    expect(t.peer(A)).toBeUndefined(); // nothing else kept A
    expect(() => t.setRoute(C, C)).toThrow();
  });

  it('keeps routed peers and the peers they go via, however their addresses and links come and go', () => {
    const t = new ForwardingTable();
    t.map4(B, '10.254.0.3');
    t.map4(C, '10.254.0.4');
    t.setRoute(C, B);
    t.unmap4(C, '10.254.0.4');
    t.unmap4(B, '10.254.0.3');
    const c = t.peer(C);
    const b = t.peer(B);
    expect(c?.via).toBe(b); // both kept: C has a route, B is its via
    expect(b).toBeDefined();
    // A later link to B lands on the same record the route points at.
    expect(t.ensurePeer(B)).toBe(b);
    t.setRoute(C, null);
    expect(t.peer(C)).toBeUndefined();
    expect(t.peer(B)).toBeUndefined();
    // Forgetting a peer forgets the routes through it.
    t.setRoute(C, B);
    t.setRoute(A, B);
    t.removePeer(B);
    expect(t.routes()).toEqual([]);
    expect(t.peer(A)).toBeUndefined();
  });
});
