#!/usr/bin/env node
// npm run bench -- baselines: TinCan against wireguard-go and tinc 1.0 on the same lab path, in one
// run: between h1 (behind a port-restricted cone NAT) and pub (public segment) — the hosts of the
// `link` bench — iperf3 TCP and UDP, ping RTT idle and during a bulk TCP transfer, through the raw
// path, a direct TinCan link, wireguard-go and tinc (runs interleaved), then through a TURN-relayed
// TinCan link between the same two hosts. Prints a table with ratios and issue 7's targets; writes
// docs/bench/baselines.csv and docs/bench/baselines.svg.
//
// Environment: BENCH_RUNS (3), BENCH_SECONDS (5) for TCP; BENCH_UDP_RUNS (2), BENCH_UDP_SECONDS (3),
// BENCH_UDP_RATE (500M offered), BENCH_UDP_LEN (1200-byte datagrams, fit every tunnel's MTU);
// BENCH_PINGS (40 idle pings at 50 ms); BENCH_LOAD_SECONDS (= BENCH_SECONDS).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, inHost, labUp, linkDirect, startNode } from './lib/lab-nodes.mjs';
import {
  cleanupStack, iperf3, iptablesCounters, max, medRange, median, min, pingSamples, pingUnderLoad, sleep,
} from './lib/measure.mjs';
import { barChartSvg, csv } from './lib/plot.mjs';
import { startTinc, startWireguard } from './lib/tunnels.mjs';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const UDP_RUNS = Number(process.env.BENCH_UDP_RUNS ?? 2);
const UDP_SECONDS = Number(process.env.BENCH_UDP_SECONDS ?? 3);
const UDP_RATE = process.env.BENCH_UDP_RATE ?? '500M';
const UDP_LEN = Number(process.env.BENCH_UDP_LEN ?? 1200);
const PINGS = Number(process.env.BENCH_PINGS ?? 40);
const LOAD_SECONDS = Number(process.env.BENCH_LOAD_SECONDS ?? SECONDS);
const A = 'h1', B = 'pub';

