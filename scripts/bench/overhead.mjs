#!/usr/bin/env node
// npm run bench -- overhead: encapsulation overhead of a bulk transfer through a TinCan link (the
// paper's Fig. 8), at the default vNIC MTU and at larger ones, and of wireguard-go and tinc on the
// same path (h1 behind a cone NAT -> pub). For each run of iperf3 TCP h1 -> pub:
//   payload  = bytes iperf3's server received (its JSON report)
//   inner    = IP bytes through the tunnel interface in h1, both directions (TUN counters: no L2 header)
//   wire     = IP bytes on h1's underlay veth (eth0), both directions: the interface counters minus the
//              14-byte Ethernet header the veth counts per packet
// and reports wire/payload (target <= 1.10), wire/inner (the encapsulation alone) and inner/payload
// (the inner TCP/IP headers and ACKs, the same for any tunnel at that MTU). Each tunnel runs alone.
// Writes docs/bench/overhead.csv, overhead.svg and overhead.json.
//
// The datapaths run with TUN segmentation offload, their default (TCP super-packets whole on the
// link): the TinCan variants are labelled so. wire/payload means the same as without; "inner" counts
// what the TUN counts, super-packets of up to 32 KiB, so wire/inner and the per-packet columns are per
// super-packet, and whether an MTU is safe follows from the frame rule alone (many SCTP packets per
// inner packet is normal then). With --no-offload in BENCH_DATAPATH_ARGS the files are
// overhead-no-offload.* (a variant of this bench, next to the default's).
//
// Environment: BENCH_RUNS (2), BENCH_SECONDS (5), BENCH_MTUS (TinCan vNIC MTUs, default 1280,1336,1376),
// BENCH_DATAPATH_ARGS.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, labUp, linkDirect, startNode } from './lib/lab-nodes.mjs';
import { cleanupStack, counterDelta, ifCounters, iperf3, median, once } from './lib/measure.mjs';
import { barChartSvg, csv } from './lib/plot.mjs';
import { figure, writeResults } from './lib/results.mjs';
import { startTinc, startWireguard } from './lib/tunnels.mjs';

const RUNS = Number(process.env.BENCH_RUNS ?? 2);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const MTUS = (process.env.BENCH_MTUS ?? '1280,1336,1376').split(',').map(Number);
const A = 'h1', B = 'pub';
const OFFLOAD = !(process.env.BENCH_DATAPATH_ARGS ?? '').split(' ').includes('--no-offload');
const NAME = OFFLOAD ? 'overhead' : 'overhead-no-offload';
const ETH_HEADER = 14;
// packages/datapath/src/datapath.ts: RtcConfig mtu = min(1500, vNIC MTU + 40-byte frame header + 124).
const rtcMtu = (mtu) => Math.min(1500, mtu + 40 + 124);

const cleanup = cleanupStack();
const lab = await labUp();
cleanup.add('lab', lab.down);
const PUB = lab.info.hosts[B].ipv4[0];
const underlay = lab.info.hosts[A].interface;
const results = [];

/** One iperf3 run through `addr`, with the counters of h1's underlay and tunnel interface around it. */
async function measure(variant, tunIf, addr) {
  const before = { wire: await ifCounters(A, underlay), tun: await ifCounters(A, tunIf) };
  const r = await iperf3(B, A, addr, { seconds: SECONDS });
  const after = { wire: await ifCounters(A, underlay), tun: await ifCounters(A, tunIf) };
  const w = counterDelta(before.wire, after.wire);
  const t = counterDelta(before.tun, after.tun);
  const wireFwd = w.txBytes - ETH_HEADER * w.txPackets;
  const wireRev = w.rxBytes - ETH_HEADER * w.rxPackets;
  const row = {
    ...variant, mbps: r.mbps, payload: r.bytes, retransmits: r.retransmits,
    wireFwd, wireRev, wirePktsFwd: w.txPackets, wirePktsRev: w.rxPackets,
    innerFwd: t.txBytes, innerRev: t.rxBytes, innerPktsFwd: t.txPackets, innerPktsRev: t.rxPackets,
  };
  row.wire = row.wireFwd + row.wireRev;
  row.inner = row.innerFwd + row.innerRev;
  results.push(row);
  console.log(`  ${variant.label} run ${results.filter((x) => x.key === variant.key).length}: ${r.mbps.toFixed(0)} Mbit/s, wire/payload ${(row.wire / row.payload).toFixed(4)}, wire/inner ${(row.wire / row.inner).toFixed(4)}, outer packets per inner packet ${(row.wirePktsFwd / row.innerPktsFwd).toFixed(2)}`);
}

