#!/usr/bin/env node
// npm run bench -- idle: what an idle TinCan node costs the network. Two datapaths, h1 (behind a cone
// NAT) and pub, each registered with the lab's XMPP server (prosody) as members of the same group,
// linked to each other (STUN and TURN configured, as a controller does) and then left alone. Over the
// window, iptables byte counters in each host (IP bytes, both directions, on its underlay interface)
// split the traffic into: the link (UDP to/from the peer), STUN/TURN maintenance (UDP to/from the
// server) and XMPP (TCP port 5222). Prints bytes/s per link and per node against the targets;
// writes docs/bench/idle.csv (counter samples) and docs/bench/idle.svg (cumulative bytes over time).
//
// Environment: BENCH_IDLE_SECONDS (120: one period of the datapath's 2-minute presence broadcast and
// server ping, so the window holds exactly one of each), BENCH_IDLE_SAMPLE_SECONDS (5).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, labUp, linkDirect, registerXmpp, startNode } from './lib/lab-nodes.mjs';
import { cleanupStack, iptablesCounters, sleep } from './lib/measure.mjs';
import { csv, lineChartSvg } from './lib/plot.mjs';
import { figure, writeResults } from './lib/results.mjs';

const WINDOW_S = Number(process.env.BENCH_IDLE_SECONDS ?? 120);
const SAMPLE_S = Number(process.env.BENCH_IDLE_SAMPLE_SECONDS ?? 5);
const SETTLE_MS = 3000;

const cleanup = cleanupStack();
const lab = await labUp();
cleanup.add('lab', lab.down);
const info = lab.info;
const server = info.server.ipv4; // prosody and coturn listen on both
const xmppPort = String(info.xmpp.port);
const stunPort = info.stun.split(':').pop();

/** Counting rules for a host whose peer is seen at `peerAddr` (its public address). */
function rules(host, peerAddr) {
  const ifc = info.hosts[host].interface;
  const i = ['-i', ifc], o = ['-o', ifc];
  const srv = server.join(',');
  return [
    { key: 'link', in: [...i, '-p', 'udp', '-s', peerAddr], out: [...o, '-p', 'udp', '-d', peerAddr] },
    { key: 'stun_turn', in: [...i, '-p', 'udp', '-s', srv], out: [...o, '-p', 'udp', '-d', srv] },
    { key: 'udp', in: [...i, '-p', 'udp'], out: [...o, '-p', 'udp'] },
    { key: 'xmpp', in: [...i, '-p', 'tcp', '-s', srv, '--sport', xmppPort], out: [...o, '-p', 'tcp', '-d', srv, '--dport', xmppPort] },
    { key: 'all', in: i, out: o },
  ];
}

