// Shared by the recovery and outage benchmarks: real tincan-datapath + tincan-groupvpn nodes in lab
// hosts (proactive GroupVPN), their status, and waiting for a condition.
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CONTROLLER_FLAGS, DATAPATH_FLAGS, ROOT, labUp, nsOf, uidOf } from './lab-nodes.mjs';
import { writeResults } from './results.mjs';

const run = promisify(execFile);
const CTL = join(ROOT, 'packages/cli/dist/bin/tincanctl.js');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** tincan-datapath + tincan-groupvpn in a lab host, with a config file. */
export function groupNode(lab, host, ip4, account, networkId = 'bench-recovery') {
  const dir = mkdtempSync(join(tmpdir(), `tincan-bench-gv-${host}-`));
  const stateDir = join(dir, 'state');
  const configFile = join(dir, 'groupvpn.json');
  writeFileSync(configFile, JSON.stringify({
    network_id: networkId,
    xmpp: { host: lab.xmpp.host, port: lab.xmpp.port, jid: `${account}@vpn.test`, password: `pw-${account}`, ca_file: lab.xmpp.ca_file, mechanism: 'PLAIN' },
    vnic: { name: 'tincan0', ip4: `${ip4}/16`, mtu: 1280 },
    stun: [lab.stun],
    turn: [{ address: lab.turn.address, username: lab.turn.username, password: lab.turn.password }],
    link_policy: 'proactive',
    datapath: '127.0.0.1:5801',
    state_dir: stateDir,
  }));
  const procs = [];
  const spawnIn = (args) => {
    const p = spawn('ip', ['netns', 'exec', nsOf(host), process.execPath, ...args, '--log-level', 'warn'], { stdio: 'ignore' });
    procs.push(p);
    return p;
  };
  return {
    host, ip4, uid: uidOf(ip4),
    start() {
      spawnIn([...DATAPATH_FLAGS, join(ROOT, 'packages/datapath/dist/bin/tincan-datapath.js'), '--state-dir', stateDir]);
      spawnIn([...CONTROLLER_FLAGS, join(ROOT, 'packages/groupvpn/dist/bin/tincan-groupvpn.js'), '--config', configFile]);
    },
    async status() {
      const { stdout } = await run('ip', ['netns', 'exec', nsOf(host), process.execPath, CTL, '--state-dir', stateDir, 'status', '--json'], { timeout: 10_000 });
      return JSON.parse(stdout);
    },
    async links() {
      try {
        return (await this.status()).links;
      } catch {
        return null;
      }
    },
    async upTo(uids) {
      const l = await this.links();
      return !!l && uids.every((u) => l.some((x) => x.uid === u && x.state === 'up'));
    },
    /** kill -9 both processes: no goodbye. */
    kill() {
      for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    },
    async stop() {
      // a process killed by a signal (kill() above) has exitCode null and signalCode set: it is gone too
      const running = procs.filter((p) => p.exitCode === null && p.signalCode === null);
      for (const p of running) p.kill('SIGTERM');
      await Promise.all(running.map((p) => new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r() : p.once('exit', r)))));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function until(check, timeoutMs, what) {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (await check()) return Date.now() - t0;
    await sleep(100);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/**
 * Runs a bench of group nodes: the lab up, `body(labInfo, nodes)` (it pushes the nodes it starts and
 * returns the results), the results written; then, also on failure, prosody started again, the nodes
 * stopped and the lab down. Exits the process (non-zero on failure).
 */
export async function groupBench(name, body) {
  const lab = await labUp();
  const nodes = [];
  let failed = false;
  try {
    writeResults(name, await body(lab.info, nodes));
  } catch (err) {
    console.error(`bench ${name} failed: ${err.stack ?? err}`);
    failed = true;
  } finally {
    await run(join(ROOT, 'scripts/lab'), ['server', 'start', 'prosody'], { timeout: 60_000 }).catch(() => undefined);
    await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
    await lab.down();
  }
  process.exit(failed ? 1 : 0);
}

/**
 * Pings `address` from `host` every `intervalS` for `seconds` while `during` runs (started after 1 s):
 * requests sent, replies, and the longest gap between replies (ping's -D timestamps, ms).
 */
export async function pingDuring(host, address, seconds, during, intervalS = 0.05) {
  const child = spawn('ip', ['netns', 'exec', nsOf(host), 'ping', '-D', '-i', String(intervalS), '-W', '1', '-w', String(seconds), address]);
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  const done = new Promise((r) => child.once('exit', r));
  await sleep(1000);
  await during();
  await done;
  const t = [...out.matchAll(/^\[(\d+\.\d+)\].*time=/gm)].map((m) => Number(m[1]) * 1000);
  let gap = 0;
  for (let i = 1; i < t.length; i++) gap = Math.max(gap, t[i] - t[i - 1]);
  return { sent: Number(/(\d+) packets transmitted/.exec(out)?.[1] ?? 0), replies: t.length, gapMs: Math.round(gap) };
}
