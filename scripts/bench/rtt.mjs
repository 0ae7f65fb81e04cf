#!/usr/bin/env node
// npm run bench -- rtt: what bounds TinCan's added idle RTT. Between the same two lab hosts (h1
// behind a cone NAT, pub on the public segment), in one run and interleaved, the round-trip time of
//   1. ICMP ping over the raw path (the kernel alone),
//   2. a UDP echo between two C processes (lib/udp-echo.c, compiled now with the machine's cc: two
//      user-space wake-ups per round trip, no runtime),
//   3. a UDP echo from that C client to a Node.js echo server (one Node.js wake-up per round trip),
//   4. a UDP echo between two Node.js processes (two event-loop wake-ups per round trip),
//   5. a bare node-datachannel data channel echo between two Node.js processes, set up like a TinCan
//      link (adds DTLS, SCTP and libdatachannel's threads),
//   6. ICMP ping through a TinCan link (adds the vNIC on both ends).
// Each series runs at two probe spacings: 50 ms (idle: every probe finds the processes asleep, the
// headline figure, compared with the targets) and 1 ms (warm: caches, TLB and CPUs still hot).
// Last, per spacing, one more ping series through the link with tcpdump on the four interfaces it
// crosses gives the per-hop timeline of the round trip (lib/hop-timeline.mjs; skipped without tcpdump).
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { labUp, linkDirect, median, nsOf, ROOT, startNode } from './lib/lab-nodes.mjs';
import { HOPS, measureTimeline } from './lib/hop-timeline.mjs';
import { pingSamples } from './lib/measure.mjs';
import { figure, writeResults } from './lib/results.mjs';

const ROUNDS = Number(process.env.BENCH_RUNS ?? 3);
/** Probe spacings; the first probe of each series (neighbour resolution, connection warm-up) is dropped. */
const SPACINGS = [
  { name: 'idle', gapMs: 50, probes: 41 },
  { name: 'warm', gapMs: 1, probes: 201 },
];
const PEER = join(ROOT, 'scripts/bench/lib/echo-peer.mjs');
const C_ECHO = join(ROOT, 'scripts/bench/lib/udp-echo.c');
const PUB = '198.18.0.10';
const NODE_PORT = '7302';
const C_PORT = '7303';

/** A command in a lab host printing JSON lines (echo-peer.mjs, udp-echo), as an async queue. */
function peer(host, cmd) {
  const child = spawn('ip', ['netns', 'exec', nsOf(host), ...cmd], { stdio: ['pipe', 'pipe', 'inherit'] });
  const what = `${host} ${cmd.slice(-5).join(' ')}`;
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const exited = new Promise((r) => child.once('exit', r));
  return {
    async next(expected) {
      const timer = new Promise((_, rej) => setTimeout(() => rej(new Error(`${what}: no ${expected} in 60 s`)), 60_000).unref());
      const line = await Promise.race([lines.next(), timer]);
      if (line.done) throw new Error(`${what} exited before its ${expected}`);
      return JSON.parse(line.value);
    },
    send: (o) => child.stdin.write(`${JSON.stringify(o)}\n`),
    stop: async () => { child.stdin.end(); child.kill('SIGTERM'); await exited; },
  };
}

const nodePeer = (host, args) => peer(host, [process.execPath, PEER, ...args]);

/** RTTs of a UDP echo: `server` in pub answering `client` in h1 (both commands print JSON lines). */
async function udpEcho(serverCmd, clientCmd) {
  const server = peer('pub', serverCmd);
  try {
    await server.next('ready line');
    const client = peer('h1', clientCmd);
    try {
      return (await client.next('RTTs')).rtts.slice(1);
    } finally {
      await client.stop();
    }
  } finally {
    await server.stop();
  }
}

