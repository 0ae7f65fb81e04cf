#!/usr/bin/env node
// npm run bench -- link: TCP throughput and ping RTT through a TinCan link vs the raw path between the
// same two lab hosts (h1 behind a cone NAT, pub on the public segment), measured in one run.
import { iperfTcp, labUp, linkDirect, median, pingRtt, startNode } from './lib/lab-nodes.mjs';

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
  const rawRtt = await pingRtt('h1', '198.18.0.10');
  const tunRtt = await pingRtt('h1', '10.254.0.2');
  const fmt = (xs) => `${median(xs).toFixed(0)} Mbit/s (min ${Math.min(...xs).toFixed(0)}, max ${Math.max(...xs).toFixed(0)})`;
  console.log(`iperf3 TCP, ${RUNS} x ${SECONDS} s, medians:`);
  console.log(`  raw path      ${fmt(raw)}`);
  console.log(`  TinCan link   ${fmt(tun)}`);
  console.log(`  ratio         ${(median(tun) / median(raw)).toFixed(3)}   (target: >= 250 Mbit/s; paper: 64 Mbit/s)`);
  console.log(`ping RTT median: raw ${rawRtt.toFixed(3)} ms, TinCan ${tunRtt.toFixed(3)} ms, added ${(tunRtt - rawRtt).toFixed(3)} ms (target: <= 0.5 ms; paper: +0.57 ms)`);
  const after = (await a.call('get_state')).links[0].stats;
  console.log(`link counters on h1: ${JSON.stringify(after)}`);
} catch (err) {
  console.error(`bench link failed: ${err.stack ?? err}`);
  failed = true;
} finally {
  await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
  await lab.down();
}
process.exit(failed ? 1 : 0);
