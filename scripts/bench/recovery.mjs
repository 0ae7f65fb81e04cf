#!/usr/bin/env node
// npm run bench -- recovery: how fast a GroupVPN (real tincan-datapath + tincan-groupvpn nodes in lab
// hosts) recovers from faults: an XMPP server restart (traffic interruption on an existing link, time
// until a new link can be made), a NAT that forgets its mappings (ping gap after `conntrack -F` on h1's
// NAT), a host whose address changes (ping gap), and a peer that vanishes without a goodbye (time until
// the others trim its link). Writes docs/bench/recovery.json.
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CONTROLLER_FLAGS, DATAPATH_FLAGS, ROOT, labUp, nsOf, uidOf } from './lib/lab-nodes.mjs';
import { figure, writeResults } from './lib/results.mjs';

const run = promisify(execFile);
const LAB = join(ROOT, 'scripts/lab');
const CTL = join(ROOT, 'packages/cli/dist/bin/tincanctl.js');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** tincan-datapath + tincan-groupvpn in a lab host, with a config file. */
function groupNode(lab, host, ip4, account) {
  const dir = mkdtempSync(join(tmpdir(), `tincan-bench-gv-${host}-`));
  const stateDir = join(dir, 'state');
  const configFile = join(dir, 'groupvpn.json');
  writeFileSync(configFile, JSON.stringify({
    network_id: 'bench-recovery',
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

async function until(check, timeoutMs, what) {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (await check()) return Date.now() - t0;
    await sleep(100);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Longest gap (ms) between ping replies from `host` to `address` (every 50 ms) while `during` runs. */
async function pingGap(host, address, seconds, during) {
  const child = spawn('ip', ['netns', 'exec', nsOf(host), 'ping', '-D', '-i', '0.05', '-W', '1', '-w', String(seconds), address]);
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  const done = new Promise((r) => child.once('exit', r));
  await sleep(1000);
  await during();
  await done;
  const t = [...out.matchAll(/^\[(\d+\.\d+)\].*time=/gm)].map((m) => Number(m[1]) * 1000);
  let gap = 0;
  for (let i = 1; i < t.length; i++) gap = Math.max(gap, t[i] - t[i - 1]);
  return { gapMs: Math.round(gap), replies: t.length };
}

const lab = await labUp();
const nodes = [];
const figures = [];
const once = (key, label, ms, note) => figures.push(figure({ key, label, unit: 'ms', median: ms, n: 1, note }));
let failed = false;
try {
  const a = groupNode(lab.info, 'h1', '10.254.7.1', 'node51');
  const b = groupNode(lab.info, 'h2', '10.254.7.2', 'node52');
  const c = groupNode(lab.info, 'pub', '10.254.7.3', 'node53');
  nodes.push(a, b, c);
  a.start();
  b.start();
  const setup = await until(async () => (await a.upTo([b.uid])) && (await b.upTo([a.uid])), 60_000, 'h1-h2 link');
  console.log(`h1-h2 link up ${setup} ms after start`);

  // 1. XMPP server restart
  let restartMs = 0;
  const x = await pingGap('h1', b.ip4, 10, async () => {
    const t0 = Date.now();
    await run(LAB, ['server', 'restart', 'prosody'], { timeout: 60_000 });
    restartMs = Date.now() - t0;
  });
  console.log(`XMPP restart (prosody down+up in ${restartMs} ms): longest ping gap on the existing h1-h2 link ${x.gapMs} ms (${x.replies} replies at 50 ms)`);
  once('xmpp_restart_gap_ms', 'XMPP server restart: longest ping gap on an existing link', x.gapMs, `prosody down and up in ${restartMs} ms; pings every 50 ms`);
  const t1 = Date.now();
  c.start();
  const newLink = await until(async () => (await c.upTo([a.uid, b.uid])), 90_000, 'the new node linked to both');
  console.log(`XMPP restart: a node started right after prosody is back linked to both others in ${Date.now() - t1} ms (links up ${newLink} ms)`);
  once('xmpp_restart_new_node_ms', 'XMPP server restart: a node started after it linked to both others', Date.now() - t1);

  // 2. mobility: h1's NAT forgets every mapping
  const m = await pingGap('h1', b.ip4, 15, async () => {
    await run('ip', ['netns', 'exec', nsOf('nat1'), 'conntrack', '-F'], { timeout: 10_000 });
  });
  console.log(`mobility: conntrack -F on nat1: longest ping gap h1 -> h2 ${m.gapMs} ms (${m.replies} replies at 50 ms)`);
  once('nat_flush_gap_ms', "h1's NAT forgets every mapping (conntrack -F): longest ping gap", m.gapMs);

  // 3. mobility: h1's own address changes (10.1.0.2 -> 10.1.0.9 behind the same NAT)
  const sh = (cmd) => run('ip', ['netns', 'exec', nsOf('h1'), 'sh', '-c', cmd], { timeout: 10_000 });
  try {
    const mv = await pingGap('h1', b.ip4, 15, async () => {
      await sh('sysctl -qw net.ipv4.conf.eth0.promote_secondaries=1 && ip addr add 10.1.0.9/24 dev eth0 && '
        + 'ip addr del 10.1.0.2/24 dev eth0 && ip route replace default via 10.1.0.1 src 10.1.0.9');
    });
    console.log(`mobility: h1's address 10.1.0.2 -> 10.1.0.9: longest ping gap h1 -> h2 ${mv.gapMs} ms (${mv.replies} replies at 50 ms)`);
    once('address_change_gap_ms', "h1's address changes (10.1.0.2 → 10.1.0.9): longest ping gap", mv.gapMs);
  } finally {
    await sh('ip addr add 10.1.0.2/24 dev eth0; ip addr del 10.1.0.9/24 dev eth0; ip route replace default via 10.1.0.1; '
      + 'sysctl -qw net.ipv4.conf.eth0.promote_secondaries=0').catch(() => undefined);
  }

  // 4. a peer vanishes (kill -9 datapath and controller)
  await until(async () => (await a.upTo([c.uid])) && (await b.upTo([c.uid])), 60_000, 'links to pub');
  const t2 = Date.now();
  c.kill();
  const gone = async (n) => {
    const l = await n.links();
    return !!l && !l.some((x) => x.uid === c.uid);
  };
  await until(async () => (await gone(a)) && (await gone(b)), 90_000, 'the vanished peer trimmed');
  console.log(`vanished peer (kill -9 on pub): its links trimmed by both others after ${Date.now() - t2} ms`);
  once('vanished_peer_trim_ms', 'a peer vanishes (kill -9): its links trimmed by both others after', Date.now() - t2, "the controllers' 10 s departure grace");
  writeResults('recovery', {
    title: 'How fast a GroupVPN (real datapaths and controllers in lab hosts, proactive links) recovers from faults',
    settings: { nodes: 3, 'ping interval': '50 ms' },
    figures,
    notes: ['one run of each fault: single measurements, no repeats'],
  });
} catch (err) {
  console.error(`bench recovery failed: ${err.stack ?? err}`);
  failed = true;
} finally {
  await run(LAB, ['server', 'start', 'prosody'], { timeout: 60_000 }).catch(() => undefined);
  await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
  await lab.down();
}
process.exit(failed ? 1 : 0);
