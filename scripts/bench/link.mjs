#!/usr/bin/env node
// npm run bench -- link: TCP throughput and ping RTT through a TinCan link vs the raw path between the
// same two lab hosts (h1 behind a cone NAT, pub on the public segment), measured in one run.
import { DATAPATH_FLAGS, iperfTcp, labUp, linkDirect, median, startNode } from './lib/lab-nodes.mjs';
import { pingSamples } from './lib/measure.mjs';
import { figure, writeResults } from './lib/results.mjs';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const lab = await labUp();
const nodes = [];
let failed = false;
try {
  const a = await startNode('h1', '10.254.0.1');
  const b = await startNode('pub', '10.254.0.2');
  nodes.push(a, b);
  const ice = { stun: [lab.info.stun], turn: [] };
  const setupMs = await linkDirect(a, b, ice);
  const state = await a.call('get_state');
  const link = state.links[0];
  console.log(`link h1 -> pub up in ${setupMs.toFixed(0)} ms over ${link.local_candidate}/${link.remote_candidate} (${link.remote_address})`);

  const raw = [];
  const tun = [];
  for (let i = 0; i < RUNS; i++) {
    raw.push(await iperfTcp('pub', 'h1', '198.18.0.10', SECONDS));
    tun.push(await iperfTcp('pub', 'h1', '10.254.0.2', SECONDS));
  }
  const rawRtts = await pingSamples('h1', '198.18.0.10', 41);
  const tunRtts = await pingSamples('h1', '10.254.0.2', 41);
  const rawRtt = median(rawRtts);
  const tunRtt = median(tunRtts);
  const fmt = (xs) => `${median(xs).toFixed(0)} Mbit/s (min ${Math.min(...xs).toFixed(0)}, max ${Math.max(...xs).toFixed(0)})`;
  console.log(`iperf3 TCP, ${RUNS} x ${SECONDS} s, medians:`);
  console.log(`  raw path      ${fmt(raw)}`);
  console.log(`  TinCan link   ${fmt(tun)}`);
  console.log(`  ratio         ${(median(tun) / median(raw)).toFixed(3)}   (target: >= 250 Mbit/s; paper: 64 Mbit/s)`);
  console.log(`ping RTT median: raw ${rawRtt.toFixed(3)} ms, TinCan ${tunRtt.toFixed(3)} ms, added ${(tunRtt - rawRtt).toFixed(3)} ms (target: <= 0.5 ms; paper: +0.57 ms)`);
  const after = (await a.call('get_state')).links[0].stats;
  console.log(`link counters on h1: ${JSON.stringify(after)}`);
  const raw1 = { label: 'raw path', median: median(raw) };
  writeResults('link', {
    title: 'TCP throughput and RTT through one TinCan link vs the raw path (h1 behind a cone NAT → pub)',
    settings: { runs: RUNS, seconds: SECONDS, pings: rawRtts.length, datapath_node_flags: DATAPATH_FLAGS.join(' ') || 'none' },
    figures: [
      figure({ key: 'tcp_mbps', label: 'iperf3 TCP through the link', unit: 'Mbit/s', samples: tun, baseline: raw1, target: { op: '>=', value: 250, text: '≥ 250 Mbit/s' }, paper: '64 Mbit/s' }),
      figure({ key: 'rtt_ms', label: 'ping RTT through the link', unit: 'ms', samples: tunRtts, baseline: { label: 'raw path', median: rawRtt } }),
      figure({
        key: 'rtt_added_ms', label: 'added median ping RTT over the raw path', unit: 'ms', median: tunRtt - rawRtt, n: tunRtts.length,
        target: { op: '<=', value: 0.5, text: '≤ +0.5 ms' }, paper: '+0.57 ms',
      }),
    ],
    notes: [`link up in ${setupMs.toFixed(0)} ms over ${link.local_candidate}/${link.remote_candidate}; iperf3 runs raw and TinCan interleaved; RTT: ${rawRtts.length} pings at 50 ms each way, the first (neighbour resolution) dropped`],
  });
} catch (err) {
  console.error(`bench link failed: ${err.stack ?? err}`);
  failed = true;
} finally {
  await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
  await lab.down();
}
process.exit(failed ? 1 : 0);
