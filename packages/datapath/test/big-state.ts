// A get_state answer of a large node: `links` fake links (all fields filled, as a busy link has them)
// and `peers` online presences, half of them in overlay "a", half in "b".
import { randomBytes } from 'node:crypto';
import type { LinkInfo, PeerInfo, StateResult } from '@tincan/protocol';

const uid = () => randomBytes(20).toString('hex');

export function bigState(links: number, peers: number): StateResult {
  const now = Date.now();
  const l: LinkInfo[] = Array.from({ length: links }, (_, i) => ({
    uid: uid(), jid: `node${i}@xmpp.lab/tincan-${i}`, state: 'up', role: i % 2 ? 'offerer' : 'answerer',
    ip4: [`10.254.${i >> 8}.${i & 255}`], ip6: [`fd50::${i.toString(16)}`],
    local_candidate: 'srflx', remote_candidate: 'relay', local_address: '198.18.0.11:50123', remote_address: '[fd00:4::3]:3478',
    rtt_ms: 12.5, queue_delay_ms: 0.4, created_ms: now, connected_ms: now, last_rx_ms: now, last_tx_ms: now,
    stats: {
      bytes_in: 123456789, bytes_out: 987654321, packets_in: 123456, packets_out: 654321,
      drops_backpressure: 1, drops_spoofed: 2, drops_malformed: 3, compact_in: 100000, compact_out: 600000,
      drops_aqm: 4, probes_out: 5000, probes_answered: 4990, probes_echoed: 5001, probes_bad: 0,
    },
    framing: 'compact',
  }));
  const p: PeerInfo[] = Array.from({ length: peers }, (_, i) => ({
    uid: uid(), jid: `user${i}@xmpp.lab/tincan-${uid().slice(0, 8)}`, overlay: i % 2 ? 'a' : 'b', last_heard_ms: now, caps: ['trickle'],
  }));
  return {
    node: {
      uid: uid(), vnic: 'tincan0', ip4: '10.254.0.1/16', ip6: 'fd50::1/64', mtu: 1280, offload: true,
      fingerprint: 'AA:'.repeat(31) + 'AA', uptime_s: 100, controller: '127.0.0.1:40000',
    },
    xmpp: { state: 'online', jid: 'node0@xmpp.lab/tincan', overlay: 'a' },
    links: l,
    peers: p,
    routes: l.slice(0, Math.min(100, links)).map((x, i) => ({ uid: x.uid, via: l[(i + 1) % links]!.uid, packets_out: i })),
    subnets: [{ subnet: '10.44.0.0/24', uid: l[0]?.uid ?? uid() }],
    transit: true,
    counters: { rpcRequests: 1, tunPacketsIn: 2 },
  };
}