let failed = false;
try {
  const ice = { stun: [info.stun], turn: [{ address: info.turn.address, username: info.turn.username, password: info.turn.password }] };
  const h1 = await startNode('h1', '10.254.0.1');
  cleanup.add('datapath h1', h1.stop);
  const pub = await startNode('pub', '10.254.0.2');
  cleanup.add('datapath pub', pub.stop);
  await Promise.all([registerXmpp(h1, info, 'node51'), registerXmpp(pub, info, 'node52')]);
  const setupMs = await linkDirect(h1, pub, ice);
  const l = (await h1.call('get_state')).links[0];
  console.log(`idle: h1 (node51) and pub (node52) registered with prosody (group "lab"), link up in ${setupMs.toFixed(0)} ms over ${l.local_candidate}/${l.remote_candidate} ${l.local_address} -> ${l.remote_address}; STUN ${info.stun}, TURN ${info.turn.address}`);
  const hosts = [
    { host: 'h1', node: h1, ctr: await iptablesCounters('h1', `TBIDLE${process.pid}`, rules('h1', info.hosts.pub.public_ipv4)) },
  ];
  cleanup.add('iptables counters h1', hosts[0].ctr.remove);
  hosts.push({ host: 'pub', node: pub, ctr: await iptablesCounters('pub', `TBIDLE${process.pid}`, rules('pub', info.hosts.h1.public_ipv4)) });
  cleanup.add('iptables counters pub', hosts[1].ctr.remove);
  await sleep(SETTLE_MS);

  // Sample the counters every SAMPLE_S s over the window (deltas against the first sample).
  const samples = [];
  const t0 = performance.now();
  const base = {};
  for (const h of hosts) base[h.host] = await h.ctr.read();
  const statsBefore = (await h1.call('get_state')).links[0].stats;
  console.log(`counting for ${WINDOW_S} s (samples every ${SAMPLE_S} s) ...`);
  for (let t = SAMPLE_S; ; t += SAMPLE_S) {
    const due = t0 + Math.min(t, WINDOW_S) * 1000;
    await sleep(Math.max(0, due - performance.now()));
    const at = (performance.now() - t0) / 1000;
    for (const h of hosts) {
      const c = await h.ctr.read();
      for (const [key, v] of Object.entries(c)) {
        const b = base[h.host][key];
        samples.push({ t: at, host: h.host, key, inBytes: v.inBytes - b.inBytes, outBytes: v.outBytes - b.outBytes, inPackets: v.inPackets - b.inPackets, outPackets: v.outPackets - b.outPackets });
      }
    }
    if (t >= WINDOW_S) break;
  }
  const statsAfter = (await h1.call('get_state')).links[0].stats;
  const state = (await h1.call('get_state')).links[0];
  if (state.state !== 'up') throw new Error(`the link went ${state.state} during the window`);

  const last = (host, key) => samples.filter((s) => s.host === host && s.key === key).at(-1);
  const T = last('h1', 'all').t;
  const bytes = (host, key) => { const s = last(host, key); return s.inBytes + s.outBytes; };
  const rate = (host, key) => bytes(host, key) / T;
  const desc = (host, key) => { const s = last(host, key); return `${rate(host, key).toFixed(1)} B/s (out ${s.outBytes} B in ${s.outPackets} packets, in ${s.inBytes} B in ${s.inPackets})`; };
  console.log(`\nresults over ${T.toFixed(1)} s of idle (IP bytes, both directions, counted in each host):`);
  for (const host of ['h1', 'pub']) {
    const strayUdp = bytes(host, 'udp') - bytes(host, 'link') - bytes(host, 'stun_turn');
    console.log(`  ${host}: UDP with the peer (the link) ${desc(host, 'link')}`);
    console.log(`  ${host}: UDP with the STUN/TURN server ${desc(host, 'stun_turn')}`);
    console.log(`  ${host}: UDP to anywhere else (e.g. checks to the peer's private host candidate) ${(strayUdp / T).toFixed(1)} B/s`);
    console.log(`  ${host}: XMPP ${desc(host, 'xmpp')}`);
    console.log(`  ${host}: not UDP and not XMPP on the interface ${((bytes(host, 'all') - bytes(host, 'udp') - bytes(host, 'xmpp')) / T).toFixed(1)} B/s`);
  }
  console.log(`  TinCan link counters on h1 (frames through the link, not maintenance): before ${JSON.stringify(statsBefore)}, after ${JSON.stringify(statsAfter)}`);
  // The link's own packets are seen at both ends: count them once (at h1), and add what each end
  // sends elsewhere for the link (STUN/TURN, checks on candidate pairs that never answered).
  const link = rate('h1', 'link');
  const extra = ['h1', 'pub'].reduce((n, h) => n + (bytes(h, 'udp') - bytes(h, 'link')) / T, 0);
  const xmppPerNode = (rate('h1', 'xmpp') + rate('pub', 'xmpp')) / 2;
  console.log(`idle cost per link, the link's own UDP (both directions, counted at h1): ${link.toFixed(1)} B/s — target <= 200 B/s ${link <= 200 ? 'met' : 'NOT met'} (paper: ~1 KB/s)`);
  console.log(`  with all other UDP of both ends (STUN/TURN, unanswered checks): ${(link + extra).toFixed(1)} B/s — ${link + extra <= 200 ? 'met' : 'NOT met'} on this stricter count`);
  console.log(`XMPP server traffic per idle node (mean of h1 and pub, each with one other group member online): ${xmppPerNode.toFixed(1)} B/s — target <= 30 B/s ${xmppPerNode <= 30 ? 'met' : 'NOT met'} (paper: 19 KB/s for 300 nodes, ~63 B/s per node)`);

  const out = join(ROOT, 'docs/bench');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'idle.csv'), csv(['t_s', 'host', 'traffic', 'bytes_in', 'bytes_out', 'packets_in', 'packets_out'],
    samples.map((s) => [s.t.toFixed(1), s.host, s.key, s.inBytes, s.outBytes, s.inPackets, s.outPackets])));
  const series = (host, key, name) => ({
    name, points: [[0, 0], ...samples.filter((s) => s.host === host && s.key === key).map((s) => [s.t, s.inBytes + s.outBytes])],
  });
  writeFileSync(join(out, 'idle.svg'), lineChartSvg(`Idle traffic of a TinCan link and node, ${new Date().toISOString().slice(0, 10)}`, 'time (s)', 'bytes, cumulative (both directions)', [
    series('h1', 'link', `link h1 ↔ pub (UDP, counted at h1): ${link.toFixed(0)} B/s`),
    series('pub', 'stun_turn', `pub ↔ STUN/TURN server (UDP): ${rate('pub', 'stun_turn').toFixed(0)} B/s`),
    series('h1', 'xmpp', `XMPP, h1: ${rate('h1', 'xmpp').toFixed(0)} B/s`),
    series('pub', 'xmpp', `XMPP, pub: ${rate('pub', 'xmpp').toFixed(0)} B/s`),
  ], { footer: 'iptables byte counters (IP bytes) in the lab hosts; targets: link <= 200 B/s, XMPP <= 30 B/s per node' }));
  console.log('wrote docs/bench/idle.csv and docs/bench/idle.svg');
  const span = `one ${T.toFixed(0)}-s window`;
  writeResults('idle', {
    title: 'What an idle TinCan link and node cost the network (h1 and pub registered with prosody, linked, left alone)',
    settings: { window_s: WINDOW_S, sample_s: SAMPLE_S },
    figures: [
      figure({ key: 'link_Bps', label: 'idle link: its own UDP, both directions, counted at h1', unit: 'B/s', median: link, n: 1, target: { op: '<=', value: 200 }, paper: '~1 KB/s', note: span }),
      figure({ key: 'link_all_udp_Bps', label: 'idle link with all other UDP of both ends (STUN/TURN, unanswered checks)', unit: 'B/s', median: link + extra, n: 1, note: span }),
      figure({
        key: 'xmpp_Bps_per_node', label: 'XMPP traffic per idle node (mean of h1 and pub)', unit: 'B/s', median: xmppPerNode, min: Math.min(rate('h1', 'xmpp'), rate('pub', 'xmpp')),
        max: Math.max(rate('h1', 'xmpp'), rate('pub', 'xmpp')), n: 2, target: { op: '<=', value: 30 }, paper: '19 KB/s for 300 nodes (~63 B/s each)', note: `${span}, each node with one other group member online`,
      }),
      figure({ key: 'stun_turn_Bps_pub', label: 'pub ↔ STUN/TURN server (UDP)', unit: 'B/s', median: rate('pub', 'stun_turn'), n: 1, note: span }),
    ],
    plots: ['idle.svg'],
    csv: ['idle.csv'],
    notes: [`link up in ${setupMs.toFixed(0)} ms over ${l.local_candidate}/${l.remote_candidate}; iptables byte counters (IP bytes) in each host, sampled every ${SAMPLE_S} s`],
  });
} catch (err) {
  console.error(`bench idle failed: ${err.stack ?? err}`);
  failed = true;
} finally {
  await cleanup.run();
}
process.exit(failed ? 1 : 0);
