// The rtt bench's per-hop timeline (scripts/bench/lib/hop-timeline.mjs) on tcpdump text: parsing,
// matching a ping's sightings across the four captures, and skipping pings with a sighting missing.
import { describe, expect, it } from 'vitest';
import { HOPS, hopTimeline, parseTcpdump } from '../lib/hop-timeline.mjs';

const PUB = '198.18.0.10';
const t = (us) => `1764000000.${String(us * 1000).padStart(9, '0')}`;
const icmp = (us, type, seq) => `${t(us)} IP 10.254.0.${type === 'request' ? '1 > 10.254.0.2' : '2 > 10.254.0.1'}: ICMP echo ${type}, id 7, seq ${seq}, length 64`;
const udp = (us, toPub, len = 150) => (toPub
  ? `${t(us)} IP 10.1.0.2.40000 > ${PUB}.50000: UDP, length ${len}`
  : `${t(us)} IP ${PUB}.50000 > 10.1.0.2.40000: UDP, length ${len}`);
const udpAtPub = (us, toPub) => (toPub
  ? `${t(us)} IP 198.18.0.11.40000 > ${PUB}.50000: UDP, length 150`
  : `${t(us)} IP ${PUB}.50000 > 198.18.0.11.40000: UDP, length 180`);

/** One ping starting at `at` µs with the lead's hand-measured hops (198, 39, 354, 14, 62, 14, 234 µs). */
function ping(at, seq) {
  const hops = [198, 39, 354, 14, 62, 14, 234];
  const ts = hops.reduce((acc, h) => [...acc, acc.at(-1) + h], [at]);
  return {
    h1Tun: [icmp(ts[0], 'request', seq), icmp(ts[7], 'reply', seq)],
    h1Wire: [udp(ts[1], true), udp(ts[6], false)],
    pubWire: [udpAtPub(ts[2], true), udpAtPub(ts[5], false)],
    pubTun: [icmp(ts[3], 'request', seq), icmp(ts[4], 'reply', seq)],
  };
}

function captures(pings) {
  const all = { h1Tun: [], h1Wire: [], pubWire: [], pubTun: [] };
  for (const p of pings) for (const k of Object.keys(all)) all[k].push(...p[k]);
  return Object.fromEntries(Object.entries(all).map(([k, lines]) => [k, parseTcpdump(`tcpdump: verbose output suppressed\n${lines.join('\n')}\n`)]));
}

describe('hop timeline', () => {
  it('parses tcpdump lines with nanosecond stamps, addresses and ICMP sequence numbers', () => {
    const [x, y] = parseTcpdump(`${icmp(5, 'reply', 3)}\n${udp(7, true)}\n3 packets captured\n`);
    expect(x).toEqual({ ns: 1_764_000_000_000_005_000n, src: '10.254.0.2', dst: '10.254.0.1', icmp: { type: 'reply', seq: 3 } });
    expect(y).toEqual({ ns: 1_764_000_000_000_007_000n, src: '10.1.0.2.40000', dst: `${PUB}.50000` });
  });

  it('takes each ping apart into its hops, from the second sequence number on', () => {
    const { hopsUs, n } = hopTimeline({ ...captures([ping(0, 1), ping(50_000, 2), ping(100_000, 3)]), pubAddress: PUB });
    expect(n).toBe(2);
    expect(HOPS.map(([k]) => hopsUs[k])).toEqual([198, 39, 354, 14, 62, 14, 234].map((h) => [h, h]));
  });

  it('skips a ping with a sighting missing, and ignores a stray datagram outside the ping', () => {
    const lost = ping(50_000, 2);
    lost.pubWire = lost.pubWire.slice(1); // the reply's datagram was not seen on pub's wire
    const stray = ping(100_000, 3);
    stray.h1Wire.unshift(udp(99_000, true, 120)); // before the request left the vNIC: not this ping's
    const { hopsUs, n } = hopTimeline({ ...captures([ping(0, 1), lost, stray]), pubAddress: PUB });
    expect(n).toBe(1);
    expect(hopsUs.h1_tun_to_wire).toEqual([198]);
  });
});
