#!/usr/bin/env node
// npm run bench -- rtt: what bounds TinCan's added idle RTT. Between the same two lab hosts (h1
// behind a cone NAT, pub on the public segment), in one run and interleaved, the round-trip time of
//   1. ICMP ping over the raw path (the kernel alone),
//   2. a UDP echo between two Node.js processes (adds two event-loop wake-ups per round trip),
//   3. a bare node-datachannel data channel echo between two Node.js processes, set up like a TinCan
//      link (adds DTLS, SCTP and libdatachannel's threads),
//   4. ICMP ping through a TinCan link (adds the vNIC on both ends).
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { labUp, linkDirect, median, nsOf, ROOT, startNode } from './lib/lab-nodes.mjs';
import { pingSamples } from './lib/measure.mjs';
import { figure, writeResults } from './lib/results.mjs';

const ROUNDS = Number(process.env.BENCH_RUNS ?? 3);
const PROBES = 41; // the first of each series (neighbour resolution, connection warm-up) is dropped
const GAP_MS = 50;
const PEER = join(ROOT, 'scripts/bench/lib/echo-peer.mjs');
const PUB = '198.18.0.10';

/** echo-peer.mjs in a lab host, with its JSON lines as an async queue. */
function peer(host, args) {
  const child = spawn('ip', ['netns', 'exec', nsOf(host), process.execPath, PEER, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const exited = new Promise((r) => child.once('exit', r));
  return {
    async next(what) {
      const timer = new Promise((_, rej) => setTimeout(() => rej(new Error(`${host} echo-peer ${args[0]}: no ${what} in 60 s`)), 60_000).unref());
      const line = await Promise.race([lines.next(), timer]);
      if (line.done) throw new Error(`${host} echo-peer ${args[0]} exited before its ${what}`);
      return JSON.parse(line.value);
    },
    send: (o) => child.stdin.write(`${JSON.stringify(o)}\n`),
    stop: async () => { child.stdin.end(); child.kill('SIGTERM'); await exited; },
  };
}

async function udpEcho() {
  const server = peer('pub', ['udp-echo', '7302']);
  try {
    await server.next('ready line');
    const client = peer('h1', ['udp-ping', PUB, '7302', String(PROBES), String(GAP_MS)]);
    try {
      return (await client.next('RTTs')).rtts.slice(1);
    } finally {
      await client.stop();
    }
  } finally {
    await server.stop();
  }
}

async function dataChannelEcho() {
  const echo = peer('pub', ['dc-echo']);
  const ping = peer('h1', ['dc-ping', String(PROBES), String(GAP_MS)]);
  try {
    echo.send((await ping.next('offer')).description);
    ping.send((await echo.next('answer')).description);
    return (await ping.next('RTTs')).rtts.slice(1);
  } finally {
    await Promise.all([ping.stop(), echo.stop()]);
  }
}

const lab = await labUp();
const nodes = [];
let failed = false;
try {
  const a = await startNode('h1', '10.254.0.1');
  const b = await startNode('pub', '10.254.0.2');
  nodes.push(a, b);
  await linkDirect(a, b, { stun: [lab.info.stun], turn: [] });
  const series = { icmp: [], udp: [], dc: [], tincan: [] };
  for (let i = 0; i < ROUNDS; i++) {
    series.icmp.push(...await pingSamples('h1', PUB, PROBES));
    series.udp.push(...await udpEcho());
    series.dc.push(...await dataChannelEcho());
    series.tincan.push(...await pingSamples('h1', '10.254.0.2', PROBES));
  }
  const raw = median(series.icmp);
  const rows = [
    ['icmp', 'ICMP ping, raw path (the kernel alone)'],
    ['udp', 'UDP echo between two Node.js processes'],
    ['dc', 'bare data channel echo between two Node.js processes'],
    ['tincan', 'ICMP ping through a TinCan link'],
  ];
  console.log(`RTT medians, ${ROUNDS} rounds x ${PROBES - 1} probes at ${GAP_MS} ms, h1 -> pub:`);
  for (const [k, label] of rows) {
    const m = median(series[k]);
    console.log(`  ${label.padEnd(56)} ${m.toFixed(3)} ms  (+${(m - raw).toFixed(3)} over raw ICMP)`);
  }
  const base = { label: 'ICMP, raw path', median: raw };
  writeResults('rtt', {
    title: 'What bounds the added idle RTT: kernel, Node.js event loop, data channel, TinCan (h1 behind a cone NAT → pub)',
    settings: { rounds: ROUNDS, probes: PROBES - 1, gap_ms: GAP_MS },
    figures: [
      figure({ key: 'icmp_ms', label: rows[0][1], unit: 'ms', samples: series.icmp }),
      ...rows.slice(1).map(([k, label]) => figure({ key: `${k}_ms`, label, unit: 'ms', samples: series[k], baseline: base })),
      ...rows.slice(1).map(([k, label]) => figure({
        key: `${k}_added_ms`, label: `added median RTT over raw ICMP: ${label}`, unit: 'ms',
        median: median(series[k]) - raw, n: series[k].length,
      })),
    ],
    notes: ['interleaved per round: ICMP raw, UDP echo, data channel echo, ICMP through TinCan; 100-byte probes; the first probe of each series dropped'],
  });
} catch (err) {
  console.error(`bench rtt failed: ${err.stack ?? err}`);
  failed = true;
} finally {
  await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
  await lab.down();
}
process.exit(failed ? 1 : 0);
