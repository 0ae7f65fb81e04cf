#!/usr/bin/env node
// npm run bench -- setup: link setup time through the whole path a controller uses — create_link
// (ICE gathering with STUN/TURN), the offer and answer over XMPP (prosody), ICE checks, DTLS, SCTP —
// until the datapath reports the link up. Direct (two cone NATs) and relayed (symmetric NAT) pairs,
// each in three modes, alternating run by run: "full" (descriptions wait for ICE gathering),
// "trickle" (both descriptions at once, candidates after them as con_cand: create_link {trickle}) and
// "answer" (the offer waits for gathering, the answer trickles: a controller's first link to an older
// peer, one whose presence announces no capabilities; to a current peer every link trickles).
// Writes docs/bench/setup.csv and docs/bench/setup-cdf.svg; prints median, p75, p99 and the ratio.
// A setup not up within SETUP_TIMEOUT_MS is a failure: counted per mode, in the CSV (outcome
// "timeout", no time) and in the p99 over all attempts as longer than the timeout.
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, cdfSvg, labUp, median, quantile, registerXmpp, startNode } from './lib/lab-nodes.mjs';
import { writeResults } from './lib/results.mjs';
import { quantileOfAttempts, setupResults } from './lib/setup-results.mjs';

const N_DIRECT = Number(process.env.BENCH_SETUPS ?? 50);
const N_RELAY = Number(process.env.BENCH_RELAY_SETUPS ?? 20);
const lab = await labUp();
const ice = { stun: [lab.info.stun], turn: [{ address: lab.info.turn.address, username: lab.info.turn.username, password: lab.info.turn.password }] };
const nodes = [];
let failed = false;

const MODES = ['full', 'trickle', 'answer'];
const SETUP_TIMEOUT_MS = 30_000;

/** One link setup a → b in `mode`; ms until a reports it up. */
async function setup(a, b, mode, first) {
  const trickle = mode === 'trickle';
  const t0 = performance.now();
  const up = a.waitFor((o) => o.event === 'link' && o.uid === b.uid && o.state === 'up', SETUP_TIMEOUT_MS);
  up.catch(() => undefined); // awaited below; a failed call before that must not leave it unhandled
  const offer = await a.call('create_link', { uid: b.uid, ...ice, ...(trickle ? { trickle } : {}) });
  const data = { attempt: randomBytes(8).toString('hex'), description: offer.description, ...(mode !== 'full' ? { trickle: true } : {}) };
  await a.call('send_signal', { uid: b.uid, type: 'con_req', data });
  await up;
  const ms = performance.now() - t0;
  const st = (await a.call('get_state')).links.find((l) => l.uid === b.uid);
  if (first) console.log(`  ${a.host} -> ${b.host} (${mode}): path ${st.local_candidate}/${st.remote_candidate}`);
  await a.call('trim_link', { uid: b.uid });
  await b.call('trim_link', { uid: a.uid });
  await new Promise((r) => setTimeout(r, 100));
  return ms;
}

/**
 * n setups per mode, the modes alternating so that both see the same conditions. A setup that does not
 * come up is counted as failed (and both ends trimmed) instead of ending the run; three in a row do.
 */
async function setups(a, b, n) {
  const times = Object.fromEntries(MODES.map((m) => [m, []]));
  const failed = Object.fromEntries(MODES.map((m) => [m, 0]));
  const attempts = []; // { run, mode, ms: number | null (failed) } in order, for the CSV
  let inARow = 0;
  for (let i = 0; i < n; i++) {
    for (const m of MODES) {
      try {
        const ms = await setup(a, b, m, i === 0);
        times[m].push(ms);
        attempts.push({ run: i + 1, mode: m, ms });
        inARow = 0;
      } catch (err) {
        failed[m]++;
        attempts.push({ run: i + 1, mode: m, ms: null });
        console.log(`  ${a.host} -> ${b.host} (${m}) run ${i + 1} failed: ${err.message}`);
        if (++inARow >= 3) throw new Error(`${a.host} -> ${b.host}: three setups in a row failed`);
        await a.call('trim_link', { uid: b.uid }).catch(() => undefined);
        await b.call('trim_link', { uid: a.uid }).catch(() => undefined);
      }
    }
  }
  return Object.assign(times, { failed, attempts });
}

