// The other VPNs the benchmarks compare TinCan with, set up between two lab hosts: wireguard-go
// (userspace WireGuard) and tinc 1.0. Both run in the foreground inside the hosts' namespaces; the
// returned stop() kills them and removes their interfaces and temp dirs.
//
// Host `a` is the one that connects (it may be behind a NAT); host `b` must be reachable at
// `endpoint` (its public address) from `a`.
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NS_PREFIX, inHost } from './lab-nodes.mjs';
import { daemonIn, sleep } from './measure.mjs';

// Temp dirs of tunnels not yet stopped: removed at exit whatever happens (an interrupted setup too;
// the processes themselves are killed at exit by measure.mjs, and their TUN interfaces go with them).
const dirs = new Set();
process.on('exit', () => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });
const tempDir = (prefix) => { const d = mkdtempSync(join(tmpdir(), prefix)); dirs.add(d); return d; };
const removeDir = (d) => { rmSync(d, { recursive: true, force: true }); dirs.delete(d); };

/** Interface names unique per lab (the UAPI socket of wireguard-go lives in the shared /var/run). */
const ifName = (kind, host) => `${kind}${NS_PREFIX}${host}`.replace(/[^a-zA-Z0-9_.-]/g, '').slice(0, 15);

async function waitFor(what, check, ms = 10_000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timeout: ${what}`);
    await sleep(100);
  }
}

const ifExists = (host, name) => inHost(host, ['ip', 'link', 'show', name]).then(() => true, () => false);

async function mtuOf(host, name) {
  const { stdout } = await inHost(host, ['ip', '-o', 'link', 'show', name]);
  return Number(stdout.match(/mtu (\d+)/)?.[1]);
}

/** Pings until one answers (the first packets start a handshake). */
async function warmUp(host, address, what, ms = 20_000) {
  await waitFor(`${what}: no ping reply from ${address}`,
    () => inHost(host, ['ping', '-c', '1', '-W', '1', address]).then(() => true, () => false), ms);
}

/**
 * wireguard-go between a (net.1) and b (net.2, listening on `port`), each interface with
 * wireguard-go's default MTU; a keeps the NAT mapping with a 25 s persistent keepalive.
 */
export async function startWireguard(a, b, { endpoint, net = '10.253.0', port = 51820 }) {
  const dir = tempDir('tincan-bench-wg-');
  const procs = [];
  const names = { a: ifName('wg', a), b: ifName('wg', b) };
  const stop = async () => {
    await Promise.all(procs.map((p) => p.stop()));
    for (const [side, host] of [['a', a], ['b', b]]) {
      if (await ifExists(host, names[side])) await inHost(host, ['ip', 'link', 'del', names[side]]).catch(() => undefined);
    }
    removeDir(dir);
  };
  try {
    const key = {};
    for (const side of ['a', 'b']) {
      const priv = spawnSync('wg', ['genkey'], { encoding: 'utf8' }).stdout.trim();
      const pub = spawnSync('wg', ['pubkey'], { input: `${priv}\n`, encoding: 'utf8' }).stdout.trim();
      if (!priv || !pub) throw new Error('wg genkey/pubkey failed (is wireguard-tools installed?)');
      writeFileSync(join(dir, `${side}.key`), `${priv}\n`, { mode: 0o600 });
      key[side] = pub;
    }
    for (const [side, host] of [['a', a], ['b', b]]) {
      const p = daemonIn(host, ['wireguard-go', '-f', names[side]], { env: { WG_PROCESS_FOREGROUND: '1', LOG_LEVEL: 'error' } });
      procs.push(p);
      await waitFor(`wireguard-go ${names[side]} in ${host}: ${p.lines.join(' | ')}`,
        async () => { if (p.exited) throw new Error(`wireguard-go in ${host} exited: ${p.lines.join(' | ')}`); return ifExists(host, names[side]); });
    }
    // b first, so a's first handshake finds it ready.
    await inHost(b, ['wg', 'set', names.b, 'listen-port', String(port), 'private-key', join(dir, 'b.key'),
      'peer', key.a, 'allowed-ips', `${net}.1/32`]);
    await inHost(b, ['ip', 'addr', 'add', `${net}.2/24`, 'dev', names.b]);
    await inHost(b, ['ip', 'link', 'set', names.b, 'up']);
    await inHost(a, ['wg', 'set', names.a, 'private-key', join(dir, 'a.key'),
      'peer', key.b, 'endpoint', `${endpoint}:${port}`, 'allowed-ips', `${net}.2/32`, 'persistent-keepalive', '25']);
    await inHost(a, ['ip', 'addr', 'add', `${net}.1/24`, 'dev', names.a]);
    await inHost(a, ['ip', 'link', 'set', names.a, 'up']);
    await warmUp(a, `${net}.2`, 'wireguard-go');
    const mtu = await mtuOf(a, names.a);
    return {
      name: 'wireguard-go', addrA: `${net}.1`, addrB: `${net}.2`, ifA: names.a, ifB: names.b, mtu, port,
      notes: `wireguard-go ${version(['wireguard-go', '--version'])}, interface MTU ${mtu} (its default), UDP port ${port}, persistent keepalive 25 s from ${a}`,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

function version(cmd) {
  const r = spawnSync(cmd[0], cmd.slice(1), { encoding: 'utf8' });
  return (`${r.stdout}${r.stderr}`.match(/v?\d+\.\d+(\.\d+)*/)?.[0]) ?? '?';
}

// OpenSSL NIDs that tinc 1.0 prints in its node dump.
const NID = { 91: 'bf-cbc', 427: 'aes-256-cbc', 419: 'aes-128-cbc', 64: 'sha1', 672: 'sha256', 0: 'none' };

/**
 * tinc 1.0 between a (net.1) and b (net.2, TCP/UDP `port`) in router mode with its default cipher and
 * digest. Resolves once tinc's path MTU discovery has converged both ways, so bulk traffic goes over
 * UDP (before that, tinc 1.0 sends packets larger than its known minimum MTU over the TCP meta
 * connection).
 */
export async function startTinc(a, b, { endpoint, net = '10.252.0', port = 655, pmtuTimeoutMs = 45_000 }) {
  const dir = tempDir('tincan-bench-tinc-');
  const procs = {};
  const names = { a: ifName('tinc', a), b: ifName('tinc', b) };
  const node = { a: a.replace(/[^a-zA-Z0-9_]/g, '_'), b: b.replace(/[^a-zA-Z0-9_]/g, '_') };
  const stop = async () => {
    await Promise.all(Object.values(procs).map((p) => p.stop()));
    for (const [side, host] of [['a', a], ['b', b]]) {
      if (await ifExists(host, names[side])) await inHost(host, ['ip', 'link', 'del', names[side]]).catch(() => undefined);
    }
    removeDir(dir);
  };
  try {
    const conf = {};
    for (const [side, ip] of [['a', `${net}.1`], ['b', `${net}.2`]]) {
      const d = join(dir, side);
      conf[side] = d;
      mkdirSync(join(d, 'hosts'), { recursive: true });
      writeFileSync(join(d, 'tinc.conf'), [`Name = ${node[side]}`, `Interface = ${names[side]}`, `Port = ${port}`,
        ...(side === 'a' ? [`ConnectTo = ${node.b}`] : [])].join('\n') + '\n');
      writeFileSync(join(d, 'hosts', node[side]), [...(side === 'b' ? [`Address = ${endpoint}`] : []), `Port = ${port}`, `Subnet = ${ip}/32`].join('\n') + '\n');
      writeFileSync(join(d, 'tinc-up'), `#!/bin/sh\nip addr add ${ip}/24 dev "$INTERFACE"\nip link set "$INTERFACE" up\n`);
      chmodSync(join(d, 'tinc-up'), 0o755);
      const k = spawnSync('tincd', ['-c', d, '-K'], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
      if (k.status !== 0) throw new Error(`tincd -K: ${k.stderr}`);
    }
    copyFileSync(join(conf.a, 'hosts', node.a), join(conf.b, 'hosts', node.a));
    copyFileSync(join(conf.b, 'hosts', node.b), join(conf.a, 'hosts', node.b));
    for (const [side, host] of [['b', b], ['a', a]]) {
      procs[side] = daemonIn(host, ['tincd', '-c', conf[side], '-D', '-d1', `--pidfile=${join(conf[side], 'pid')}`]);
      await waitFor(`tincd in ${host}`, async () => {
        if (procs[side].exited) throw new Error(`tincd in ${host} exited: ${procs[side].lines.join(' | ')}`);
        return ifExists(host, names[side]);
      });
    }
    await warmUp(a, `${net}.2`, 'tinc');
    // Path MTU discovery: poll the node dump (SIGUSR2) until both ends know the other's PMTU exactly.
    const dump = async (side, peer) => {
      const p = procs[side];
      const from = p.lines.length;
      p.proc.kill('SIGUSR2');
      await sleep(150);
      const line = p.lines.slice(Math.max(0, from - 5)).reverse().find((l) => l.startsWith(` ${peer} at `));
      return line ?? '';
    };
    let last = { a: '', b: '' };
    const end = Date.now() + pmtuTimeoutMs;
    for (;;) {
      await inHost(a, ['ping', '-c', '3', '-i', '0.2', '-s', '1200', `${net}.2`]).catch(() => undefined);
      last = { a: await dump('a', node.b), b: await dump('b', node.a) };
      const ok = (l) => { const m = l.match(/pmtu (\d+) \(min (\d+) max (\d+)\)/); return m && Number(m[2]) > 0 && m[2] === m[3]; };
      if (ok(last.a) && ok(last.b)) break;
      if (Date.now() > end) throw new Error(`tinc path MTU discovery did not converge: ${last.a} / ${last.b}`);
      await sleep(500);
    }
    const m = last.a.match(/cipher (\d+) digest (\d+) maclength (\d+) compression (\d+).*pmtu (\d+)/);
    const mtu = await mtuOf(a, names.a);
    const cipher = m ? `${NID[m[1]] ?? `NID ${m[1]}`}, digest ${NID[m[2]] ?? `NID ${m[2]}`} truncated to ${m[3]} bytes, compression ${m[4]}, path MTU ${m[5]}` : '?';
    return {
      name: 'tinc', addrA: `${net}.1`, addrB: `${net}.2`, ifA: names.a, ifB: names.b, mtu, port,
      notes: `tinc ${version(['tincd', '--version'])}, router mode (TUN), defaults: cipher ${cipher}; interface MTU ${mtu}; TCP+UDP port ${port}`,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