const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(0)} s`;
const cleanup = cleanupStack();
const lab = await labUp();
cleanup.add('lab', lab.down);
const PUB = lab.info.hosts[B].ipv4[0];
const stun = [lab.info.stun];
const turn = [{ address: lab.info.turn.address, username: lab.info.turn.username, password: lab.info.turn.password }];

/** Per path: label, address of B through it, and its samples. */
const paths = {};
const addPath = (key, label, addr, notes) => {
  paths[key] = { key, label, addr, notes, tcp: [], retransmits: [], udp: [], loss: [], rttIdle: [], rttLoad: [], loadMbps: [] };
};

async function tcpRun(p) {
  const r = await iperf3(B, A, p.addr, { seconds: SECONDS });
  p.tcp.push(r.mbps);
  p.retransmits.push(r.retransmits);
}
async function udpRun(p) {
  const r = await iperf3(B, A, p.addr, { seconds: UDP_SECONDS, udp: true, rate: UDP_RATE, len: UDP_LEN });
  p.udp.push(r.mbps);
  p.loss.push(r.lossPct);
}
async function rttRuns(p) {
  p.rttIdle.push(...await pingSamples(A, p.addr, PINGS + 1));
  const l = await pingUnderLoad(B, A, p.addr, LOAD_SECONDS);
  p.rttLoad.push(...l.rtts);
  p.loadMbps.push(l.tcp.mbps);
}

async function linkInfo(node) {
  const l = (await node.call('get_state')).links[0];
  return { path: `${l.local_candidate}/${l.remote_candidate}`, local: l.local_address, remote: l.remote_address, stats: l.stats, local_candidate: l.local_candidate, remote_candidate: l.remote_candidate };
}

let failed = false;
let relayBlock = null;
try {
  console.log(`baselines: ${A} (${lab.info.hosts[A].nat} NAT) -> ${B} (${PUB}); TCP ${RUNS} x ${SECONDS} s, UDP ${UDP_RUNS} x ${UDP_SECONDS} s at ${UDP_RATE}bit/s offered (${UDP_LEN}-byte datagrams), ${PINGS} idle pings, pings during a ${LOAD_SECONDS} s TCP transfer`);
  // --- phase 1: raw, TinCan direct, wireguard-go, tinc, all up at once; runs interleaved -----------
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

  addPath('raw', 'raw path', PUB, 'veth + NAT, no tunnel');
  addPath('tincan', 'TinCan direct', '10.254.0.2', `${direct.path}, vNIC MTU 1280`);
  addPath('wg', 'wireguard-go', wg.addrB, `MTU ${wg.mtu}`);
  addPath('tinc', 'tinc 1.0', tinc.addrB, `MTU ${tinc.mtu}, router mode, aes-256-cbc/sha256`);
  const phase1 = ['raw', 'tincan', 'wg', 'tinc'].map((k) => paths[k]);
  for (let i = 0; i < RUNS; i++) {
    for (const p of phase1) await tcpRun(p);
    console.log(`  TCP round ${i + 1}/${RUNS}: ${phase1.map((p) => `${p.key} ${p.tcp.at(-1).toFixed(0)}`).join(', ')} Mbit/s (${elapsed()})`);
  }
  for (let i = 0; i < UDP_RUNS; i++) {
    for (const p of phase1) await udpRun(p);
    console.log(`  UDP round ${i + 1}/${UDP_RUNS}: ${phase1.map((p) => `${p.key} ${p.udp.at(-1).toFixed(0)} (${p.loss.at(-1).toFixed(1)} %)`).join(', ')} (${elapsed()})`);
  }
  for (const p of phase1) {
    await rttRuns(p);
    console.log(`  RTT ${p.key}: idle ${median(p.rttIdle).toFixed(3)} ms, under load ${median(p.rttLoad).toFixed(3)} ms (${elapsed()})`);
  }
  const tincBytes = (await tincCtr.read());
  const tb = (k) => tincBytes[k].inBytes + tincBytes[k].outBytes;
  const tincUdpShare = tb('tinc-udp') / (tb('tinc-udp') + tb('tinc-tcp'));
  console.log(`  tinc carried ${(100 * tincUdpShare).toFixed(2)} % of its bytes over UDP (the rest on its TCP meta connection)`);
  const directStats = (await linkInfo(a)).stats;
  await wg.stop();
  await tinc.stop();

  // --- phase 2: the same two datapaths, relayed through the lab's TURN server ---------------------
  // h1 may not send UDP to pub at all (a DROP rule in h1's OUTPUT chain, removed afterwards), so ICE
  // cannot use a direct pair; it ends up on h1's relayed candidate (TURN allocation on the server).
  await a.call('trim_link', { uid: b.uid });
  await b.call('trim_link', { uid: a.uid });
  const rule = ['OUTPUT', '-o', lab.info.hosts[A].interface, '-p', 'udp', '-d', PUB, '-m', 'comment', '--comment', `tincan-bench-relay-${process.pid}`, '-j', 'DROP'];
  await inHost(A, ['iptables', '-w', '5', '-I', ...rule]);
  relayBlock = async () => { await inHost(A, ['iptables', '-w', '5', '-D', ...rule]); relayBlock = null; };
  cleanup.add('relay block rule', () => relayBlock?.());
  await sleep(500);
  const relayMs = await linkDirect(a, b, { stun, turn });
  const relay = await linkInfo(a);
  console.log(`TinCan relayed link up in ${relayMs.toFixed(0)} ms: ${relay.path} ${relay.local} -> ${relay.remote} (UDP ${A} -> ${PUB} dropped in ${A}'s OUTPUT chain; STUN + TURN configured)`);
  if (relay.local_candidate !== 'relay' && relay.remote_candidate !== 'relay') throw new Error(`the link is not relayed: ${relay.path}`);
  addPath('relay', 'TinCan relayed', '10.254.0.2', `${relay.path} via TURN (coturn in the lab), vNIC MTU 1280`);
  const pr = paths.relay;
  for (let i = 0; i < RUNS; i++) await tcpRun(pr);
  for (let i = 0; i < UDP_RUNS; i++) await udpRun(pr);
  await rttRuns(pr);
  console.log(`  relayed: TCP ${pr.tcp.map((x) => x.toFixed(0)).join(', ')} Mbit/s, UDP ${pr.udp.map((x) => x.toFixed(0)).join(', ')}, RTT idle ${median(pr.rttIdle).toFixed(3)} ms, under load ${median(pr.rttLoad).toFixed(3)} ms (${elapsed()})`);
  const relayStats = (await linkInfo(a)).stats;
  await relayBlock();

  // --- report ------------------------------------------------------------------------------------
  const order = ['raw', 'tincan', 'relay', 'wg', 'tinc'].map((k) => paths[k]);
  const raw = paths.raw, W = paths.wg;
  const r3 = (x) => (Number.isFinite(x) ? x.toFixed(3) : '—');
  const q = (xs, f) => { const s = [...xs].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(f * s.length))]; };
  const rows = order.map((p) => [
    p.label,
    medRange(p.tcp),
    r3(median(p.tcp) / median(raw.tcp)),
    r3(median(p.tcp) / median(W.tcp)),
    `${medRange(p.udp)} / ${median(p.loss).toFixed(1)} %`,
    `${median(p.rttIdle).toFixed(3)} (${min(p.rttIdle).toFixed(3)}–${max(p.rttIdle).toFixed(3)})`,
    `+${(median(p.rttIdle) - median(raw.rttIdle)).toFixed(3)}`,
    `${median(p.rttLoad).toFixed(2)} (${q(p.rttLoad, 0.1).toFixed(2)}–${q(p.rttLoad, 0.9).toFixed(2)})`,
    r3(median(p.rttLoad) / median(W.rttLoad)),
  ]);
  const head = ['path', 'TCP Mbit/s med (min–max)', '×raw', '×wg', `UDP rcvd Mbit/s / loss`, 'RTT idle ms (min–max)', 'vs raw', 'RTT load ms (p10–p90)', '×wg'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => c.padEnd(widths[i])).join('  ');
  console.log(`\nresults (phase 1 interleaved; the relayed link measured afterwards; RTT under load = pings during a ${LOAD_SECONDS} s TCP transfer, whose own median was: ${order.map((p) => `${p.key} ${median(p.loadMbps).toFixed(0)}`).join(', ')} Mbit/s)`);
  console.log(line(head));
  for (const r of rows) console.log(line(r));
  for (const p of order) console.log(`  ${p.label}: ${p.notes}; TCP retransmits per run ${p.retransmits.join(', ')}`);
  console.log(`  TinCan link counters on h1: direct ${JSON.stringify(directStats)}; relayed ${JSON.stringify(relayStats)}`);

  const T = paths.tincan;
  const verdict = (ok) => (ok ? 'met' : 'NOT met');
  const addedRtt = median(T.rttIdle) - median(raw.rttIdle);
  const targets = [
    `TCP through TinCan >= wireguard-go's: ${median(T.tcp).toFixed(0)} vs ${median(W.tcp).toFixed(0)} Mbit/s (x${r3(median(T.tcp) / median(W.tcp))}) — ${verdict(median(T.tcp) >= median(W.tcp))}`,
    `added idle RTT <= 0.3 ms over raw: +${addedRtt.toFixed(3)} ms — ${verdict(addedRtt <= 0.3)}`,
    `RTT under load <= wireguard-go's: ${median(T.rttLoad).toFixed(2)} vs ${median(W.rttLoad).toFixed(2)} ms — ${verdict(median(T.rttLoad) <= median(W.rttLoad))}`,
  ];
  console.log('issue 7 targets (TinCan direct link):');
  for (const t of targets) console.log(`  ${t}`);

  const out = join(ROOT, 'docs/bench');
  mkdirSync(out, { recursive: true });
  const csvRows = [];
  for (const p of order) {
    const put = (metric, xs) => xs.forEach((v, i) => csvRows.push([p.key, metric, i + 1, v == null ? '' : Number(v.toFixed(4))]));
    put('tcp_mbps', p.tcp);
    put('tcp_retransmits', p.retransmits);
    put('udp_rcvd_mbps', p.udp);
    put('udp_loss_pct', p.loss);
    put('rtt_idle_ms', p.rttIdle);
    put('rtt_load_ms', p.rttLoad);
    put('load_tcp_mbps', p.loadMbps);
  }
  writeFileSync(join(out, 'baselines.csv'), csv(['path', 'metric', 'run', 'value'], csvRows));
  const tunnels = ['tincan', 'relay', 'wg', 'tinc'].map((k) => paths[k]);
  const spread = (xs) => ({ value: median(xs), min: min(xs), max: max(xs) });
  const pct = (xs) => ({ value: median(xs), min: q(xs, 0.1), max: q(xs, 0.9) });
  writeFileSync(join(out, 'baselines.svg'), barChartSvg(`TinCan vs wireguard-go and tinc, lab h1 (cone NAT) → pub, ${new Date().toISOString().slice(0, 10)}`, [
    {
      title: 'Throughput (iperf3)', yLabel: 'Mbit/s', categories: tunnels.map((p) => p.label),
      series: [
        { name: `TCP, median of ${RUNS} × ${SECONDS} s (min–max)`, values: tunnels.map((p) => spread(p.tcp)) },
        { name: `UDP received at ${UDP_RATE}bit/s offered`, values: tunnels.map((p) => spread(p.udp)) },
      ],
      note: `raw path (off scale): TCP ${median(raw.tcp).toFixed(0)} Mbit/s, UDP ${median(raw.udp).toFixed(0)} Mbit/s`,
    },
    {
      title: 'Ping RTT, idle', yLabel: 'ms', categories: order.map((p) => p.label),
      series: [{ name: 'idle (median, p10–p90)', values: order.map((p) => pct(p.rttIdle)) }],
      note: `TinCan direct adds ${addedRtt.toFixed(3)} ms over raw (target: 0.3 ms)`,
    },
    {
      title: 'Ping RTT during a bulk TCP transfer', yLabel: 'ms', categories: order.map((p) => p.label),
      series: [{ name: 'under load (median, p10–p90)', values: order.map((p) => pct(p.rttLoad)) }],
      note: 'pings through the tunnel that carries the transfer',
    },
  ], { panelWidth: 400, footer: 'shared 2-core machine, one run: figures are noisy. Whiskers: TCP/UDP min–max over runs; RTT p10–p90 of the pings.' }));
  console.log(`wrote docs/bench/baselines.csv and docs/bench/baselines.svg (${elapsed()})`);
} catch (err) {
  console.error(`bench baselines failed: ${err.stack ?? err}`);
  failed = true;
} finally {
  await cleanup.run();
}
process.exit(failed ? 1 : 0);
