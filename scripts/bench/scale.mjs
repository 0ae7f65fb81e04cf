#!/usr/bin/env node
// npm run bench -- scale: N GroupVPN nodes (tincan-datapath + tincan-groupvpn each) on this one
// machine, one per extra lab host m1..mN (scripts/lab hosts N, public segment, no NAT), all in one
// network through the lab's prosody. Measures the time until the network has converged, the
// resident memory and idle CPU of every process, prosody's share, and reachability over virtual IPs
// for a sample of pairs. Writes docs/bench/scale.csv (one row per node), scale.svg (start-up timeline) and
// scale-rss.svg (memory per process); other policies or topologies write scale-VARIANT.*.
//
// Environment: BENCH_SCALE_N (50), BENCH_SCALE_POLICY (on-demand | proactive),
// BENCH_SCALE_TOPOLOGY (unset | structured: GroupVPN's "topology" key, or "routing.topology"
// where the build has it there), BENCH_SCALE_IDLE_SECONDS (30),
// BENCH_SCALE_STAGGER_MS (100: pause between starting two nodes), BENCH_SCALE_PINGS (10 pairs),
// BENCH_SCALE_TIMEOUT_S (300: convergence limit), BENCH_SCALE_MECHANISM (PLAIN | SCRAM-SHA-1),
// BENCH_SCALE_KEEP=1 (keep the nodes' configs and logs), BENCH_CONTROLLER_NODE_FLAGS (node's own flags for
// the controllers; default none), BENCH_DATAPATH_NODE_FLAGS (node's own flags for the
// datapaths instead of DATAPATH_NODE_FLAGS; empty: none, lib/lab-nodes.mjs), BENCH_DATAPATH_ARGS (more datapath
// arguments, e.g. `--malloc-arenas 0`), TINCAN_LAB_PREFIX / TINCAN_LAB_DIR.
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, getPriority, loadavg, setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CONTROLLER_FLAGS, DATAPATH_FLAGS, ROOT, labUp, median, nsOf } from './lib/lab-nodes.mjs';
import {
  LAB_DIR, alivePid, checkConfig, cpuSeconds, extraHosts, groupPair, labDaemonPid, machineBusySeconds, memKb, niceOf, readExtraHosts, topologyKey,
  waitExeced,
} from './lib/scale-nodes.mjs';
import { scatterSvg } from './lib/plot.mjs';
import { figure, writeResults } from './lib/results.mjs';

const run = promisify(execFile);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const env = process.env;
const N = Number(env.BENCH_SCALE_N ?? 50);
const POLICY = env.BENCH_SCALE_POLICY ?? 'on-demand';
const TOPOLOGY = env.BENCH_SCALE_TOPOLOGY || null;
const IDLE_S = Number(env.BENCH_SCALE_IDLE_SECONDS ?? 30);
const STAGGER_MS = Number(env.BENCH_SCALE_STAGGER_MS ?? 100);
const PINGS = Number(env.BENCH_SCALE_PINGS ?? 10);
const TIMEOUT_S = Number(env.BENCH_SCALE_TIMEOUT_S ?? 300);
const MECHANISM = env.BENCH_SCALE_MECHANISM ?? 'PLAIN';
const SETTLE_S = 5; // structured: the set of links must stay the same this long
const ACCOUNTS = 64; // node1..node64 in the lab; beyond that nodes share accounts (told apart by resource)

function usage(msg) {
  console.error(`bench scale: ${msg}`);
  process.exit(2);
}
if (!Number.isInteger(N) || N < 2 || N > 120) usage(`BENCH_SCALE_N must be 2..120 (got ${env.BENCH_SCALE_N})`);
if (!['on-demand', 'proactive'].includes(POLICY)) usage(`BENCH_SCALE_POLICY must be on-demand or proactive (got ${POLICY})`);
if (TOPOLOGY !== null && TOPOLOGY !== 'structured') usage(`BENCH_SCALE_TOPOLOGY must be unset or structured (got ${TOPOLOGY})`);
if (TOPOLOGY && POLICY === 'proactive') usage('the structured topology takes on-demand links (proactive ones would make it a full mesh)');
if (!(IDLE_S > 0) || !(STAGGER_MS >= 0) || !(PINGS >= 0) || !(TIMEOUT_S > 0)) usage('bad BENCH_SCALE_* number');
if (process.getuid?.() !== 0) usage('must run as root (network namespaces)');