function summary(name, t, failed) {
  const p99 = quantileOfAttempts(t, failed, 0.99, SETUP_TIMEOUT_MS);
  return `${name.padEnd(17)} n=${t.length}${failed ? ` (+${failed} failed: ${failed} of ${t.length + failed})` : ''}  median ${median(t).toFixed(0)} ms  p75 ${quantile(t, 0.75).toFixed(0)} ms  ` +
    `p99 of all attempts ${p99.beyondTimeout ? '> ' : ''}${p99.value.toFixed(0)} ms  max ${failed ? `> ${SETUP_TIMEOUT_MS}` : Math.max(...t).toFixed(0)} ms`;
}

const failedText = (times, m) => (times.failed[m] ? ` + ${times.failed[m]} failed (> ${SETUP_TIMEOUT_MS / 1000} s)` : '');

function ratio(name, t, mode) {
  const r = (q) => (quantile(t[mode], q) / quantile(t.full, q)).toFixed(2);
  return `${name.padEnd(17)} ${mode} / full: median ${r(0.5)}  p75 ${r(0.75)}  p99 ${r(0.99)}`;
}

try {
  const driver = ['--auto-answer', '--trickle', '--ice', JSON.stringify(ice)];
  const h1 = await startNode('h1', '10.254.9.1', [], driver);
  const h2 = await startNode('h2', '10.254.9.2', [], driver);
  const h3 = await startNode('h3', '10.254.9.3', [], driver);
  nodes.push(h1, h2, h3);
  await Promise.all([registerXmpp(h1, lab.info, 'node41'), registerXmpp(h2, lab.info, 'node42'), registerXmpp(h3, lab.info, 'node43')]);
  for (const [a, b] of [[h1, h2], [h3, h1]]) {
    await a.call('set_remote_ip', { uid: b.uid, ip4: b.ip4 });
    await b.call('set_remote_ip', { uid: a.uid, ip4: a.ip4 });
    await a.waitFor((o) => o.event === 'presence' && o.uid === b.uid, 20_000).catch(() => undefined);
  }
  const direct = await setups(h1, h2, N_DIRECT);
  const relayed = await setups(h3, h1, N_RELAY);
  for (const m of MODES) console.log(summary(`direct ${m}`, direct[m], direct.failed[m]));
  for (const m of MODES) console.log(summary(`relayed ${m}`, relayed[m], relayed.failed[m]));
  for (const m of MODES.slice(1)) console.log(ratio('direct', direct, m));
  for (const m of MODES.slice(1)) console.log(ratio('relayed', relayed, m));
  console.log('paper (Table 2 / Fig. 7): median 6.3 s, p75 7.8 s; targets: direct median <= 0.3 s (earlier <= 0.5 s), relayed <= 1 s, p99 <= 2 s');
  const out = join(ROOT, 'docs/bench');
  mkdirSync(out, { recursive: true });
  const rows = (kind, times) => times.attempts.map((x) => `${kind},${x.run},${x.ms === null ? '' : x.ms.toFixed(1)},${x.mode},${x.ms === null ? 'timeout' : 'up'}`);
  writeFileSync(join(out, 'setup.csv'), ['kind,run,setup_ms,mode,outcome', ...rows('direct', direct), ...rows('relayed', relayed)].join('\n') + '\n');
  // The plot shows whole descriptions and trickle on both sides (four colours).
  writeFileSync(join(out, 'setup-cdf.svg'), cdfSvg('TinCan link setup time (lab, XMPP signaling)', 'setup time (ms)', ['full', 'trickle'].flatMap((m) => [
    { name: `direct (cone NATs), ${m}, n=${direct[m].length}${failedText(direct, m)}`, values: direct[m] },
    { name: `relayed (symmetric NAT, TURN), ${m}, n=${relayed[m].length}${failedText(relayed, m)}`, values: relayed[m] },
  ])));
  console.log('wrote docs/bench/setup.csv and docs/bench/setup-cdf.svg');
  writeResults('setup', setupResults(direct, relayed, SETUP_TIMEOUT_MS));
} catch (err) {
  console.error(`bench setup failed: ${err.stack ?? err}`);
  failed = true;
} finally {
  await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
  await lab.down();
}
process.exit(failed ? 1 : 0);
