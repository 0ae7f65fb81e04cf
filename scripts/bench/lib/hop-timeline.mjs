// The rtt bench's per-hop timeline: where one ping through a TinCan link spends its round trip.
// tcpdump runs on the four interfaces the packet crosses (h1's vNIC and wire, pub's wire and vNIC),
// all stamped by the same kernel clock (the lab's hosts are namespaces of one kernel); each ping's
// request and reply are found on each of them and the time between consecutive sightings is a hop.
// tcpdump runs without immediate mode (it wakes up for a full buffer or once a second, not per packet).
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { median, nsOf } from './lab-nodes.mjs';

/** The hops of one ping h1 → pub through the link, in order (`from` → `to` sightings). */
export const HOPS = [
  ['h1_tun_to_wire', 'h1 datapath, vNIC to wire (TUN read, data channel send: SCTP, DTLS, UDP)'],
  ['wire_to_pub', 'wire h1 → pub (veths, nat1)'],
  ['pub_wire_to_tun', 'pub datapath, wire to vNIC (libjuice thread, DTLS, SCTP, Node.js main thread, TUN write)'],
  ['pub_kernel', 'pub kernel: ICMP echo request to reply'],
  ['pub_tun_to_wire', 'pub datapath, vNIC to wire (the reply)'],
  ['wire_to_h1', 'wire pub → h1'],
  ['h1_wire_to_tun', 'h1 datapath, wire to vNIC (the reply)'],
];

/**
 * Sightings from tcpdump's text (`-n -tt --time-stamp-precision=nano`): { ns, src, dst, icmp?:
 * { type: 'request' | 'reply', seq } } with `ns` as a BigInt of nanoseconds.
 */
export function parseTcpdump(text) {
  const out = [];
  for (const line of text.split('\n')) {
    const m = /^(\d+)\.(\d{9}) IP6? (\S+) > (\S+?): (.*)$/.exec(line);
    if (!m) continue;
    const icmp = /ICMP echo (request|reply), id \d+, seq (\d+)/.exec(m[5]);
    out.push({ ns: BigInt(m[1]) * 1_000_000_000n + BigInt(m[2]), src: m[3], dst: m[4], ...(icmp ? { icmp: { type: icmp[1], seq: Number(icmp[2]) } } : {}) });
  }
  return out;
}

/**
 * Per ping (by ICMP sequence number, from `firstSeq` on), the hops in µs: h1's and pub's vNIC captures
 * give the request and the reply; on the wire, the first datagram each way between them.
 * `h1Wire`/`pubWire`: sightings on h1's and pub's wire interface; `pubAddress`: pub's IPv4 address
 * (tells the direction). Pings missing a sighting are skipped. Returns { hopsUs: { key: [µs…] }, n }.
 */
export function hopTimeline({ h1Tun, h1Wire, pubWire, pubTun, pubAddress, firstSeq = 2 }) {
  const bySeq = (xs, type) => new Map(xs.filter((x) => x.icmp?.type === type).map((x) => [x.icmp.seq, x.ns]));
  const toPub = (x) => x.dst.startsWith(`${pubAddress}.`);
  const firstBetween = (xs, lo, hi, pred) => xs.find((x) => x.ns > lo && x.ns < hi && pred(x))?.ns;
  const [a, h, d, e] = [bySeq(h1Tun, 'request'), bySeq(h1Tun, 'reply'), bySeq(pubTun, 'request'), bySeq(pubTun, 'reply')];
  const hopsUs = Object.fromEntries(HOPS.map(([k]) => [k, []]));
  let n = 0;
  for (const [seq, ta] of a) {
    const [th, td, te] = [h.get(seq), d.get(seq), e.get(seq)];
    if (seq < firstSeq || th === undefined || td === undefined || te === undefined) continue;
    const tb = firstBetween(h1Wire, ta, td, toPub);
    const tc = tb === undefined ? undefined : firstBetween(pubWire, tb, td, toPub);
    const tf = firstBetween(pubWire, te, th, (x) => !toPub(x));
    const tg = tf === undefined ? undefined : firstBetween(h1Wire, tf, th, (x) => !toPub(x));
    const times = [ta, tb, tc, td, te, tf, tg, th];
    if (times.some((t) => t === undefined)) continue;
    HOPS.forEach(([k], i) => hopsUs[k].push(Number(times[i + 1] - times[i]) / 1000));
    n++;
  }
  return { hopsUs, n };
}

/** tcpdump on `iface` in a lab host; stop() → its sightings. */
export async function capture(host, iface, filter) {
  const proc = spawn('ip', ['netns', 'exec', nsOf(host), 'tcpdump', '-i', iface, '-n', '-tt', '--time-stamp-precision=nano', '-B', '4096', filter],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (c) => { stdout += c; });
  const exited = new Promise((r) => proc.once('exit', r));
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`tcpdump on ${host} ${iface}: not listening after 10 s: ${stderr.trim()}`)), 10_000);
    proc.stderr.on('data', (c) => {
      stderr += c;
      if (/listening on/.test(stderr)) { clearTimeout(t); resolve(); }
    });
    proc.once('exit', (code) => { clearTimeout(t); reject(new Error(`tcpdump on ${host} ${iface} exited (${code}): ${stderr.trim()}`)); });
  });
  return {
    async stop() {
      // libpcap hands tcpdump a block of packets when it is full or a second old; what is still in an
      // unfinished block when tcpdump stops is lost: wait for the block to be handed over first.
      await sleep(1500);
      proc.kill('SIGINT');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
      return parseTcpdump(stdout);
    },
  };
}

/**
 * Pings h1 → `address` through the link (`ping(count, intervalS)` → RTTs) with tcpdump on the four
 * interfaces; { hopsUs, medians: { key: µs }, n, rtts }. `lab`: lab.json's content.
 */
export async function measureTimeline(lab, { ping, probes, intervalS, pubAddress, vnic = 'tincan0' }) {
  const h1 = lab.hosts.h1;
  const pub = lab.hosts.pub;
  const caps = [];
  try {
    caps.push(await capture('h1', vnic, 'icmp'));
    caps.push(await capture('h1', h1.interface, `udp and host ${pubAddress}`));
    caps.push(await capture('pub', pub.interface, `udp and host ${h1.public_ipv4}`));
    caps.push(await capture('pub', vnic, 'icmp'));
    const rtts = await ping(probes, intervalS);
    const [h1Tun, h1Wire, pubWire, pubTun] = await Promise.all(caps.splice(0).map((c) => c.stop()));
    const { hopsUs, n } = hopTimeline({ h1Tun, h1Wire, pubWire, pubTun, pubAddress });
    return { hopsUs, n, rtts, medians: Object.fromEntries(Object.entries(hopsUs).map(([k, xs]) => [k, xs.length ? median(xs) : NaN])) };
  } finally {
    await Promise.all(caps.map((c) => c.stop().catch(() => undefined)));
  }
}
