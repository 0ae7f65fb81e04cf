#!/usr/bin/env node
// npm run bench -- baselines: TinCan against wireguard-go and tinc 1.0 on the same lab path, in one
// run: between h1 (behind a port-restricted cone NAT) and pub (public segment) — the hosts of the
// `link` bench — iperf3 TCP and UDP, ping RTT idle and during a bulk TCP transfer, through the raw
// path, a direct TinCan link, wireguard-go and tinc (runs interleaved), then through a TURN-relayed
// TinCan link between the same two hosts (interleaved with the raw path and wireguard-go again). Phase 1
// also runs iperf3 with several parallel flows (-P 4) per path: what multi-process datapath lanes
// (BENCH_DATAPATH_ARGS) can use. Prints a table with ratios and the targets; writes
// docs/bench/baselines.csv, baselines.svg and baselines.json.
//
// Environment: BENCH_RUNS (3), BENCH_SECONDS (5) for TCP; BENCH_UDP_RUNS (2), BENCH_UDP_SECONDS (3),
// BENCH_UDP_RATE (500M offered), BENCH_UDP_LEN (1200-byte datagrams, fit every tunnel's MTU);
// BENCH_PINGS (40 idle pings at 50 ms); BENCH_LOAD_SECONDS (= BENCH_SECONDS); BENCH_PARALLEL_FLOWS (4),
// BENCH_PARALLEL_RUNS (2; 0 skips the parallel-flow runs), of BENCH_SECONDS each.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, inHost, labUp, linkDirect, startNode } from './lib/lab-nodes.mjs';
import {
  cleanupStack, iperf3, iptablesCounters, max, medRange, median, min, once, pingSamples, pingUnderLoad, sleep,
} from './lib/measure.mjs';
import { barChartSvg, csv } from './lib/plot.mjs';
import { figure, writeResults } from './lib/results.mjs';
import { startTinc, startWireguard } from './lib/tunnels.mjs';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const UDP_RUNS = Number(process.env.BENCH_UDP_RUNS ?? 2);
const UDP_SECONDS = Number(process.env.BENCH_UDP_SECONDS ?? 3);
const UDP_RATE = process.env.BENCH_UDP_RATE ?? '500M';
const UDP_LEN = Number(process.env.BENCH_UDP_LEN ?? 1200);
const PINGS = Number(process.env.BENCH_PINGS ?? 40);
const LOAD_SECONDS = Number(process.env.BENCH_LOAD_SECONDS ?? SECONDS);
const FLOWS = Number(process.env.BENCH_PARALLEL_FLOWS ?? 4);
const PAR_RUNS = Number(process.env.BENCH_PARALLEL_RUNS ?? 2);
const A = 'h1', B = 'pub';