// This driver runs at a higher priority than the nodes, so that its starts keep their schedule and
// its status polls their pace while a hundred node processes saturate the CPU; the nodes themselves
// run at the usual priority (nice 0).
const basePriority = getPriority();
try {
  setPriority(basePriority - 10);
} catch { /* not allowed: everything runs at one priority */ }
const NICE_ADJUST = basePriority - getPriority();

const variant = TOPOLOGY ?? POLICY; // the structured topology goes with on-demand links only
const outName = variant === 'on-demand' ? 'scale' : `scale-${variant}`;
const mb = (kb) => kb / 1024;
const fmt = (x, d = 1) => (x === null || x === undefined || Number.isNaN(x) ? '-' : x.toFixed(d));
const stats = (xs) => ({ median: median(xs), max: Math.max(...xs), min: Math.min(...xs) });

/** The state a node must reach (and all nodes at once) for the network to count as converged. */
function nodeReady(st) {
  if (!st || st.xmpp?.state !== 'online' || st.datapath?.status !== 'attached') return false;
  const members = st.peers.filter((p) => p.status === 'member').length;
  if (members < N - 1) return false;
  if (POLICY === 'proactive' && !TOPOLOGY) return st.peers.filter((p) => p.link === 'up').length >= N - 1;
  if (TOPOLOGY) return st.peers.some((p) => p.link === 'up'); // and the whole graph connected (below)
  return true;
}

/** Structured topology: the links that are up at both ends form one connected graph. */
function linkGraph(pairs, statuses) {
  const byUid = new Map(pairs.map((p, i) => [p.uid, i]));
  const up = pairs.map((_, i) => new Set(statuses[i].peers.filter((x) => x.link === 'up').map((x) => byUid.get(x.uid)).filter((j) => j !== undefined)));
  const edges = [];
  for (let i = 0; i < pairs.length; i++) for (const j of up[i]) if (i < j && up[j].has(i)) edges.push(`${i}-${j}`);
  const seen = new Set([0]);
  const todo = [0];
  while (todo.length) {
    const i = todo.pop();
    for (const j of up[i]) if (up[j].has(i) && !seen.has(j)) { seen.add(j); todo.push(j); }
  }
  return { connected: seen.size === pairs.length, key: edges.join(','), edges: edges.length };
}

const pairs = [];
const hostsBefore = readExtraHosts().length;
const labWasUp = existsSync(join(LAB_DIR, 'lab.json'));
let hostsRestore = null;
let lab = null;
let work = null;
let cleaned = false;

async function cleanup() {
  if (cleaned) return;
  cleaned = true;
  await Promise.all(pairs.map((p) => p.stop().catch(() => undefined)));
  if (hostsRestore) await hostsRestore();
  releaseBenchLock();
  if (lab) await lab.down();
  if (work && env.BENCH_SCALE_KEEP !== '1') rmSync(work, { recursive: true, force: true });
  else if (work) console.log(`kept configs and logs in ${work}`);
}

/** On a signal or a crash: kill every node at once, put the lab's hosts back (which also kills what is left in them). */
function cleanupNow() {
  for (const p of pairs) for (const c of Object.values(p.procs)) try { c.kill('SIGKILL'); } catch { /* gone */ }
  try {
    if (hostsRestore) execFileSync(join(ROOT, 'scripts/lab'), ['hosts', String(hostsBefore)], { stdio: 'ignore', timeout: 60_000 });
    releaseBenchLock();
    if (lab && !labWasUp) execFileSync(join(ROOT, 'scripts/lab'), ['down'], { stdio: 'ignore', timeout: 60_000 });
  } catch { /* best effort */ }
  if (work) rmSync(work, { recursive: true, force: true });
}

