#!/usr/bin/env node
// npm run bench -- loss: one TCP flow through TinCan and through wireguard-go 0.0.20231211 (Debian
// bookworm-backports, fetched once into scripts/bench/.cache) over the same lab path with random loss:
// h1 (behind a port-restricted cone NAT) → pub, `scripts/lab impair nat1 --loss PCT` (iptables
// `statistic` at the NAT's public interface: each wire packet, each direction, lost with PCT). The
// hosts' veths get gso_max_segs 1 for the bench, so that the kernel cuts every TSO/GSO burst before it
// leaves the host and the NAT drops single wire packets (wireguard-go sends UDP GSO batches otherwise).
// Phase "direct": a direct TinCan link; phase "relayed": the same through the lab's TURN server (h1's
// UDP to pub dropped in its OUTPUT chain but for wireguard-go's port), the loss then lying between h1
// and the relay. Each run starts fresh datapaths (one pair per variant), runs are interleaved with
// wireguard-go's; the ratio of medians is TinCan / wireguard-go at the same loss in the same phase.
//
// Environment: BENCH_RUNS (2) runs of BENCH_SECONDS (5) per path, level and phase; BENCH_LOSS_LEVELS
// (0,0.5,1,2,5: % per wire packet and direction); BENCH_LOSS_PHASES (direct,relayed);
// BENCH_LOSS_VARIANTS ("TinCan:": name:datapath args, several separated by "|", for A/B in one run,
// e.g. "now:|before:--no-loss-segmenting --sctp-loss-cc"; the first is the one the targets are
// checked on); BENCH_WG_SUITE (bookworm-backports; "installed": the wireguard-go on PATH).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ROOT, inHost, labUp, linkDirect, startNode } from './lib/lab-nodes.mjs';
import { cleanupStack, iperf3, median, medRange, once, sleep } from './lib/measure.mjs';
import { csv, lineChartSvg } from './lib/plot.mjs';
import { figure, writeResults } from './lib/results.mjs';
import { startWireguard, wireguardGoFrom } from './lib/tunnels.mjs';

const RUNS = Number(process.env.BENCH_RUNS ?? 2);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const LEVELS = (process.env.BENCH_LOSS_LEVELS ?? '0,0.5,1,2,5').split(',').map(Number);
const PHASES = (process.env.BENCH_LOSS_PHASES ?? 'direct,relayed').split(',');
const VARIANTS = (process.env.BENCH_LOSS_VARIANTS ?? 'TinCan:').split('|').map((v) => {
  const i = v.indexOf(':');
  return { name: i < 0 ? v : v.slice(0, i), args: i < 0 ? [] : v.slice(i + 1).split(' ').filter(Boolean) };
});
const WG_SUITE = process.env.BENCH_WG_SUITE ?? 'bookworm-backports';
const A = 'h1', B = 'pub', NAT = 'nat1';
/** Targets: [phase, loss %, least ratio to wireguard-go]. */
const TARGETS = [['direct', 0.5, 0.5], ['relayed', 0.5, 0.5], ['direct', 2, 0.5], ['relayed', 2, 0.3]];

