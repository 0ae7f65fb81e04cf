#!/usr/bin/env node
// npm run bench -- lanes: what `tincan-datapath --lanes N` (lane processes on a multi-queue vNIC,
// docs/architecture.md "Lanes") does for TCP throughput, one flow and several at once, against
// wireguard-go measured in the same rounds between the same two lab hosts (h1 behind a cone NAT →
// pub, direct link, vNIC MTU 1280). For each N in BENCH_LANES (default 1,2,3): a fresh pair of
// datapaths started with --lanes N, wireguard-go beside them, then BENCH_RUNS (3) rounds of iperf3
// TCP for BENCH_SECONDS (5) each: TinCan -P 1, wireguard-go -P 1, TinCan -P FLOWS, wireguard-go -P FLOWS
// (BENCH_PARALLEL_FLOWS, 4).
import { labUp, linkDirect, median, startNode } from './lib/lab-nodes.mjs';
import { cleanupStack, iperf3, once, sleep } from './lib/measure.mjs';
import { figure, writeResults } from './lib/results.mjs';
import { startWireguard } from './lib/tunnels.mjs';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const FLOWS = Number(process.env.BENCH_PARALLEL_FLOWS ?? 4);
const LANES = (process.env.BENCH_LANES ?? '1,2,3').split(',').map(Number);
const A = 'h1';
const B = 'pub';

const cleanup = cleanupStack();
const lab = await labUp();
cleanup.add('lab', lab.down);
const PUB = lab.info.hosts[B].ipv4[0];

/** Waits until the link from `a` has all its lane links up. */
async function lanesUp(a, lanes) {
  const end = Date.now() + 30_000;
  for (;;) {
    const l = (await a.call('get_state')).links[0];
    if (lanes <= 1 || l?.lanes_up === lanes - 1) return;
    if (Date.now() > end) throw new Error(`only ${l?.lanes_up ?? 0} of ${lanes - 1} lane links up after 30 s`);
    await sleep(250);
  }
}

const results = [];
let failed = false;
try {
  for (const lanes of LANES) {
    const args = ['--lanes', String(lanes)];
    const a = await startNode(A, '10.254.0.1', args);
    a.stop = once(a.stop);
    cleanup.add(`datapath ${A}`, a.stop);
    const b = await startNode(B, '10.254.0.2', args);
    b.stop = once(b.stop);
    cleanup.add(`datapath ${B}`, b.stop);
    await linkDirect(a, b, { stun: [lab.info.stun], turn: [] });
    await lanesUp(a, lanes);
    // wireguard-go after the TinCan link: its addresses never become ICE candidates of that link.
    const wg = await startWireguard(A, B, { endpoint: PUB });
    wg.stop = once(wg.stop);
    cleanup.add('wireguard-go', wg.stop);
    const r = { lanes, tc1: [], wg1: [], tcN: [], wgN: [] };
    for (let i = 0; i < RUNS; i++) {
      r.tc1.push((await iperf3(B, A, '10.254.0.2', { seconds: SECONDS })).mbps);
      r.wg1.push((await iperf3(B, A, wg.addrB, { seconds: SECONDS })).mbps);
      r.tcN.push((await iperf3(B, A, '10.254.0.2', { seconds: SECONDS, parallel: FLOWS })).mbps);
      r.wgN.push((await iperf3(B, A, wg.addrB, { seconds: SECONDS, parallel: FLOWS })).mbps);
      console.log(`--lanes ${lanes} round ${i + 1}/${RUNS}: TinCan ${r.tc1.at(-1).toFixed(0)} / ${FLOWS} flows ${r.tcN.at(-1).toFixed(0)}, wireguard-go ${r.wg1.at(-1).toFixed(0)} / ${r.wgN.at(-1).toFixed(0)} Mbit/s`);
    }
    const link = (await a.call('get_state')).links[0];
    r.laneShares = (link.lanes ?? [{ lane: 0, packets_out: link.stats.packets_out }]).map((l) => l.packets_out);
    console.log(`  packets out per lane on ${A}: ${r.laneShares.join(', ')}`);
    await wg.stop();
    await a.stop();
    await b.stop();
    results.push(r);
  }
  const figures = [];
  console.log(`\nmedians, Mbit/s (× wireguard-go in the same rounds):`);
  for (const r of results) {
    const ratio = (x, y) => (median(x) / median(y)).toFixed(2);
    console.log(`  --lanes ${r.lanes}: 1 flow ${median(r.tc1).toFixed(0)} (×${ratio(r.tc1, r.wg1)}), ${FLOWS} flows ${median(r.tcN).toFixed(0)} (×${ratio(r.tcN, r.wgN)})`);
    const target = { op: '>=', value: 1, of: 'ratio', text: '≥ wireguard-go (×1)' };
    figures.push(
      figure({ key: `tcp_lanes${r.lanes}`, label: `iperf3 TCP, 1 flow, --lanes ${r.lanes}`, unit: 'Mbit/s', samples: r.tc1, baseline: { label: 'wireguard-go, 1 flow', median: median(r.wg1) }, target }),
      figure({ key: `tcp${FLOWS}_lanes${r.lanes}`, label: `iperf3 TCP, ${FLOWS} flows, --lanes ${r.lanes}`, unit: 'Mbit/s', samples: r.tcN, baseline: { label: `wireguard-go, ${FLOWS} flows`, median: median(r.wgN) }, target }),
    );
  }
  writeResults('lanes', {
    title: `TCP throughput with datapath lanes (--lanes ${LANES.join(', ')}), 1 and ${FLOWS} flows, vs wireguard-go (h1 behind a cone NAT → pub)`,
    settings: { lanes: LANES.join(','), runs: RUNS, seconds: SECONDS, flows: FLOWS },
    figures,
    notes: results.map((r) => `--lanes ${r.lanes}: packets out per lane on ${A} (lane 0 = the link itself): ${r.laneShares.join(', ')}`),
  });
} catch (err) {
  console.error(`bench lanes failed: ${err.stack ?? err}`);
  failed = true;
} finally {
  await cleanup.run();
}
process.exit(failed ? 1 : 0);