/** The nodes' warnings and errors, most frequent first. */
function logSummary() {
  const messages = new Map();
  for (const p of pairs) for (const m of p.logMessages()) messages.set(m, (messages.get(m) ?? 0) + 1);
  const top = [...messages].sort((a, b) => b[1] - a[1]).slice(0, 8);
  if (top.length) console.log(`  warnings and errors logged by the nodes (top ${top.length}):\n${top.map(([m, k]) => `    ${String(k).padStart(5)} × ${m}`).join('\n')}`);
}
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { cleanupNow(); process.exit(130); });
for (const ev of ['uncaughtException', 'unhandledRejection']) {
  process.on(ev, (err) => { console.error(`bench scale: ${err?.stack ?? err}`); cleanupNow(); process.exit(1); });
}

/** One scale bench per lab at a time: both would use the hosts m1, m2, … */
const LOCK = join(LAB_DIR, 'scale-bench.pid');
let locked = false;
function takeBenchLock() {
  for (;;) {
    try {
      writeFileSync(LOCK, `${process.pid}\n`, { flag: 'wx' });
      locked = true;
      return;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      const pid = Number(readFileSync(LOCK, 'utf8').trim());
      if (pid > 0 && alivePid(pid)) throw new Error(`another scale bench (pid ${pid}) is running in this lab (${LOCK})`);
      rmSync(LOCK, { force: true }); // left behind by a bench that is gone
    }
  }
}
const releaseBenchLock = () => { if (locked) rmSync(LOCK, { force: true }); locked = false; };

/** Seconds of CPU of each pid (null if gone). */
const cpuOf = (pids) => pids.map((pid) => cpuSeconds(pid));