let failed = false;
try {
  console.log(`overhead: iperf3 TCP ${A} -> ${B}, ${RUNS} x ${SECONDS} s per variant; counters on ${A}'s ${underlay} (wire) and tunnel interface (inner)`);
  for (const mtu of MTUS) {
    const a = await startNode(A, '10.254.0.1', [], [], { mtu });
    a.stop = once(a.stop);
    cleanup.add(`datapath h1 (${mtu})`, a.stop);
    const b = await startNode(B, '10.254.0.2', [], [], { mtu });
    b.stop = once(b.stop);
    cleanup.add(`datapath pub (${mtu})`, b.stop);
    try {
      await linkDirect(a, b, { stun: [lab.info.stun], turn: [] });
      let l = (await a.call('get_state')).links[0];
      // Compact frames (no 40-byte header) once their channel is open, if the datapaths use them.
      for (let i = 0; i < 20 && l.framing !== 'compact'; i++) {
        await new Promise((r) => setTimeout(r, 100));
        l = (await a.call('get_state')).links[0];
      }
      const header = l.framing === 'compact' ? 0 : 40;
      const variant = {
        key: OFFLOAD ? `tincan-offload-${mtu}` : `tincan-${mtu}`, label: `TinCan ${mtu}${OFFLOAD ? ' offload' : ''}`, mtu, header,
        notes: `RtcConfig mtu ${rtcMtu(mtu)}: a full-size ${l.framing ?? 'full'} frame is ${mtu + header} bytes, ${mtu + header <= rtcMtu(mtu) - 124 ? 'fits one SCTP packet' : 'more than the largest unfragmented message (mtu - 124), so SCTP splits it'}; path ${l.local_candidate}/${l.remote_candidate}`,
      };
      console.log(`${variant.label}: ${variant.notes}`);
      for (let i = 0; i < RUNS; i++) await measure(variant, 'tincan0', '10.254.0.2');
    } finally {
      await a.stop();
      await b.stop();
    }
  }
  const wg = await startWireguard(A, B, { endpoint: PUB });
  cleanup.add('wireguard-go', wg.stop);
  try {
    const variant = { key: 'wireguard-go', label: `wireguard-go ${wg.mtu}`, mtu: wg.mtu, notes: wg.notes };
    console.log(`${variant.label}: ${wg.notes}`);
    for (let i = 0; i < RUNS; i++) await measure(variant, wg.ifA, wg.addrB);
  } finally {
    await wg.stop();
  }
  const tinc = await startTinc(A, B, { endpoint: PUB });
  cleanup.add('tinc', tinc.stop);
  try {
    const variant = { key: 'tinc', label: `tinc ${tinc.mtu}`, mtu: tinc.mtu, notes: tinc.notes };
    console.log(`${variant.label}: ${tinc.notes}`);
    for (let i = 0; i < RUNS; i++) await measure(variant, tinc.ifA, tinc.addrB);
  } finally {
    await tinc.stop();
  }

  // --- report ------------------------------------------------------------------------------------
  const keys = [...new Set(results.map((r) => r.key))];
  const sum = (rows, f) => rows.reduce((s, r) => s + r[f], 0);
  const summary = keys.map((key) => {
    const rows = results.filter((r) => r.key === key);
    const s = (f) => sum(rows, f);
    return {
      key, label: rows[0].label, mtu: rows[0].mtu, header: rows[0].header,
      wirePayload: s('wire') / s('payload'), wireInner: s('wire') / s('inner'), innerPayload: s('inner') / s('payload'),
      fwdWirePayload: s('wireFwd') / s('payload'), revShare: s('wireRev') / s('wire'),
      outerPerInner: s('wirePktsFwd') / s('innerPktsFwd'),
      outerSize: s('wireFwd') / s('wirePktsFwd'), innerSize: s('innerFwd') / s('innerPktsFwd'),
      perPacket: (s('wireFwd') - s('innerFwd')) / s('innerPktsFwd'),
      mbps: median(rows.map((r) => r.mbps)),
      retransmits: rows.reduce((n, r) => n + (r.retransmits ?? 0), 0),
    };
  });
  const head = ['variant', 'wire/payload', 'wire/inner', 'inner/payload', 'fwd only', 'rev share', 'outer pkts/inner', 'avg outer B', 'avg inner B', 'added B/pkt', 'TCP Mbit/s', 'resent segs'];
  const rows = summary.map((x) => [x.label, x.wirePayload.toFixed(4), x.wireInner.toFixed(4), x.innerPayload.toFixed(4), x.fwdWirePayload.toFixed(4),
    `${(100 * x.revShare).toFixed(1)} %`, x.outerPerInner.toFixed(2), x.outerSize.toFixed(0), x.innerSize.toFixed(0), x.perPacket.toFixed(1), x.mbps.toFixed(0), String(x.retransmits)]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => c.padEnd(widths[i])).join('  ');
  console.log(`\nresults (variant = tunnel and its interface MTU; bytes summed over ${RUNS} runs; wire and inner count both directions, IP bytes; "fwd only": h1 -> pub wire bytes / payload; "added B/pkt": forward wire minus inner bytes per inner packet; "resent segs": the inner TCP's retransmitted segments, which count as overhead here)`);
  console.log(line(head));
  for (const r of rows) console.log(line(r));
  const tincan = summary.filter((x) => x.key.startsWith('tincan-'));
  // Safe: a full-size frame fits one SCTP packet (datapath.ts's rule), and the counters agree (an MTU
  // above it roughly doubles the outer packets per inner packet; SACKs alone add ~10 %).
  // With offload an inner packet is a super-packet (many SCTP packets each): the frame rule alone.
  const safe = tincan.filter((x) => x.mtu + x.header <= rtcMtu(x.mtu) - 124 && (OFFLOAD || x.outerPerInner < 1.5));
  const best = [...safe].sort((p, q) => q.mtu - p.mtu)[0];
  if (best) {
    console.log(`best safe TinCan vNIC MTU measured (a full-size frame in one SCTP packet at a 1500-byte path MTU): ${best.mtu}; wire/payload ${best.wirePayload.toFixed(4)} — target <= 1.10 ${best.wirePayload <= 1.10 ? 'met' : 'NOT met'} (paper Fig. 8: 1.14 at 1280)`);
  }
  for (const x of tincan.filter((t) => !safe.includes(t))) {
    console.log(`vNIC MTU ${x.mtu} is not safe: ${x.outerPerInner.toFixed(2)} outer packets per inner packet (SCTP splits each full-size frame)`);
  }
  const d = summary.find((x) => x.mtu === 1280 && x.key.startsWith('tincan-'));
  if (d) console.log(`default vNIC MTU 1280: wire/payload ${d.wirePayload.toFixed(4)}, wire/inner ${d.wireInner.toFixed(4)} (paper: 14 % encapsulation overhead at 1280)`);

  const out = join(ROOT, 'docs/bench');
  mkdirSync(out, { recursive: true });
  const fields = ['key', 'mtu', 'mbps', 'payload', 'retransmits', 'wireFwd', 'wireRev', 'wirePktsFwd', 'wirePktsRev', 'innerFwd', 'innerRev', 'innerPktsFwd', 'innerPktsRev'];
  const csvHead = ['variant', 'vnic_mtu', 'tcp_mbps', 'payload_bytes', 'retransmits', 'wire_ip_bytes_fwd', 'wire_ip_bytes_rev', 'wire_packets_fwd', 'wire_packets_rev', 'inner_ip_bytes_fwd', 'inner_ip_bytes_rev', 'inner_packets_fwd', 'inner_packets_rev'];
  writeFileSync(join(out, `${NAME}.csv`), csv(['run', ...csvHead], results.map((r, i) => [i + 1, ...fields.map((f) => (typeof r[f] === 'number' ? Number(r[f].toFixed(f === 'mbps' ? 1 : 0)) : r[f]))])));
  writeFileSync(join(out, `${NAME}.svg`), barChartSvg(`Encapsulation overhead, bulk TCP h1 → pub, ${new Date().toISOString().slice(0, 10)}`, [
    {
      title: 'Bytes on the wire per byte of payload', yLabel: 'bytes per byte (both directions)', yMax: Math.max(1.3, ...summary.map((x) => x.wirePayload)),
      categories: summary.map((x) => x.label),
      series: [
        { name: 'wire / payload', values: summary.map((x) => ({ value: x.wirePayload })) },
        { name: 'wire / inner (the encapsulation alone)', values: summary.map((x) => ({ value: x.wireInner })) },
        { name: 'inner / payload (inner TCP/IP headers, ACKs, resends)', values: summary.map((x) => ({ value: x.innerPayload })) },
      ],
      note: 'target: wire / payload <= 1.10 at the best safe MTU; paper Fig. 8: 1.14',
    },
    {
      title: 'Bytes added per packet (forward direction)', yLabel: 'bytes per inner packet', categories: summary.map((x) => x.label),
      series: [{ name: 'outer minus inner bytes', values: summary.map((x) => ({ value: x.perPacket })) }],
      note: 'TinCan: 40-byte frame header + SCTP/DTLS/UDP/IP; more when SCTP splits a frame',
    },
  ], { panelWidth: 520, footer: 'IP bytes (no Ethernet header) from interface counters on h1; payload from iperf3. Shared 2-core machine.' }));
  console.log(`wrote docs/bench/${NAME}.csv and docs/bench/${NAME}.svg`);
  const perRun = (key, f) => results.filter((r) => r.key === key).map(f);
  const wgRow = summary.find((x) => x.key === 'wireguard-go');
  const wgRef = wgRow && { label: wgRow.label, median: median(perRun(wgRow.key, (r) => r.wire / r.payload)) };
  const figures = [];
  if (best) {
    figures.push(figure({
      key: 'wire_payload_best_safe', label: `wire bytes / payload bytes at the best safe vNIC MTU (${best.mtu})`, unit: '', samples: perRun(best.key, (r) => r.wire / r.payload),
      baseline: wgRef, target: { op: '<=', value: 1.10, text: '≤ 1.10' }, paper: '1.14 at 1280 (Fig. 8)',
    }));
  }
  for (const x of summary) {
    figures.push(figure({
      key: `wire_payload_${x.key}`, label: `wire / payload, ${x.label}`, unit: '', samples: perRun(x.key, (r) => r.wire / r.payload), ...(x !== wgRow ? { baseline: wgRef } : {}),
      note: `${x.outerPerInner.toFixed(2)} outer packets per inner packet, ${x.perPacket.toFixed(0)} bytes added per packet; TCP ${x.mbps.toFixed(0)} Mbit/s${tincan.includes(x) && !safe.includes(x) ? '; not safe: SCTP splits full-size frames' : ''}`,
    }));
    figures.push(figure({ key: `wire_inner_${x.key}`, label: `wire / inner (the encapsulation alone), ${x.label}`, unit: '', samples: perRun(x.key, (r) => r.wire / r.inner) }));
  }
  writeResults(NAME, {
    title: `Encapsulation overhead of a bulk TCP transfer h1 → pub (the paper's Fig. 8): TinCan${OFFLOAD ? ' (offload)' : ' --no-offload'} at several vNIC MTUs, wireguard-go, tinc`,
    settings: { runs: RUNS, seconds: SECONDS, 'TinCan vNIC MTUs': MTUS.join(', '), datapath_args: process.env.BENCH_DATAPATH_ARGS || 'none' },
    figures,
    plots: [`${NAME}.svg`],
    csv: [`${NAME}.csv`],
    notes: ['IP bytes on h1\'s underlay veth (wire) and tunnel interface (inner), both directions; payload from iperf3; each tunnel runs alone; "safe" MTU: a full-size frame fits one SCTP packet at a 1500-byte path MTU',
      ...(OFFLOAD ? ['offload: TinCan\'s inner packets are the TUN\'s, TCP super-packets of up to 32 KiB, so wire/inner and the per-packet figures are per super-packet'] : [])],
  });
} catch (err) {
  console.error(`bench overhead failed: ${err.stack ?? err}`);
  failed = true;
} finally {
  await cleanup.run();
}
process.exit(failed ? 1 : 0);