async function dataChannelEcho({ gapMs, probes }) {
  const echo = nodePeer('pub', ['dc-echo']);
  const ping = nodePeer('h1', ['dc-ping', String(probes), String(gapMs)]);
  try {
    echo.send((await ping.next('offer')).description);
    ping.send((await echo.next('answer')).description);
    return (await ping.next('RTTs')).rtts.slice(1);
  } finally {
    await Promise.all([ping.stop(), echo.stop()]);
  }
}

function hasTcpdump() {
  try {
    execFileSync('tcpdump', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** lib/udp-echo.c built into a temporary directory; its path and a cleanup. */
function buildCEcho() {
  const dir = mkdtempSync(join(tmpdir(), 'tincan-bench-rtt-'));
  const bin = join(dir, 'udp-echo');
  try {
    execFileSync('cc', ['-O2', '-o', bin, C_ECHO], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`cannot compile ${C_ECHO} with cc (needed for the native baseline): ${err.stderr?.toString().trim() || err.message}`);
  }
  return { bin, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

const SERIES = [
  ['icmp', 'ICMP ping, raw path (the kernel alone)'],
  ['c', 'UDP echo between two C processes'],
  ['cnode', 'UDP echo, C client to a Node.js echo server'],
  ['udp', 'UDP echo between two Node.js processes'],
  ['dc', 'bare data channel echo between two Node.js processes'],
  ['tincan', 'ICMP ping through a TinCan link'],
];

/** One series at one spacing: its RTT samples in ms. */
function measure(key, { gapMs, probes }, cEcho) {
  const cClient = [cEcho, 'client', PUB, C_PORT, String(probes), String(gapMs * 1000)];
  switch (key) {
    case 'icmp': return pingSamples('h1', PUB, probes, gapMs / 1000);
    case 'c': return udpEcho([cEcho, 'server', C_PORT], cClient);
    case 'cnode': return udpEcho([process.execPath, PEER, 'udp-echo', C_PORT], cClient);
    case 'udp': return udpEcho([process.execPath, PEER, 'udp-echo', NODE_PORT], [process.execPath, PEER, 'udp-ping', PUB, NODE_PORT, String(probes), String(gapMs)]);
    case 'dc': return dataChannelEcho({ gapMs, probes });
    case 'tincan': return pingSamples('h1', '10.254.0.2', probes, gapMs / 1000);
    default: throw new Error(`unknown series ${key}`);
  }
}

const lab = await labUp();
const nodes = [];
let cEcho = null;
let failed = false;
try {
  cEcho = buildCEcho();
  const a = await startNode('h1', '10.254.0.1');
  const b = await startNode('pub', '10.254.0.2');
  nodes.push(a, b);
  await linkDirect(a, b, { stun: [lab.info.stun], turn: [] });
  /** samples[spacing][series] */
  const samples = Object.fromEntries(SPACINGS.map((s) => [s.name, Object.fromEntries(SERIES.map(([k]) => [k, []]))]));
  for (let i = 0; i < ROUNDS; i++) {
    for (const spacing of SPACINGS) {
      for (const [k] of SERIES) samples[spacing.name][k].push(...await measure(k, spacing, cEcho.bin));
    }
  }
  const timelines = {};
  let timelineNote = 'timeline: skipped (no tcpdump)';
  if (hasTcpdump()) {
    try {
      for (const spacing of SPACINGS) {
        timelines[spacing.name] = await measureTimeline(lab.info, {
          ping: (count, intervalS) => pingSamples('h1', '10.254.0.2', count, intervalS), probes: spacing.probes, intervalS: spacing.gapMs / 1000, pubAddress: PUB,
        });
      }
      const all = Object.values(timelines);
      timelineNote = `timeline: after the rounds, per spacing, one more ping series through the link with tcpdump on h1's and pub's vNIC and wire interfaces (one kernel clock); medians per hop over ${all.map((t) => t.n).join(' and ')} pings; ping RTT medians with tcpdump running: ${all.map((t) => `${median(t.rtts).toFixed(3)} ms`).join(' and ')}`;
    } catch (err) {
      // The timeline explains the figures; it is not one of them: the series above still count.
      for (const k of Object.keys(timelines)) delete timelines[k];
      timelineNote = `timeline: failed (${err.message ?? err})`;
      console.error(`rtt: ${timelineNote}`);
    }
  }
  const figures = [];
  for (const spacing of SPACINGS) {
    const series = samples[spacing.name];
    const raw = median(series.icmp);
    const at = `${spacing.gapMs} ms spacing (${spacing.name})`;
    const suffix = spacing.name === 'idle' ? '' : `_${spacing.name}`;
    console.log(`RTT medians at ${at}, ${ROUNDS} rounds x ${spacing.probes - 1} probes, h1 -> pub:`);
    for (const [k, label] of SERIES) {
      const m = median(series[k]);
      console.log(`  ${label.padEnd(56)} ${m.toFixed(3)} ms  (+${(m - raw).toFixed(3)} over raw ICMP)`);
    }
    const base = { label: `ICMP, raw path, ${spacing.gapMs} ms spacing`, median: raw };
    const idle = spacing.name === 'idle';
    figures.push(
      figure({ key: `icmp${suffix}_ms`, label: `${SERIES[0][1]}, ${at}`, unit: 'ms', samples: series.icmp }),
      // (the warm series' own RTTs are their added RTT plus the warm raw ICMP: the added ones suffice)
      ...(idle ? SERIES.slice(1).map(([k, label]) => figure({ key: `${k}_ms`, label: `${label}, ${at}`, unit: 'ms', samples: series[k], baseline: base })) : []),
      ...SERIES.slice(1).map(([k, label]) => figure({
        key: `${k}${suffix}_added_ms`, label: `added median RTT over raw ICMP: ${label}, ${at}`, unit: 'ms',
        median: median(series[k]) - raw, n: series[k].length,
        ...(k === 'tincan' && idle ? { target: { op: '<=', value: 0.5, text: '≤ +0.5 ms (stretch: ≤ +0.3 ms)' } } : {}),
      })),
    );
    const timeline = timelines[spacing.name];
    if (timeline) {
      console.log(`  per-hop timeline of ${timeline.n} pings through the link (tcpdump on both vNICs and wires; their ping RTT median ${median(timeline.rtts).toFixed(3)} ms):`);
      for (const [k, label] of HOPS) console.log(`    ${label.padEnd(100)} ${timeline.medians[k].toFixed(0).padStart(4)} µs`);
      figures.push(...HOPS.map(([k, label]) => figure({ key: `hop_${k}${suffix}_us`, label: `timeline, ${at}: ${label}`, unit: 'µs', samples: timeline.hopsUs[k] })));
    }
  }
  writeResults('rtt', {
    title: 'What bounds the added idle RTT: kernel, user-space wake-ups, Node.js, data channel, TinCan; idle and warm (h1 behind a cone NAT → pub)',
    settings: { rounds: ROUNDS, ...Object.fromEntries(SPACINGS.flatMap((s) => [[`${s.name}_gap_ms`, s.gapMs], [`${s.name}_probes`, s.probes - 1]])) },
    figures,
    notes: [
      `interleaved per round, at ${SPACINGS.map((s) => `${s.gapMs} ms`).join(' then ')} spacing: ${SERIES.map(([k]) => k).join(', ')}; 100-byte UDP and data channel probes (ping's default 64-byte ICMP); the first probe of each series dropped`,
      'the C echo (scripts/bench/lib/udp-echo.c) is compiled at bench time with the machine\'s cc -O2',
      timelineNote,
    ],
  });
} catch (err) {
  console.error(`bench rtt failed: ${err.stack ?? err}`);
  failed = true;
} finally {
  cEcho?.remove();
  await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
  await lab.down();
}
process.exit(failed ? 1 : 0);