let failed = false;
try {
  lab = await labUp();
  takeBenchLock();
  const info = lab.info;
  const t = await extraHosts(N);
  hostsRestore = t.restore;
  work = mkdtempSync(join(tmpdir(), 'tincan-bench-scale-'));
  const networkId = `bench-scale-${process.pid}`;
  // where this build's GroupVPN takes the topology: "topology", or "routing.topology" (the current key)
  const topologyAt = TOPOLOGY ? await topologyKey() : null;
  if (TOPOLOGY && !topologyAt) {
    throw new Error(`this build of tincan-groupvpn has no topology setting (neither "topology" nor "routing.topology" in ` +
      `its --print-config-schema): BENCH_SCALE_TOPOLOGY=${TOPOLOGY} needs the structured topology (build it first)`);
  }
  for (let i = 1; i <= N; i++) {
    const dir = join(work, `m${i}`);
    mkdirSync(dir);
    pairs.push(groupPair({
      host: t.hosts[i - 1].name, index: i, account: `node${((i - 1) % ACCOUNTS) + 1}`, dir, lab: info, networkId, policy: POLICY, topology: TOPOLOGY, topologyAt,
      maxLinks: Math.max(32, N), mechanism: MECHANISM, niceAdjust: NICE_ADJUST,
    }));
  }
  const check = await checkConfig(pairs[0].configFile);
  if (!check.ok) {
    if (TOPOLOGY && /topology|multihop|link_policy/.test(check.output)) {
      throw new Error(`tincan-groupvpn refuses "${topologyAt}": "${TOPOLOGY}" with link_policy ${POLICY}:\n${check.output.trim()}`);
    }
    throw new Error(`tincan-groupvpn refuses the generated config ${pairs[0].configFile}:\n${check.output.trim()}`);
  }
  const prosody = labDaemonPid('prosody');
  console.log(`${N} nodes in ${nsOf('m1')}..${nsOf(`m${N}`)}, policy ${POLICY}${TOPOLOGY ? `, topology ${TOPOLOGY}` : ''}, ` +
    `XMPP ${MECHANISM}, started ${STAGGER_MS} ms apart, datapaths with node flags: ${DATAPATH_FLAGS.join(' ') || 'none'}, ` +
    `controllers: ${CONTROLLER_FLAGS.join(' ') || 'none'}; lab ${LAB_DIR}`);

  // --- start and converge -------------------------------------------------------------------------
  const loadAtStart = loadavg().map((x) => x.toFixed(1)).join(' ');
  const prosodyCpu0 = cpuSeconds(prosody);
  const machine0 = machineBusySeconds();
  const t0 = performance.now();
  const t0Wall = Date.now();
  // the starts run on their schedule while the loop below polls every node's status
  let lastStart = null;
  let startError = null;
  const starting = (async () => {
    const execed = [];
    for (const [i, p] of pairs.entries()) {
      // on a schedule (pair i at i × stagger), so that a late timer does not delay every later start
      await sleep(t0 + i * STAGGER_MS - performance.now());
      p.start();
      p.startedMs = performance.now() - t0;
      const { datapath, groupvpn } = p.pids();
      for (const [pid, needle] of [[datapath, 'datapath/dist/bin/tincan-datapath.js'], [groupvpn, 'groupvpn/dist/bin/tincan-groupvpn.js']]) {
        execed.push(waitExeced(pid, needle).then(() => null, (err) => `${p.host}: ${err.message}\n${p.logTail()}`));
      }
    }
    lastStart = performance.now() - t0;
    // every pid we measure is node itself, not the nice or ip netns exec wrapper
    const notExeced = (await Promise.all(execed)).filter(Boolean);
    if (notExeced.length) throw new Error(notExeced.join('\n'));
    const niceValues = new Set(pairs.flatMap((p) => [niceOf(p.pids().datapath), niceOf(p.pids().groupvpn)]));
    if (niceValues.size !== 1 || !niceValues.has(basePriority)) throw new Error(`nodes run at nice ${[...niceValues]}, not ${basePriority}`);
  })().catch((err) => { startError = err; });
  let convergedMs = null;
  let graph = null;
  let stableSince = null;
  let lastKey = null;
  let lastReport = 0;
  while (convergedMs === null) {
    const now = performance.now() - t0;
    if (startError) throw startError;
    const dead = pairs.find((p) => !p.alive());
    if (dead) throw new Error(`a process of ${dead.host} exited during convergence:\n${dead.logTail()}`);
    const statuses = pairs.map((p) => (p.startedMs === undefined ? null : p.status()));
    let ready = 0;
    statuses.forEach((st, i) => {
      if (pairs[i].startedMs === undefined) return;
      if (st?.xmpp?.state === 'online') pairs[i].onlineMs ??= now;
      if (pairs[i].tokenMs === undefined) {
        // the datapath answers RPC from the moment it has written its token
        try { pairs[i].tokenMs = statSync(join(pairs[i].stateDir, 'rpc-5801.token')).mtimeMs - t0Wall; } catch { /* not yet */ }
      }
      if (nodeReady(st)) {
        ready++;
        pairs[i].readyMs ??= now;
      }
    });
    if (ready === N) {
      pairs.forEach((p, i) => { p.linksUp = statuses[i].peers.filter((x) => x.link === 'up').length; });
      if (!TOPOLOGY) convergedMs = now;
      else {
        graph = linkGraph(pairs, statuses);
        if (graph.key !== lastKey) { lastKey = graph.key; stableSince = now; }
        if (graph.connected && now - stableSince >= SETTLE_S * 1000) convergedMs = stableSince;
      }
    } else {
      lastKey = null; // a node fell back: the graph must be stable again from scratch
    }
    if (now - lastReport > 10_000) {
      lastReport = now;
      const online = statuses.filter((s) => s?.xmpp?.state === 'online').length;
      const members = statuses.map((s) => (s ? s.peers.filter((p) => p.status === 'member').length : 0));
      const links = statuses.map((s) => (s ? s.peers.filter((p) => p.link === 'up').length : 0));
      console.log(`  ${(now / 1000).toFixed(0)} s: ${online}/${N} online in XMPP, members seen min ${Math.min(...members)} of ${N - 1}, ` +
        `links up ${links.reduce((a, b) => a + b, 0) / 2}, ${ready} nodes ready`);
    }
    if (now > TIMEOUT_S * 1000) {
      const stuck = pairs.filter((p, i) => !nodeReady(statuses[i]));
      throw new Error(`not converged after ${TIMEOUT_S} s: ${stuck.length} nodes not ready (${stuck.slice(0, 8).map((p) => p.host).join(' ')}…)\n` +
        stuck.slice(0, 3).map((p) => p.logTail()).join('\n'));
    }
    if (convergedMs === null) await sleep(250);
  }
  await starting;
  if (startError) throw startError;
  const allPids = pairs.flatMap((p) => [p.pids().datapath, p.pids().groupvpn]);
  const convCpus = cpuOf(allPids);
  const convCpu = convCpus.reduce((a, b) => a + (b ?? 0), 0);
  pairs.forEach((p, i) => { p.convCpuDp = convCpus[2 * i]; p.convCpuCtl = convCpus[2 * i + 1]; });
  const prosodyConvCpu = cpuSeconds(prosody) - prosodyCpu0;
  const othersConvCpu = machineBusySeconds() - machine0 - convCpu - prosodyConvCpu;
  const convergedWall = performance.now() - t0;
  console.log(`converged ${fmt(convergedMs / 1000, 1)} s after the first start (last node started at ${fmt(lastStart / 1000, 1)} s); ` +
    `CPU until then: nodes ${fmt(convCpu, 0)} s, prosody ${fmt(prosodyConvCpu, 1)} s` +
    (graph ? `; ${graph.edges} links, connected` : ''));

  // --- idle window ----------------------------------------------------------------------------------
  const idle0 = performance.now();
  const c0 = cpuOf(allPids);
  const p0 = cpuSeconds(prosody);
  const m0 = machineBusySeconds();
  await sleep(IDLE_S * 1000);
  const c1 = cpuOf(allPids);
  const p1 = cpuSeconds(prosody);
  const m1 = machineBusySeconds();
  const idleS = (performance.now() - idle0) / 1000;
  const dead = pairs.find((p) => !p.alive());
  if (dead) throw new Error(`a process of ${dead.host} exited during the idle window:\n${dead.logTail()}`);
  const stillReady = pairs.filter((p) => nodeReady(p.status())).length;
  pairs.forEach((p, i) => {
    p.cpuDp = ((c1[2 * i] - c0[2 * i]) / idleS) * 100;
    p.cpuCtl = ((c1[2 * i + 1] - c0[2 * i + 1]) / idleS) * 100;
    p.memDp = memKb(p.pids().datapath);
    p.memCtl = memKb(p.pids().groupvpn);
  });
  const prosodyIdlePct = ((p1 - p0) / idleS) * 100;
  // the rest of the machine meanwhile (others' work on a shared machine makes every figure noisier)
  const othersPct = ((m1 - m0 - (p1 - p0) - c1.reduce((a, b, i) => a + b - c0[i], 0)) / idleS) * 100;
  const prosodyMem = memKb(prosody);

  // --- reachability over virtual IPs -----------------------------------------------------------------
  const pingResults = [];
  for (let k = 0; k < PINGS; k++) {
    const a = pairs[Math.floor(Math.random() * N)];
    let b;
    do b = pairs[Math.floor(Math.random() * N)]; while (b === a);
    const s = performance.now();
    const ok = await run('ip', ['netns', 'exec', nsOf(a.host), 'ping', '-n', '-c', '1', '-i', '0.2', '-w', '15', b.ip4], { timeout: 20_000 })
      .then(() => true, () => false);
    pingResults.push({ from: a, to: b, ok, ms: performance.now() - s });
  }
  const pingOk = pingResults.filter((r) => r.ok);
  pairs.forEach((p) => { p.memDpAfter = memKb(p.pids().datapath); });

  // --- report ---------------------------------------------------------------------------------------
  const dpRss = stats(pairs.map((p) => mb(p.memDp.rss)));
  const ctlRss = stats(pairs.map((p) => mb(p.memCtl.rss)));
  const memLine = (key) => ['anon', 'pss'].map((k) => `${k === 'anon' ? 'anonymous' : 'PSS'} median ${fmt(median(pairs.map((p) => mb(p[key][k]))))} MB`).join(', ');
  const dpCpu = stats(pairs.map((p) => p.cpuDp));
  const ctlCpu = stats(pairs.map((p) => p.cpuCtl));
  const nodeCpu = stats(pairs.map((p) => p.cpuDp + p.cpuCtl));
  const ready = stats(pairs.map((p) => p.readyMs - p.startedMs));
  const online = stats(pairs.map((p) => p.onlineMs - p.startedMs));
  const token = stats(pairs.map((p) => p.tokenMs - p.startedMs));
  const attachGap = stats(pairs.map((p) => p.onlineMs - p.tokenMs));
  const startCpu = stats(pairs.map((p) => p.convCpuDp + p.convCpuCtl));
  const linksUp = stats(pairs.map((p) => p.linksUp));
  console.log(`\nscale: N=${N}, ${variant}, ${MECHANISM}, stagger ${STAGGER_MS} ms, idle window ${fmt(idleS, 0)} s`);
  console.log(`  converged:            ${fmt(convergedMs / 1000, 1)} s after the first start (last start ${fmt(lastStart / 1000, 1)} s); ` +
    `per node from its own start to ready: median ${fmt(ready.median / 1000, 1)} s, max ${fmt(ready.max / 1000, 1)} s`);
  console.log(`  datapath RPC ready:   per node from its own start: median ${fmt(token.median / 1000, 1)} s, max ${fmt(token.max / 1000, 1)} s (its token file written)`);
  console.log(`  XMPP online:          per node from its own start: median ${fmt(online.median / 1000, 1)} s, min ${fmt(online.min / 1000, 1)} s, max ${fmt(online.max / 1000, 1)} s; ` +
    `after the datapath was ready: median ${fmt(attachGap.median / 1000, 1)} s, max ${fmt(attachGap.max / 1000, 1)} s`);
  console.log(`  CPU until converged:  per node (datapath + controller) median ${fmt(startCpu.median, 2)} s, max ${fmt(startCpu.max, 2)} s; all nodes ${fmt(convCpu, 0)} s; prosody ${fmt(prosodyConvCpu, 1)} s; everything else on the machine ${fmt(othersConvCpu, 0)} s`);
  console.log(`  links up per node at convergence: median ${linksUp.median}, min ${linksUp.min}, max ${linksUp.max}`);
  console.log(`  still converged after the idle window: ${stillReady}/${N} nodes`);
  console.log(`  RSS datapath:         median ${fmt(dpRss.median)} MB, max ${fmt(dpRss.max)} MB (target <= 60 MB: ${dpRss.max <= 60 ? 'met' : 'NOT met'})`);
  console.log(`                        of that ${memLine('memDp')}`);
  console.log(`  RSS controller:       median ${fmt(ctlRss.median)} MB, max ${fmt(ctlRss.max)} MB; ${memLine('memCtl')}`);
  console.log(`  idle CPU datapath:    median ${fmt(dpCpu.median, 2)} %, max ${fmt(dpCpu.max, 2)} % of one core`);
  console.log(`  idle CPU controller:  median ${fmt(ctlCpu.median, 2)} %, max ${fmt(ctlCpu.max, 2)} % of one core`);
  console.log(`  idle CPU per node:    median ${fmt(nodeCpu.median, 2)} %, max ${fmt(nodeCpu.max, 2)} %; all ${N} nodes together ${fmt(pairs.reduce((a, p) => a + p.cpuDp + p.cpuCtl, 0), 1)} % of one core`);
  console.log(`  everything else on the machine during the idle window: ${fmt(othersPct, 0)} % of one core (${cpus().length} cores); load average at the start ${loadAtStart}`);
  console.log(`  prosody:              RSS ${fmt(mb(prosodyMem.rss))} MB (anonymous ${fmt(mb(prosodyMem.anon))} MB), idle CPU ${fmt(prosodyIdlePct, 2)} % of one core; CPU during convergence ${fmt(prosodyConvCpu, 1)} s`);
  if (PINGS) {
    console.log(`  pings over virtual IPs: ${pingOk.length}/${PINGS} random pairs answered; time to the first reply ` +
      (pingOk.length ? `median ${fmt(median(pingOk.map((r) => r.ms)), 0)} ms, max ${fmt(Math.max(...pingOk.map((r) => r.ms)), 0)} ms` : '-'));
    for (const r of pingResults.filter((x) => !x.ok)) console.log(`    FAILED ${r.from.host} -> ${r.to.host} (${r.to.ip4})`);
    const after = stats(pairs.map((p) => mb(p.memDpAfter?.rss ?? 0)));
    console.log(`  RSS datapath after the pings: median ${fmt(after.median)} MB, max ${fmt(after.max)} MB`);
  }

  const out = join(ROOT, 'docs/bench');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, `${outName}.csv`), [
    'node,host,vip,started_ms,datapath_ready_ms,xmpp_online_ms,ready_ms,links_up,cpu_until_converged_s,datapath_rss_kb,datapath_anon_kb,datapath_pss_kb,controller_rss_kb,controller_anon_kb,' +
      'controller_pss_kb,datapath_idle_cpu_pct,controller_idle_cpu_pct,datapath_rss_after_pings_kb',
    ...pairs.map((p) => [p.account, p.host, p.ip4, p.startedMs.toFixed(0), p.tokenMs.toFixed(0), p.onlineMs.toFixed(0), p.readyMs.toFixed(0), p.linksUp,
      (p.convCpuDp + p.convCpuCtl).toFixed(2), p.memDp.rss, p.memDp.anon, p.memDp.pss,
      p.memCtl.rss, p.memCtl.anon, p.memCtl.pss, p.cpuDp.toFixed(3), p.cpuCtl.toFixed(3), p.memDpAfter?.rss ?? ''].join(',')),
  ].join('\n') + '\n');
  const sec = (ms) => ms / 1000;
  writeFileSync(join(out, `${outName}.svg`), scatterSvg(`TinCan GroupVPN: ${N} nodes starting on one 2-core machine (${variant})`,
    'seconds since the first start', 'node', [
      { name: 'started', points: pairs.map((p, i) => [sec(p.startedMs), i + 1]) },
      { name: 'datapath RPC ready', points: pairs.map((p, i) => [sec(p.tokenMs), i + 1]) },
      { name: 'XMPP online', points: pairs.map((p, i) => [sec(p.onlineMs), i + 1]) },
      { name: TOPOLOGY ? `${N - 1} members, a link up` : POLICY === 'proactive' ? `${N - 1} links up` : `sees ${N - 1} members`, points: pairs.map((p, i) => [sec(p.readyMs), i + 1]) },
    ]));
  writeFileSync(join(out, `${outName}-rss.svg`), scatterSvg(`Resident memory per process, ${N} nodes (${variant}), after ${fmt(idleS, 0)} s idle`,
    'node', 'MB', [
      { name: 'datapath RSS', points: pairs.map((p, i) => [i + 1, mb(p.memDp.rss)]) },
      { name: 'controller RSS', points: pairs.map((p, i) => [i + 1, mb(p.memCtl.rss)]) },
      { name: 'datapath anonymous', points: pairs.map((p, i) => [i + 1, mb(p.memDp.anon)]) },
      { name: 'controller anonymous', points: pairs.map((p, i) => [i + 1, mb(p.memCtl.anon)]) },
    ]));
  const messages = new Map();
  for (const p of pairs) for (const m of p.logMessages()) messages.set(m, (messages.get(m) ?? 0) + 1);
  const top = [...messages].sort((a, b) => b[1] - a[1]).slice(0, 8);
  if (top.length) console.log(`  warnings and errors logged by the nodes (top ${top.length}):\n${top.map(([m, k]) => `    ${String(k).padStart(5)} × ${m}`).join('\n')}`);
  console.log(`wrote docs/bench/${outName}.csv, ${outName}.svg (timeline) and ${outName}-rss.svg`);
  const perNode = (f) => pairs.map(f);
  writeResults(outName, {
    title: `${N} GroupVPN nodes (datapath + controller each) on this one machine, ${variant}`,
    settings: { N, policy: POLICY, topology: TOPOLOGY ?? 'none', mechanism: MECHANISM, stagger_ms: STAGGER_MS, idle_s: IDLE_S, pings: PINGS, datapath_node_flags: DATAPATH_FLAGS.join(' ') || 'none', controller_node_flags: CONTROLLER_FLAGS.join(' ') || 'none' },
    figures: [
      figure({ key: 'nodes', label: 'nodes converged into one network', unit: 'nodes', median: N, n: 1, target: { op: '>=', value: 50, text: 'N ≥ 50' } }),
      figure({ key: 'converged_s', label: 'time until converged, from the first start', unit: 's', median: convergedMs / 1000, n: 1, note: `last node started at ${fmt(lastStart / 1000, 1)} s` }),
      figure({ key: 'ready_s', label: 'per node: its own start to ready', unit: 's', samples: perNode((p) => (p.readyMs - p.startedMs) / 1000) }),
      figure({ key: 'rss_datapath_mb', label: 'RSS per datapath', unit: 'MB', samples: perNode((p) => mb(p.memDp.rss)), target: { op: '<=', value: 60, of: 'max', text: '≤ 60 MB (every datapath)' } }),
      figure({ key: 'anon_datapath_mb', label: 'anonymous memory per datapath (not shared with other node processes)', unit: 'MB', samples: perNode((p) => mb(p.memDp.anon)) }),
      figure({ key: 'rss_controller_mb', label: 'RSS per controller', unit: 'MB', samples: perNode((p) => mb(p.memCtl.rss)) }),
      figure({ key: 'idle_cpu_node_pct', label: 'idle CPU per node (datapath + controller)', unit: '% of a core', samples: perNode((p) => p.cpuDp + p.cpuCtl) }),
      figure({ key: 'idle_cpu_all_pct', label: `idle CPU of all ${N} nodes together`, unit: '% of a core', median: pairs.reduce((a, p) => a + p.cpuDp + p.cpuCtl, 0), n: 1 }),
      figure({ key: 'cpu_until_converged_s', label: 'CPU until converged per node', unit: 'CPU-s', samples: perNode((p) => p.convCpuDp + p.convCpuCtl) }),
      ...(PINGS ? [figure({ key: 'pings_ok', label: 'pings over virtual IPs answered, random pairs', unit: `of ${PINGS}`, median: pingOk.length, n: 1 })] : []),
    ],
    plots: [`${outName}.svg`, `${outName}-rss.svg`],
    csv: [`${outName}.csv`],
    notes: [
      `the rest of the machine used ${fmt(othersConvCpu, 0)} CPU-s while the nodes started and ${fmt(othersPct, 0)} % of a core during the idle window; prosody ${fmt(prosodyConvCpu, 1)} CPU-s during convergence`,
      `still converged after the idle window: ${stillReady}/${N} nodes`,
    ],
  });
  if (pingOk.length < PINGS || stillReady < N) failed = true;
} catch (err) {
  console.error(`bench scale failed: ${err.stack ?? err}`);
  logSummary();
  failed = true;
} finally {
  await cleanup();
}
process.exit(failed ? 1 : 0);