const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(0)} s`;
const cleanup = cleanupStack();
const lab = await labUp();
cleanup.add('lab', lab.down);
const PUB = lab.info.hosts[B].ipv4[0];
const stun = [lab.info.stun];
const turn = [{ address: lab.info.turn.address, username: lab.info.turn.username, password: lab.info.turn.password }];

/** Per path: label, address of B through it, the phase it was measured in, and its samples. */
const paths = {};
const addPath = (key, label, addr, phase, notes) => {
  paths[key] = { key, label, addr, phase, notes, tcp: [], retransmits: [], tcpPar: [], udp: [], loss: [], rttIdle: [], rttLoad: [], loadMbps: [] };
  return paths[key];
};

async function tcpRun(p) {
  const r = await iperf3(B, A, p.addr, { seconds: SECONDS });
  p.tcp.push(r.mbps);
  p.retransmits.push(r.retransmits);
}
async function parallelRun(p) {
  const r = await iperf3(B, A, p.addr, { seconds: SECONDS, parallel: FLOWS });
  p.tcpPar.push(r.mbps);
}
async function udpRun(p) {
  const r = await iperf3(B, A, p.addr, { seconds: UDP_SECONDS, udp: true, rate: UDP_RATE, len: UDP_LEN });
  p.udp.push(r.mbps);
  p.loss.push(r.lossPct);
}
async function rttRuns(p, { load = true } = {}) {
  p.rttIdle.push(...await pingSamples(A, p.addr, PINGS + 1));
  if (!load) return;
  const l = await pingUnderLoad(B, A, p.addr, LOAD_SECONDS);
  p.rttLoad.push(...l.rtts);
  p.loadMbps.push(l.tcp.mbps);
}
async function rounds(list) {
  for (let i = 0; i < RUNS; i++) {
    for (const p of list) await tcpRun(p);
    console.log(`  TCP round ${i + 1}/${RUNS}: ${list.map((p) => `${p.key} ${p.tcp.at(-1).toFixed(0)}`).join(', ')} Mbit/s (${elapsed()})`);
  }
}

async function linkInfo(node) {
  const l = (await node.call('get_state')).links[0];
  return { path: `${l.local_candidate}/${l.remote_candidate}`, local: l.local_address, remote: l.remote_address, stats: l.stats, local_candidate: l.local_candidate, remote_candidate: l.remote_candidate };
}

let failed = false;
try {
  console.log(`baselines: ${A} (${lab.info.hosts[A].nat} NAT) -> ${B} (${PUB}); TCP ${RUNS} x ${SECONDS} s, UDP ${UDP_RUNS} x ${UDP_SECONDS} s at ${UDP_RATE}bit/s offered (${UDP_LEN}-byte datagrams), ${PINGS} idle pings, pings during a ${LOAD_SECONDS} s TCP transfer`);
  // --- phase 1: raw, TinCan direct, wireguard-go, tinc, all up at once; runs interleaved -----------
  // The TinCan link is made before the other tunnels exist, so their addresses never become ICE candidates.
  const a = await startNode(A, '10.254.0.1');
  cleanup.add('datapath h1', a.stop);
  const b = await startNode(B, '10.254.0.2');
  cleanup.add('datapath pub', b.stop);
  const setupMs = await linkDirect(a, b, { stun, turn: [] });
  const direct = await linkInfo(a);
  console.log(`TinCan direct link up in ${setupMs.toFixed(0)} ms: ${direct.path} ${direct.local} -> ${direct.remote} (vNIC MTU 1280, STUN only)`);
  const wg = await startWireguard(A, B, { endpoint: PUB });
  cleanup.add('wireguard-go', wg.stop);
  console.log(wg.notes);
  const tinc = await startTinc(A, B, { endpoint: PUB });
  cleanup.add('tinc', tinc.stop);
  console.log(tinc.notes);
  // Which transport tinc's data took (it falls back to its TCP meta connection for packets above the
  // path MTU it knows): byte counters on pub for TCP and UDP port 655.
  const tincCtr = await iptablesCounters(B, `TBENCH${process.pid}`, [
    { key: 'tinc-tcp', in: ['-p', 'tcp', '--dport', String(tinc.port)], out: ['-p', 'tcp', '--sport', String(tinc.port)] },
    { key: 'tinc-udp', in: ['-p', 'udp', '--dport', String(tinc.port)], out: ['-p', 'udp', '--sport', String(tinc.port)] },
  ]);
  cleanup.add('iptables counters pub', tincCtr.remove);

  const phase1 = [
    addPath('raw', 'raw path', PUB, 1, 'veth + NAT, no tunnel'),
    addPath('tincan', 'TinCan direct', '10.254.0.2', 1, `${direct.path}, vNIC MTU 1280`),
    addPath('wg', 'wireguard-go', wg.addrB, 1, `MTU ${wg.mtu}`),
    addPath('tinc', 'tinc 1.0', tinc.addrB, 1, `MTU ${tinc.mtu}, router mode, aes-256-cbc + HMAC-SHA256/4`),
  ];
  console.log('phase 1: raw, TinCan direct, wireguard-go, tinc');
  await rounds(phase1);
  for (let i = 0; i < PAR_RUNS; i++) {
    for (const p of phase1) await parallelRun(p);
    console.log(`  TCP ${FLOWS} flows round ${i + 1}/${PAR_RUNS}: ${phase1.map((p) => `${p.key} ${p.tcpPar.at(-1).toFixed(0)}`).join(', ')} Mbit/s (${elapsed()})`);
  }
  for (let i = 0; i < UDP_RUNS; i++) {
    for (const p of phase1) await udpRun(p);
    console.log(`  UDP round ${i + 1}/${UDP_RUNS}: ${phase1.map((p) => `${p.key} ${p.udp.at(-1).toFixed(0)} (${p.loss.at(-1).toFixed(1)} %)`).join(', ')} (${elapsed()})`);
  }
  for (const p of phase1) {
    await rttRuns(p);
    console.log(`  RTT ${p.key}: idle ${median(p.rttIdle).toFixed(3)} ms, under load ${median(p.rttLoad).toFixed(3)} ms (${elapsed()})`);
  }
  const tincBytes = await tincCtr.read();
  const tb = (k) => tincBytes[k].inBytes + tincBytes[k].outBytes;
  console.log(`  tinc carried ${(100 * tb('tinc-udp') / (tb('tinc-udp') + tb('tinc-tcp'))).toFixed(2)} % of its bytes over UDP (the rest on its TCP meta connection)`);
  const directStats = (await linkInfo(a)).stats;

  // --- phase 2: the same two datapaths, relayed through the lab's TURN server ---------------------
  // h1 may not send UDP to pub except to wireguard-go's and tinc's ports (a DROP rule in h1's OUTPUT
  // chain, removed afterwards), so ICE finds no direct pair and settles on h1's relayed candidate (a
  // TURN allocation on the server). The raw path and wireguard-go are measured again, interleaved
  // with it, as this phase's references.
  await a.call('trim_link', { uid: b.uid });
  await b.call('trim_link', { uid: a.uid });
  // wireguard-go's and tinc's interface addresses are host candidates now too: UDP through those
  // tunnels other than iperf3's (port 5201) is dropped as well, or ICE would pair them.
  const tag = ['-m', 'comment', '--comment', `tincan-bench-relay-${process.pid}`, '-j', 'DROP'];
  const rules = [
    ['OUTPUT', '-o', lab.info.hosts[A].interface, '-p', 'udp', '-d', PUB, '-m', 'multiport', '!', '--dports', `${wg.port},${tinc.port}`, ...tag],
    ...[wg.ifA, tinc.ifA].map((ifc) => ['OUTPUT', '-o', ifc, '-p', 'udp', '!', '--dport', '5201', ...tag]),
  ];
  const inserted = [];
  const unblock = once(async () => { for (const r of inserted) await inHost(A, ['iptables', '-w', '5', '-D', ...r]); });
  cleanup.add('relay block rules', unblock);
  for (const r of rules) { await inHost(A, ['iptables', '-w', '5', '-I', ...r]); inserted.push(r); }
  await sleep(500);
  const relayMs = await linkDirect(a, b, { stun, turn });
  const relay = await linkInfo(a);
  console.log(`TinCan relayed link up in ${relayMs.toFixed(0)} ms: ${relay.path} ${relay.local} -> ${relay.remote} (UDP ${A} -> ${PUB} dropped in ${A}'s OUTPUT chain except to ports ${wg.port},${tinc.port}, and UDP into the other tunnels except to iperf3's port; STUN + TURN configured)`);
  if (relay.local_candidate !== 'relay' && relay.remote_candidate !== 'relay') throw new Error(`the link is not relayed: ${relay.path}`);
  const phase2 = [
    addPath('raw2', 'raw path (2)', PUB, 2, 'phase 2 reference'),
    addPath('relay', 'TinCan relayed', '10.254.0.2', 2, `${relay.path} via TURN (coturn in the lab), vNIC MTU 1280`),
    addPath('wg2', 'wireguard-go (2)', wg.addrB, 2, 'phase 2 reference'),
  ];
  console.log('phase 2: raw, TinCan relayed, wireguard-go');
  await rounds(phase2);
  for (let i = 0; i < UDP_RUNS; i++) await udpRun(paths.relay);
  await rttRuns(paths.raw2, { load: false });
  await rttRuns(paths.relay);
  await rttRuns(paths.wg2);
  const pr = paths.relay;
  console.log(`  relayed: UDP ${pr.udp.map((x) => x.toFixed(0)).join(', ')} Mbit/s, RTT idle ${median(pr.rttIdle).toFixed(3)} ms, under load ${median(pr.rttLoad).toFixed(3)} ms; wireguard-go under load ${median(paths.wg2.rttLoad).toFixed(3)} ms (${elapsed()})`);
  const relayStats = (await linkInfo(a)).stats;
  await unblock();

  // --- report ------------------------------------------------------------------------------------
  const order = ['raw', 'tincan', 'wg', 'tinc', 'raw2', 'relay', 'wg2'].map((k) => paths[k]);
  const refs = (p) => (p.phase === 2 ? { raw: paths.raw2, wg: paths.wg2 } : { raw: paths.raw, wg: paths.wg });
  const r3 = (x) => (Number.isFinite(x) ? x.toFixed(3) : '—');
  const q = (xs, f) => { const s = [...xs].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(f * s.length))]; };
  const med = (xs) => (xs.length ? median(xs) : NaN);
  const rows = order.map((p) => {
    const { raw, wg: W } = refs(p);
    return [
      `${p.label}`,
      medRange(p.tcp),
      r3(med(p.tcp) / med(raw.tcp)),
      r3(med(p.tcp) / med(W.tcp)),
      p.tcpPar.length ? `${medRange(p.tcpPar)} ×wg ${r3(med(p.tcpPar) / med(W.tcpPar))}` : '—',
      p.udp.length ? `${medRange(p.udp)} / ${med(p.loss).toFixed(1)} %` : '—',
      `${med(p.rttIdle).toFixed(3)} (${min(p.rttIdle).toFixed(3)}–${max(p.rttIdle).toFixed(3)})`,
      `+${(med(p.rttIdle) - med(raw.rttIdle)).toFixed(3)}`,
      p.rttLoad.length ? `${med(p.rttLoad).toFixed(2)} (${q(p.rttLoad, 0.1).toFixed(2)}–${q(p.rttLoad, 0.9).toFixed(2)})` : '—',
      p.rttLoad.length ? r3(med(p.rttLoad) / med(W.rttLoad)) : '—',
    ];
  });
  const head = ['path', 'TCP Mbit/s med (min–max)', '×raw', '×wg', `TCP ${FLOWS} flows Mbit/s`, 'UDP rcvd Mbit/s / loss', 'RTT idle ms (min–max)', 'vs raw', 'RTT load ms (p10–p90)', '×wg'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => c.padEnd(widths[i])).join('  ');
  console.log(`\nresults (phase 1: raw, TinCan direct, wireguard-go, tinc interleaved; phase 2: raw (2), TinCan relayed, wireguard-go (2) interleaved; ratios against the same phase's raw and wireguard-go; RTT under load = pings during a ${LOAD_SECONDS} s TCP transfer through the same path, whose own median was: ${order.filter((p) => p.loadMbps.length).map((p) => `${p.key} ${median(p.loadMbps).toFixed(0)}`).join(', ')} Mbit/s)`);
  console.log(line(head));
  for (const r of rows) console.log(line(r));
  for (const p of order) console.log(`  ${p.label}: ${p.notes}; TCP retransmits per run ${p.retransmits.join(', ')}`);
  console.log(`  TinCan link counters on h1: direct ${JSON.stringify(directStats)}; relayed ${JSON.stringify(relayStats)}`);

  const T = paths.tincan, raw = paths.raw, W = paths.wg;
  const verdict = (ok) => (ok ? 'met' : 'NOT met');
  const addedRtt = median(T.rttIdle) - median(raw.rttIdle);
  console.log('targets (TinCan direct link, phase 1):');
  console.log(`  TCP through TinCan >= wireguard-go's: ${median(T.tcp).toFixed(0)} vs ${median(W.tcp).toFixed(0)} Mbit/s (x${r3(median(T.tcp) / median(W.tcp))}) — ${verdict(median(T.tcp) >= median(W.tcp))}`);
  console.log(`  added idle RTT <= 0.3 ms over raw: +${addedRtt.toFixed(3)} ms — ${verdict(addedRtt <= 0.3)}`);
  console.log(`  RTT under load <= wireguard-go's: ${median(T.rttLoad).toFixed(2)} vs ${median(W.rttLoad).toFixed(2)} ms — ${verdict(median(T.rttLoad) <= median(W.rttLoad))}`);

  const out = join(ROOT, 'docs/bench');
  mkdirSync(out, { recursive: true });
  const csvRows = [];
  for (const p of order) {
    const put = (metric, xs) => xs.forEach((v, i) => csvRows.push([p.key, p.phase, metric, i + 1, v == null ? '' : Number(v.toFixed(4))]));
    put('tcp_mbps', p.tcp);
    put('tcp_retransmits', p.retransmits);
    put(`tcp_${FLOWS}flows_mbps`, p.tcpPar);
    put('udp_rcvd_mbps', p.udp);
    put('udp_loss_pct', p.loss);
    put('rtt_idle_ms', p.rttIdle);
    put('rtt_load_ms', p.rttLoad);
    put('load_tcp_mbps', p.loadMbps);
  }
  writeFileSync(join(out, 'baselines.csv'), csv(['path', 'phase', 'metric', 'run', 'value'], csvRows));
  const tunnels = ['tincan', 'wg', 'tinc', 'relay', 'wg2'].map((k) => paths[k]);
  const withRtt = ['raw', 'tincan', 'wg', 'tinc', 'relay', 'wg2'].map((k) => paths[k]);
  const spread = (xs) => (xs.length ? { value: median(xs), min: min(xs), max: max(xs) } : null);
  const pct = (xs) => ({ value: median(xs), min: q(xs, 0.1), max: q(xs, 0.9) });
  writeFileSync(join(out, 'baselines.svg'), barChartSvg(`TinCan vs wireguard-go and tinc, lab h1 (cone NAT) → pub, ${new Date().toISOString().slice(0, 10)}`, [
    {
      title: 'Throughput (iperf3)', yLabel: 'Mbit/s', categories: tunnels.map((p) => p.label),
      series: [
        { name: `TCP, median of ${RUNS} × ${SECONDS} s (min–max)`, values: tunnels.map((p) => spread(p.tcp)) },
        ...(PAR_RUNS > 0 ? [{ name: `TCP, ${FLOWS} flows at once, ${PAR_RUNS} × ${SECONDS} s`, values: tunnels.map((p) => spread(p.tcpPar)) }] : []),
        { name: `UDP received at ${UDP_RATE}bit/s offered`, values: tunnels.map((p) => spread(p.udp)) },
      ],
      note: `raw path (off scale): TCP ${median(raw.tcp).toFixed(0)} / ${median(paths.raw2.tcp).toFixed(0)} Mbit/s (phase 1 / 2)`,
    },
    {
      title: 'Ping RTT, idle', yLabel: 'ms', categories: withRtt.map((p) => p.label),
      series: [{ name: 'idle (median, p10–p90)', values: withRtt.map((p) => pct(p.rttIdle)) }],
      note: `TinCan direct adds ${addedRtt.toFixed(3)} ms over raw (target: 0.3 ms)`,
    },
    {
      title: 'Ping RTT during a bulk TCP transfer', yLabel: 'ms', categories: withRtt.filter((p) => p.rttLoad.length).map((p) => p.label),
      series: [{ name: 'under load (median, p10–p90)', values: withRtt.filter((p) => p.rttLoad.length).map((p) => pct(p.rttLoad)) }],
      note: 'pings through the tunnel that carries the transfer',
    },
  ], { panelWidth: 430, footer: 'shared 2-core machine, one run: figures are noisy. (2) = measured again beside the relayed link. Whiskers: TCP/UDP min–max over runs; RTT p10–p90.' }));
  console.log(`wrote docs/bench/baselines.csv and docs/bench/baselines.svg (${elapsed()})`);

  const ref = (p) => ({ label: p.label, median: median(p.tcp) });
  const tcpFigure = (p, against, extra = {}) => figure({ key: `tcp_${p.key}`, label: `iperf3 TCP, ${p.label}`, unit: 'Mbit/s', samples: p.tcp, baseline: ref(against), ...extra });
  const parFigure = (p, extra = {}) => figure({
    key: `tcp${FLOWS}_${p.key}`, label: `iperf3 TCP, ${FLOWS} flows at once, ${p.label}`, unit: 'Mbit/s', samples: p.tcpPar,
    ...(p !== W ? { baseline: { label: `wireguard-go, ${FLOWS} flows`, median: median(W.tcpPar) } } : { baseline: { label: `raw path, ${FLOWS} flows`, median: median(raw.tcpPar) } }), ...extra,
  });
  const rttFigure = (p, kind, against, extra = {}) => {
    const xs = kind === 'idle' ? p.rttIdle : p.rttLoad;
    return figure({
      key: `rtt_${kind}_${p.key}`, label: `ping RTT ${kind === 'idle' ? 'idle' : 'during a bulk TCP transfer'}, ${p.label}`, unit: 'ms',
      median: median(xs), min: q(xs, 0.1), max: q(xs, 0.9), n: xs.length, spread: 'p10–p90',
      baseline: { label: against.label, median: median(kind === 'idle' ? against.rttIdle : against.rttLoad) }, ...extra,
    });
  };
  const figures = [
    tcpFigure(T, W, { target: { op: '>=', value: 1, of: 'ratio', text: '≥ wireguard-go (×1)' } }),
    ...(PAR_RUNS > 0 ? [parFigure(T, { target: { op: '>=', value: 1, of: 'ratio', text: '≥ wireguard-go (×1)' } })] : []),
    figure({
      key: 'rtt_idle_added_tincan', label: 'added median idle ping RTT over the raw path, TinCan direct', unit: 'ms', median: addedRtt, n: T.rttIdle.length,
      target: { op: '<=', value: 0.3, text: '≤ +0.3 ms' }, paper: '+0.57 ms',
    }),
    rttFigure(T, 'load', W, { target: { op: '<=', value: 1, of: 'ratio', text: '≤ wireguard-go (×1)' } }),
    figure({ key: 'tcp_raw', label: 'iperf3 TCP, raw path', unit: 'Mbit/s', samples: raw.tcp }), tcpFigure(W, raw), tcpFigure(paths.tinc, W), tcpFigure(paths.relay, paths.wg2), tcpFigure(paths.wg2, paths.raw2),
    ...(PAR_RUNS > 0 ? [parFigure(raw), parFigure(W), parFigure(paths.tinc)] : []),
    ...[T, W, paths.tinc, paths.relay].map((p) => figure({
      key: `udp_${p.key}`, label: `iperf3 UDP received at ${UDP_RATE}bit/s offered, ${p.label}`, unit: 'Mbit/s', samples: p.udp,
      ...(p.phase === 1 ? { baseline: { label: 'raw path', median: median(raw.udp) } } : {}), note: `median loss ${median(p.loss).toFixed(1)} %`, ...(p === T ? { paper: '47 Mbit/s' } : {}),
    })),
    ...[raw, W, paths.tinc].map((p) => rttFigure(p, 'idle', raw)),
    rttFigure(T, 'idle', raw),
    rttFigure(paths.relay, 'idle', paths.raw2),
    rttFigure(paths.tinc, 'load', W), rttFigure(paths.relay, 'load', paths.wg2), rttFigure(W, 'load', raw),
  ];
  writeResults('baselines', {
    title: 'TinCan vs wireguard-go and tinc 1.0 on the same lab path (h1 behind a cone NAT → pub), one run',
    settings: {
      tcp: `${RUNS} × ${SECONDS} s`, [`tcp ${FLOWS} flows`]: `${PAR_RUNS} × ${SECONDS} s`, udp: `${UDP_RUNS} × ${UDP_SECONDS} s at ${UDP_RATE}bit/s, ${UDP_LEN}-byte datagrams`,
      pings: `${PINGS} idle, during a ${LOAD_SECONDS} s transfer`, datapath_args: process.env.BENCH_DATAPATH_ARGS || 'none',
    },
    figures,
    plots: ['baselines.svg'],
    csv: ['baselines.csv'],
    notes: [
      'phase 1: raw path, TinCan direct, wireguard-go and tinc up at once, runs interleaved; phase 2: the TinCan link made again through TURN, with the raw path and wireguard-go measured beside it ("(2)"); ratios within a phase',
      `paths: ${order.map((p) => `${p.label}: ${p.notes}`).join('; ')}`,
      `tinc carried ${(100 * tb('tinc-udp') / (tb('tinc-udp') + tb('tinc-tcp'))).toFixed(2)} % of its bytes over UDP; TinCan direct link up in ${setupMs.toFixed(0)} ms, relayed in ${relayMs.toFixed(0)} ms`,
      `TCP retransmits per run: ${order.map((p) => `${p.key} ${p.retransmits.join('/')}`).join(', ')}`,
    ],
  });
} catch (err) {
  console.error(`bench baselines failed: ${err.stack ?? err}`);
  failed = true;
} finally {
  await cleanup.run();
}
process.exit(failed ? 1 : 0);
