// Shared by the benchmarks: bring the lab up (and down again if we brought it up), run datapaths
// with the scripted driver inside lab hosts, link them by handing descriptions across directly.
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { DATAPATH_NODE_FLAGS } from '@tincan/datapath/node-flags';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const LAB = join(ROOT, 'scripts/lab');
const LAB_DIR = process.env.TINCAN_LAB_DIR ?? '/tmp/tincan-lab';
/** Namespace prefix of the lab (scripts/lab: TINCAN_LAB_PREFIX, default tc-). */
export const NS_PREFIX = process.env.TINCAN_LAB_PREFIX ?? 'tc-';
export const nsOf = (host) => `${NS_PREFIX}${host}`;
const run = promisify(execFile);
/**
 * node's own flags for every datapath a bench starts: the datapath's (DATAPATH_NODE_FLAGS), or
 * BENCH_DATAPATH_NODE_FLAGS when it is set (space-separated; empty: none), to measure without them.
 */
export const DATAPATH_FLAGS = process.env.BENCH_DATAPATH_NODE_FLAGS === undefined
  ? [...DATAPATH_NODE_FLAGS] : process.env.BENCH_DATAPATH_NODE_FLAGS.split(' ').filter(Boolean);
/**
 * node's own flags for every controller a bench starts: none, or BENCH_CONTROLLER_NODE_FLAGS
 * (space-separated), to measure with them (docs/architecture.md, "Memory": --optimize-for-size).
 */
export const CONTROLLER_FLAGS = (process.env.BENCH_CONTROLLER_NODE_FLAGS ?? '').split(' ').filter(Boolean);

export async function labUp() {
  const wasUp = existsSync(join(LAB_DIR, 'lab.json'));
  await run(LAB, ['up'], { timeout: 120_000 });
  const info = JSON.parse(readFileSync(join(LAB_DIR, 'lab.json'), 'utf8'));
  return { info, down: async () => { if (!wasUp) await run(LAB, ['down'], { timeout: 60_000 }).catch(() => undefined); } };
}

export function inHost(host, cmd, opts = {}) {
  return run('ip', ['netns', 'exec', nsOf(host), ...cmd], { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 << 20 });
}

export function spawnInHost(host, cmd) {
  return spawn('ip', ['netns', 'exec', nsOf(host), ...cmd], { stdio: 'ignore' });
}

export const uidOf = (ip) => createHash('sha1').update(ip).digest('hex');

/** A datapath + scripted driver in a lab host (`opts.mtu`: the vNIC MTU, default 1280). */
export async function startNode(host, ip4, extraArgs = [], driverArgs = [], opts = {}) {
  const stateDir = mkdtempSync(join(tmpdir(), `tincan-bench-${host}-`));
  const dp = spawn('ip', ['netns', 'exec', nsOf(host), process.execPath, ...DATAPATH_FLAGS, join(ROOT, 'packages/datapath/dist/bin/tincan-datapath.js'),
    '--state-dir', stateDir, '--log-level', 'warn', ...extraArgs, ...(process.env.BENCH_DATAPATH_ARGS ?? '').split(' ').filter(Boolean)],
    { stdio: ['ignore', process.env.BENCH_LOG_DIR ? openSync(join(process.env.BENCH_LOG_DIR, `${host}.log`), 'w') : 'ignore', 'inherit'] });
  const drv = spawn('ip', ['netns', 'exec', nsOf(host), process.execPath, join(ROOT, 'test/fixtures/rpc-driver.mjs'),
    '--state-dir', stateDir, ...driverArgs], { stdio: ['pipe', 'pipe', 'inherit'] });
  const waiters = [];
  const events = [];
  let id = 0;
  createInterface({ input: drv.stdout }).on('line', (line) => {
    let o;
    try { o = JSON.parse(line); } catch { return; }
    if (o.event) events.push(o);
    for (const w of [...waiters]) if (w.match(o)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(o); }
  });
  const waitFor = (match, ms = 20_000) => new Promise((res, rej) => {
    const t = setTimeout(() => rej(new Error(`${host}: timeout`)), ms);
    waiters.push({ match, resolve: (o) => { clearTimeout(t); res(o); } });
  });
  const call = async (verb, params = {}) => {
    const n = ++id;
    const p = waitFor((o) => o.id === n);
    drv.stdin.write(`${JSON.stringify({ id: n, call: verb, params })}\n`);
    const o = await p;
    if (o.error) throw new Error(`${host} ${verb}: ${o.error}`);
    return o.result;
  };
  await waitFor((o) => o.ready === true);
  const uid = uidOf(ip4);
  await call('set_local_ip', { uid, name: 'tincan0', ip4: `${ip4}/16`, mtu: opts.mtu ?? 1280 });
  return {
    host, ip4, uid, stateDir, call, events, waitFor,
    stop: async () => {
      drv.stdin.end();
      dp.kill('SIGTERM');
      await new Promise((r) => dp.once('exit', r));
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/** Links a and b with descriptions handed over directly (no XMPP); resolves with setup time in ms. */
export async function linkDirect(a, b, ice = { stun: [], turn: [] }) {
  await a.call('set_remote_ip', { uid: b.uid, ip4: b.ip4 });
  await b.call('set_remote_ip', { uid: a.uid, ip4: a.ip4 });
  const t0 = performance.now();
  const upA = a.waitFor((o) => o.event === 'link' && o.uid === b.uid && o.state === 'up', 30_000);
  const offer = await a.call('create_link', { uid: b.uid, ...ice });
  const answer = await b.call('create_link', { uid: a.uid, ...ice, remote: offer.description });
  await a.call('create_link', { uid: b.uid, ...ice, remote: answer.description });
  await upA;
  return performance.now() - t0;
}

export function median(xs) {
  const s = [...xs].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function quantile(xs, q) {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

/** iperf3 TCP from `client` to `address` served in `server`; Mbit/s received. */
export async function iperfTcp(server, client, address, seconds = 5) {
  const srv = spawnInHost(server, ['iperf3', '-s', '-1', '-B', address]);
  await new Promise((r) => setTimeout(r, 400));
  try {
    const { stdout } = await inHost(client, ['iperf3', '-c', address, '-t', String(seconds), '-J'], { timeoutMs: (seconds + 20) * 1000 });
    return JSON.parse(stdout).end.sum_received.bits_per_second / 1e6;
  } finally {
    srv.kill();
  }
}

/** Registers a node with the lab's XMPP server and waits until it is online. */
export async function registerXmpp(node, lab, account) {
  await node.call('register_svc', {
    xmpp: { host: lab.xmpp.host, port: lab.xmpp.port, jid: `${account}@vpn.test`, password: `pw-${account}`, ca_file: lab.xmpp.ca_file, mechanism: 'PLAIN' },
  });
  if (!node.events.some((e) => e.event === 'xmpp' && e.state === 'online')) {
    await node.waitFor((o) => o.event === 'xmpp' && o.state === 'online', 20_000);
  }
}

// setup.mjs takes its CDF plot from here (plot.mjs holds every chart).
export { cdfSvg } from './plot.mjs';
