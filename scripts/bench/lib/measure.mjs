// Measurement helpers for the comparison benchmarks (baselines, overhead, idle): child processes
// that are always reaped, a cleanup stack that also runs on SIGINT/SIGTERM, iperf3 with its JSON
// report, ping samples, interface counters and iptables byte counters inside lab namespaces.
import { spawn } from 'node:child_process';
import { inHost, median, nsOf } from './lab-nodes.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export { sleep };

// ---- processes ------------------------------------------------------------------------------

const live = new Set();
process.on('exit', () => {
  // Last resort (an uncaught error or process.exit before the finally ran): nothing we started survives.
  for (const p of live) { try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } }
});

/**
 * A long-running command inside a lab host (`ip netns exec` execs it, so the child's pid is the
 * command's own). Its output is kept (last 200 lines) for error messages.
 */
export function daemonIn(host, cmd, { env } = {}) {
  const proc = spawn('ip', ['netns', 'exec', nsOf(host), ...cmd], {
    stdio: ['ignore', 'pipe', 'pipe'], env: env ? { ...process.env, ...env } : process.env,
  });
  const lines = [];
  const keep = (chunk) => {
    for (const l of chunk.toString().split('\n')) if (l) lines.push(l);
    if (lines.length > 200) lines.splice(0, lines.length - 200);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  let exited = false;
  const exit = new Promise((r) => proc.once('exit', (code, signal) => { exited = true; live.delete(proc); r({ code, signal }); }));
  proc.once('error', () => { exited = true; live.delete(proc); });
  live.add(proc);
  return {
    proc,
    pid: proc.pid,
    lines,
    get exited() { return exited; },
    exit,
    /** SIGTERM, SIGKILL after `ms`; resolves when the process is gone. */
    async stop(ms = 3000) {
      if (exited) return;
      proc.kill('SIGTERM');
      const t = setTimeout(() => { if (!exited) proc.kill('SIGKILL'); }, ms);
      await exit;
      clearTimeout(t);
    },
  };
}

/** `fn` made safe to call more than once (later calls get the first call's promise). */
export function once(fn) {
  let p = null;
  return () => (p ??= Promise.resolve().then(fn));
}

/**
 * A command inside a lab host run to completion: { code, stdout, stderr }. Unlike a plain execFile,
 * the child is tracked, so it is killed if this process exits first.
 */
export function runIn(host, cmd, { timeoutMs = 60_000 } = {}) {
  const d = daemonIn(host, cmd);
  let stdout = '', stderr = '';
  d.proc.stdout.on('data', (c) => { stdout += c; });
  d.proc.stderr.on('data', (c) => { stderr += c; });
  const t = setTimeout(() => void d.stop(), timeoutMs);
  return d.exit.then(({ code, signal }) => { clearTimeout(t); return { code, signal, stdout, stderr }; });
}

/** Cleanup actions run last-in first-out, once, from `finally` or on SIGINT/SIGTERM. */
export function cleanupStack() {
  const actions = [];
  let ran = null;
  const run = () => {
    ran ??= (async () => {
      while (actions.length) {
        const [what, fn] = actions.pop();
        try { await fn(); } catch (err) { console.error(`cleanup (${what}): ${err.message ?? err}`); }
      }
    })();
    return ran;
  };
  const onSignal = (sig) => {
    console.error(`${sig}: cleaning up`);
    void run().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return { add: (what, fn) => { actions.push([what, fn]); }, run };
}

// ---- iperf3 and ping ------------------------------------------------------------------------

/**
 * One iperf3 test from `client` to `address` (served in `server`). TCP: Mbit/s and bytes received,
 * retransmits. UDP (`udp: true`, offered `rate`, datagrams of `len` bytes): Mbit/s received, loss %.
 * `parallel`: that many flows at once (iperf3 -P), figures summed over them.
 */
export async function iperf3(server, client, address, { seconds = 5, udp = false, rate = '500M', len = 1200, parallel = 1 } = {}) {
  for (let attempt = 0; ; attempt++) {
    const srv = daemonIn(server, ['iperf3', '-s', '-1', '-B', address]);
    await sleep(400);
    const args = ['iperf3', '-c', address, '-t', String(seconds), '-J'];
    if (udp) args.push('-u', '-b', String(rate), '-l', String(len));
    if (parallel > 1) args.push('-P', String(parallel));
    try {
      const r = await runIn(client, args, { timeoutMs: (seconds + 30) * 1000 });
      if (r.code !== 0) throw Object.assign(new Error(`exit ${r.code ?? r.signal}: ${r.stderr.trim()}`), { stdout: r.stdout });
      const j = JSON.parse(r.stdout);
      const rcv = j.end.sum_received ?? j.end.sum;
      const snd = j.end.sum_sent ?? j.end.sum;
      return {
        mbps: rcv.bits_per_second / 1e6,
        bytes: rcv.bytes,
        sentBytes: snd.bytes,
        retransmits: snd.retransmits ?? null,
        lossPct: udp ? (rcv.lost_percent ?? j.end.sum?.lost_percent ?? null) : null,
      };
    } catch (err) {
      // iperf3 -J prints its error inside the JSON on stdout, with a non-zero exit.
      let msg = String(err.message ?? err);
      try { msg = JSON.parse(err.stdout).error ?? msg; } catch { /* not JSON */ }
      if (attempt < 2 && /refused|connect/i.test(msg)) { await srv.stop(); await sleep(500); continue; }
      throw new Error(`iperf3 ${client} -> ${address}${udp ? ' (UDP)' : ''}: ${msg}`);
    } finally {
      await srv.stop(1000);
    }
  }
}

/** Ping RTT samples in ms (`count` pings every `intervalS` s), without the first one (neighbour resolution). */
export async function pingSamples(host, address, count = 40, intervalS = 0.05) {
  const r = await runIn(host, ['ping', '-c', String(count), '-i', String(intervalS), '-W', '2', address],
    { timeoutMs: (count * intervalS + 10) * 1000 });
  const rtts = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  if (rtts.length < 2) throw new Error(`ping ${host} -> ${address}: ${rtts.length} replies of ${count}`);
  return rtts.slice(1);
}

/**
 * Latency under load: an iperf3 TCP transfer of `seconds` from `client` to `address`, and pings from
 * the client to the same address from 1 s after its start until 0.5 s before its end.
 */
export async function pingUnderLoad(server, client, address, seconds = 5) {
  const transfer = iperf3(server, client, address, { seconds });
  await sleep(1400); // iperf3 server start (0.4 s) + 1 s of transfer
  const count = Math.max(10, Math.floor((seconds - 1.5) / 0.05));
  const [rtts, tcp] = await Promise.all([pingSamples(client, address, count), transfer]);
  return { rtts, tcp };
}

// ---- counters -------------------------------------------------------------------------------

/** An interface's statistics in a lab host (veth counts include the 14-byte Ethernet header). */
export async function ifCounters(host, iface) {
  const f = ['rx_bytes', 'tx_bytes', 'rx_packets', 'tx_packets'].map((k) => `/sys/class/net/${iface}/statistics/${k}`);
  const { stdout } = await inHost(host, ['cat', ...f]);
  const [rxBytes, txBytes, rxPackets, txPackets] = stdout.trim().split(/\s+/).map(Number);
  return { rxBytes, txBytes, rxPackets, txPackets };
}

export function counterDelta(a, b) {
  return Object.fromEntries(Object.keys(a).map((k) => [k, b[k] - a[k]]));
}

/**
 * Byte counters with iptables inside a lab host: two chains of our own (`NAME-I` hooked from INPUT,
 * `NAME-O` from OUTPUT) holding target-less rules, one per key and direction, which only count.
 * `rules`: [{ key, in: [match args], out: [match args] }]. read() → { key: { inBytes, outBytes, inPackets, outPackets } }.
 * Bytes are IP packet bytes (no Ethernet header). remove() takes everything out again.
 */
export async function iptablesCounters(host, name, rules) {
  const ipt = (...args) => inHost(host, ['iptables', '-w', '5', ...args]);
  const chains = { in: `${name}-I`, out: `${name}-O` };
  const hooks = { in: 'INPUT', out: 'OUTPUT' };
  const installed = [];
  const remove = async () => {
    for (const dir of ['in', 'out']) {
      if (installed.includes(`hook-${dir}`)) await ipt('-D', hooks[dir], '-j', chains[dir]).catch(() => undefined);
      if (installed.includes(`chain-${dir}`)) {
        await ipt('-F', chains[dir]).catch(() => undefined);
        await ipt('-X', chains[dir]).catch(() => undefined);
      }
    }
  };
  try {
    for (const dir of ['in', 'out']) {
      await ipt('-N', chains[dir]);
      installed.push(`chain-${dir}`);
      for (const r of rules) if (r[dir]) await ipt('-A', chains[dir], ...r[dir], '-m', 'comment', '--comment', r.key);
      await ipt('-I', hooks[dir], '1', '-j', chains[dir]);
      installed.push(`hook-${dir}`);
    }
  } catch (err) {
    await remove();
    throw err;
  }
  const read = async () => {
    const out = Object.fromEntries(rules.map((r) => [r.key, { inBytes: 0, outBytes: 0, inPackets: 0, outPackets: 0 }]));
    for (const dir of ['in', 'out']) {
      const { stdout } = await ipt('-L', chains[dir], '-v', '-n', '-x');
      for (const line of stdout.split('\n')) {
        const m = line.match(/^\s*(\d+)\s+(\d+)\s.*\/\* (\S+) \*\//);
        if (!m || !out[m[3]]) continue;
        out[m[3]][`${dir}Packets`] += Number(m[1]);
        out[m[3]][`${dir}Bytes`] += Number(m[2]);
      }
    }
    return out;
  };
  return { read, remove };
}

// ---- statistics -----------------------------------------------------------------------------

export const min = (xs) => Math.min(...xs);
export const max = (xs) => Math.max(...xs);
export { median };

/** "248 (229–281)" with `digits` decimals. */
export function medRange(xs, digits = 0) {
  if (!xs?.length) return '—';
  return `${median(xs).toFixed(digits)} (${min(xs).toFixed(digits)}–${max(xs).toFixed(digits)})`;
}