const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(0)} s`;
const run = promisify(execFile);
const lab = (...args) => run(join(ROOT, 'scripts/lab'), args, { timeout: 60_000 });
const cleanup = cleanupStack();
const labHandle = await labUp();
cleanup.add('lab', labHandle.down);
const info = labHandle.info;
const PUB = info.hosts[B].ipv4[0];
const stun = [info.stun];
const turn = [{ address: info.turn.address, username: info.turn.username, password: info.turn.password }];

/** samples[phase][path][level] = [Mbit/s…]; path: a variant's name or 'wg'. */
const samples = {};
const extra = {};
/** Runs made again because the link did not come up the first time. */
const retries = [];
/**
 * Each datapath gets ICE ports no earlier one used: coturn keeps a closed link's allocation, and an
 * Allocate from the same address and port is refused, which makes the datapath remake the link.
 */
let portBlock = 0;
const icePorts = () => { const begin = 20000 + 64 * (portBlock++ % 600); return `${begin}-${begin + 63}`; };
const put = (phase, path, level, v, ex) => {
  ((samples[phase] ??= {})[path] ??= {})[level] ??= [];
  samples[phase][path][level].push(v);
  if (ex) (((extra[phase] ??= {})[path] ??= {})[level] ??= []).push(ex);
};

let failed = false;
try {
  let wgBinary = 'wireguard-go', wgPackage = 'installed';
  if (WG_SUITE !== 'installed') {
    try {
      const w = wireguardGoFrom(WG_SUITE, join(ROOT, 'scripts/bench/.cache/wireguard-go'));
      wgBinary = w.binary;
      wgPackage = w.package;
    } catch (err) {
      console.log(`wireguard-go from ${WG_SUITE} unavailable (${err.message}): measuring against the installed one`);
    }
  }
  // Every TSO/GSO burst cut in the hosts' own stacks: the NAT sees (and drops) single wire packets.
  const gso = {};
  for (const h of [A, B]) {
    const dev = info.hosts[h].interface;
    const { stdout } = await inHost(h, ['ip', '-d', 'link', 'show', dev]);
    gso[h] = stdout.match(/gso_max_segs (\d+)/)?.[1] ?? '65535';
    await inHost(h, ['ip', 'link', 'set', 'dev', dev, 'gso_max_segs', '1']);
    cleanup.add(`gso_max_segs ${h}`, () => inHost(h, ['ip', 'link', 'set', 'dev', dev, 'gso_max_segs', gso[h]]));
  }
  cleanup.add('impairment', () => lab('impair', NAT, '--clear'));

  const wg = await startWireguard(A, B, { endpoint: PUB, binary: wgBinary });
  cleanup.add('wireguard-go', wg.stop);
  console.log(`loss: ${A} (${info.hosts[A].nat} NAT) -> ${B}, loss at ${NAT} (each direction) ${LEVELS.join(', ')} %, ${RUNS} x ${SECONDS} s per path, level and phase (${PHASES.join(', ')}); wireguard-go package ${wgPackage} (binary says ${wg.version}), MTU ${wg.mtu}; TinCan variants: ${VARIANTS.map((v) => `${v.name} [${v.args.join(' ') || 'defaults'}]`).join(', ')}`);

  // UDP into wireguard-go's tunnel other than iperf3's is dropped in h1: its address would be an ICE
  // host candidate, and a TinCan link through wireguard-go would measure both.
  const tag = ['-m', 'comment', '--comment', `tincan-bench-loss-${process.pid}`, '-j', 'DROP'];
  const inserted = [];
  const rule = async (r) => { await inHost(A, ['iptables', '-w', '5', '-I', ...r]); inserted.push(r); };
  const unblockAll = once(async () => { for (const r of inserted.splice(0)) await inHost(A, ['iptables', '-w', '5', '-D', ...r]).catch(() => undefined); });
  cleanup.add('block rules', unblockAll);
  await rule(['OUTPUT', '-o', wg.ifA, '-p', 'udp', '!', '--dport', '5201', ...tag]);

  for (const phase of PHASES) {
    const relayed = phase === 'relayed';
    const relayRule = ['OUTPUT', '-o', info.hosts[A].interface, '-p', 'udp', '-d', PUB, '!', '--dport', String(wg.port), ...tag];
    if (relayed) await rule(relayRule);
    for (const level of LEVELS) {
      if (level > 0) await lab('impair', NAT, '--loss', String(level));
      else await lab('impair', NAT, '--clear');
      for (let i = 0; i < RUNS; i++) {
        const line = [];
        // Variants in turn first, run by run: none always starts on a machine its predecessor warmed.
        for (const v of VARIANTS.map((_, k) => VARIANTS[(k + i) % VARIANTS.length])) {
          // A link that does not come up (libdatachannel's known DTLS start-up deadlock under load, which
          // the datapath's watchdog ends) is made again once with fresh datapaths, and counted.
          for (let attempt = 1; ; attempt++) {
            const a = await startNode(A, '10.254.0.1', [...v.args, '--ice-ports', icePorts()]);
            const b = await startNode(B, '10.254.0.2', [...v.args, '--ice-ports', icePorts()]).catch(async (err) => { await a.stop(); throw err; });
            try {
              await linkDirect(a, b, { stun, turn: relayed ? turn : [] });
              const l = (await a.call('get_state')).links[0];
              const isRelay = l.local_candidate === 'relay' || l.remote_candidate === 'relay';
              if (isRelay !== relayed) throw new Error(`phase ${phase}: the link runs ${l.local_candidate}/${l.remote_candidate}`);
              const r = await iperf3(B, A, '10.254.0.2', { seconds: SECONDS });
              const sa = await a.call('get_state');
              const s = sa.links[0].stats;
              const c = sa.counters;
              put(phase, v.name, level, r.mbps, {
                retransmits: r.retransmits, superOut: c.offloadSuperPacketsOut ?? 0, segmentedOut: c.offloadSegmentedOut ?? 0,
                dropsAqm: s.drops_aqm, dropsBackpressure: s.drops_backpressure, probesOut: s.probes_out, probesAnswered: s.probes_answered,
              });
              line.push(`${v.name} ${r.mbps.toFixed(0)} (rtx ${r.retransmits}, aqm ${s.drops_aqm}, bp ${s.drops_backpressure}, super ${c.offloadSuperPacketsOut ?? 0}, seg ${c.offloadSegmentedOut ?? 0}, probes ${s.probes_answered}/${s.probes_out})`);
              break;
            } catch (err) {
              if (attempt >= 2 || /phase /.test(err.message)) throw err;
              retries.push(`${phase} ${level} % run ${i + 1} ${v.name}: ${err.message}`);
              console.log(`  (${phase} ${level} % ${v.name}: ${err.message}; once more with fresh datapaths)`);
            } finally {
              // (a stalled datapath is gone within its watchdog's 30 s: the next one needs its RPC port)
              await Promise.all([a.stop(), b.stop()]).catch(() => undefined);
            }
          }
        }
        const w = await iperf3(B, A, wg.addrB, { seconds: SECONDS });
        put(phase, 'wg', level, w.mbps, { retransmits: w.retransmits });
        line.push(`wg ${w.mbps.toFixed(0)} (rtx ${w.retransmits})`);
        console.log(`  ${phase} ${level} % run ${i + 1}/${RUNS}: ${line.join(', ')} Mbit/s (${elapsed()})`);
      }
    }
    await lab('impair', NAT, '--clear');
    if (relayed) {
      await inHost(A, ['iptables', '-w', '5', '-D', ...relayRule]);
      inserted.splice(inserted.indexOf(relayRule), 1);
    }
    await sleep(200);
  }

  // --- report ------------------------------------------------------------------------------------
  const med = (xs) => (xs?.length ? median(xs) : NaN);
  const ratio = (phase, name, level) => med(samples[phase]?.[name]?.[level]) / med(samples[phase]?.wg?.[level]);
  const r2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : '—');
  console.log(`\nresults: iperf3 TCP ${A} -> ${B}, Mbit/s median (min–max) of ${RUNS}; ×wg = ratio of medians at the same loss and phase`);
  const head = ['phase', 'loss %', ...VARIANTS.flatMap((v) => [v.name, `×wg`]), 'wireguard-go'];
  const rows = [];
  for (const phase of PHASES) {
    for (const level of LEVELS) {
      rows.push([phase, String(level), ...VARIANTS.flatMap((v) => [medRange(samples[phase][v.name][level]), r2(ratio(phase, v.name, level))]), medRange(samples[phase].wg[level])]);
    }
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmtRow = (r) => r.map((c, i) => c.padEnd(widths[i])).join('  ');
  console.log(fmtRow(head));
  for (const r of rows) console.log(fmtRow(r));
  const main = VARIANTS[0].name;
  console.log(`targets (${main}):`);
  for (const [phase, level, least] of TARGETS) {
    if (!samples[phase]?.[main]?.[level]) continue;
    const x = ratio(phase, main, level);
    console.log(`  ${phase}, ${level} % loss: ≥ ${least}× wireguard-go: ×${r2(x)} — ${x >= least ? 'met' : 'NOT met'}`);
  }

  const out = join(ROOT, 'docs/bench');
  mkdirSync(out, { recursive: true });
  const csvRows = [];
  for (const phase of PHASES) {
    for (const [path, byLevel] of Object.entries(samples[phase])) {
      for (const level of LEVELS) {
        (byLevel[level] ?? []).forEach((v, i) => {
          const e = extra[phase]?.[path]?.[level]?.[i] ?? {};
          csvRows.push([phase, path, level, i + 1, Number(v.toFixed(2)), e.retransmits ?? '', e.superOut ?? '', e.segmentedOut ?? '', e.dropsAqm ?? '', e.dropsBackpressure ?? '', e.probesOut ?? '', e.probesAnswered ?? '']);
        });
      }
    }
  }
  writeFileSync(join(out, 'loss.csv'), csv(['phase', 'path', 'loss_pct', 'run', 'tcp_mbps', 'tcp_retransmits', 'super_packets_out', 'segmented_out', 'drops_aqm', 'drops_backpressure', 'probes_out', 'probes_answered'], csvRows));
  const series = [];
  for (const phase of PHASES) {
    for (const v of VARIANTS) series.push({ name: `${VARIANTS.length > 1 ? v.name : 'TinCan'} ${phase}`, points: LEVELS.map((l) => [l, med(samples[phase][v.name][l])]) });
    series.push({ name: `wireguard-go (${phase} phase)`, points: LEVELS.map((l) => [l, med(samples[phase].wg[l])]) });
  }
  writeFileSync(join(out, 'loss.svg'), lineChartSvg(`One TCP flow under random loss, lab h1 (cone NAT) → pub, ${new Date().toISOString().slice(0, 10)}`,
    'loss per wire packet and direction at h1\'s NAT (%)', 'Mbit/s (median)', series,
    { width: 720, height: 440, footer: `wireguard-go ${wgPackage}; ${RUNS} × ${SECONDS} s per point, interleaved; shared 2-core machine` }));
  console.log(`wrote docs/bench/loss.csv and docs/bench/loss.svg (${elapsed()})`);

  const figures = [];
  for (const phase of PHASES) {
    for (const level of LEVELS) {
      const wgMed = med(samples[phase].wg[level]);
      for (const v of VARIANTS) {
        const t = v.name === main ? TARGETS.find(([p, l]) => p === phase && l === level) : undefined;
        figures.push(figure({
          key: `tcp_${phase}_${level}_${v.name}`, label: `iperf3 TCP, ${VARIANTS.length > 1 ? `${v.name}, ` : ''}${phase} link, ${level} % loss`, unit: 'Mbit/s',
          samples: samples[phase][v.name][level], baseline: { label: `wireguard-go, ${level} % loss`, median: wgMed },
          ...(t ? { target: { op: '>=', value: t[2], of: 'ratio', text: `≥ ${t[2]}× wireguard-go` } } : {}),
        }));
      }
      figures.push(figure({ key: `tcp_${phase}_${level}_wg`, label: `iperf3 TCP, wireguard-go (${phase} phase), ${level} % loss`, unit: 'Mbit/s', samples: samples[phase].wg[level] }));
    }
  }
  writeResults('loss', {
    title: 'One TCP flow through TinCan and wireguard-go under random wire-packet loss (h1 behind a cone NAT → pub), one run',
    settings: {
      runs: `${RUNS} × ${SECONDS} s per path, level and phase`, loss: `${LEVELS.join(', ')} % per wire packet and direction at ${NAT}`, phases: PHASES.join(', '),
      variants: VARIANTS.map((v) => `${v.name} [${v.args.join(' ') || 'defaults'}]`).join('; '), wireguard_go: `${wgPackage} (${WG_SUITE})`,
      datapath_args: process.env.BENCH_DATAPATH_ARGS || 'none',
    },
    figures,
    plots: ['loss.svg'],
    csv: ['loss.csv'],
    notes: [
      'each run starts a fresh pair of datapaths per variant (the link is made under the loss), then wireguard-go runs on the same path; the hosts\' veths have gso_max_segs 1 during the bench',
      'relayed phase: h1\'s UDP to pub is dropped but for wireguard-go\'s port, so the TinCan link runs through the lab\'s TURN server (coturn); wireguard-go stays direct',
      `runs made again with fresh datapaths because the link did not come up: ${retries.length ? retries.join('; ') : 'none'}`,
      `per run (first variant): ${PHASES.flatMap((p) => LEVELS.map((l) => `${p} ${l} %: ${(extra[p]?.[main]?.[l] ?? []).map((e) => `rtx ${e.retransmits}, super ${e.superOut}, seg ${e.segmentedOut}, aqm ${e.dropsAqm}, probes ${e.probesAnswered}/${e.probesOut}`).join('; ')}`)).join(' · ')}`,
    ],
  });
} catch (err) {
  console.error(`bench loss failed: ${err.stack ?? err}`);
  failed = true;
} finally {
  await cleanup.run();
}
process.exit(failed ? 1 : 0);
