#!/usr/bin/env node
// npm run bench -- rpc: reading a large node's state over the RPC. A child process runs the datapath's
// real RPC server (sessions, sealing, get_state paging: packages/datapath/dist) answering get_state
// with a synthetic state of BENCH_RPC_LINKS links and BENCH_RPC_PEERS online presences (no real links:
// what is measured is the RPC, not libdatachannel); this process polls it as a controller does
// (DatapathClient: handshake once, get_state and every page) and runs `tincanctl status --json`.
// Prints poll time, pages, bytes and both processes' resident memory (figures only, no targets).
//
// Environment: BENCH_RPC_LINKS (1000), BENCH_RPC_PEERS (5000), BENCH_RPC_POLLS (30).
import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { figure, writeResults } from './lib/results.mjs';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const LINKS = Number(process.env.BENCH_RPC_LINKS ?? 1000);
const PEERS = Number(process.env.BENCH_RPC_PEERS ?? 5000);
const POLLS = Number(process.env.BENCH_RPC_POLLS ?? 30);

/** A link and a presence as a busy node reports them (every field filled). */
function syntheticState(links, peers) {
  const id = () => randomBytes(20).toString('hex');
  const now = Date.now();
  const stats = { bytes_in: 1e9, bytes_out: 2e9, packets_in: 1e6, packets_out: 2e6, drops_backpressure: 10, drops_spoofed: 0, drops_malformed: 0, compact_in: 9e5, compact_out: 19e5, drops_aqm: 3, probes_out: 9000, probes_answered: 8990, probes_echoed: 9000, probes_bad: 0 };
  return {
    node: { uid: id(), vnic: 'tincan0', ip4: '10.254.0.1/16', ip6: 'fd50::1/64', mtu: 1280, offload: true, fingerprint: Array(32).fill('AB').join(':'), uptime_s: 1, controller: null },
    xmpp: { state: 'online', jid: 'node@xmpp.lab/tincan', overlay: 'bench' },
    links: Array.from({ length: links }, (_, i) => ({
      uid: id(), jid: `node${i}@xmpp.lab/tincan`, state: 'up', role: 'offerer', ip4: [`10.254.${i >> 8}.${i & 255}`], ip6: [],
      local_candidate: 'srflx', remote_candidate: 'srflx', local_address: '198.18.0.11:50000', remote_address: '198.18.0.12:50001',
      rtt_ms: 1.5, queue_delay_ms: 0.1, created_ms: now, connected_ms: now, last_rx_ms: now, last_tx_ms: now, stats, framing: 'compact',
    })),
    peers: Array.from({ length: peers }, (_, i) => ({ uid: id(), jid: `peer${i}@xmpp.lab/tincan-${i}`, overlay: 'bench', last_heard_ms: now, caps: ['trickle'] })),
    routes: [], subnets: [], transit: false, counters: {},
  };
}

const rssOf = (pid) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) * 1024;

if (process.argv[2] === '--serve') {
  // The child: the datapath's RPC server on a free loopback port, the token under argv[3].
  const { RpcServer } = await import(join(ROOT, 'packages/datapath/dist/rpc-server.js'));
  const { StatePager } = await import(join(ROOT, 'packages/datapath/dist/state-pager.js'));
  const { Counters } = await import(join(ROOT, 'packages/datapath/dist/counters.js'));
  const { default: pino } = await import('pino');
  const state = syntheticState(LINKS, PEERS);
  const pager = new StatePager();
  const port = Number(process.argv[4]);
  const server = await RpcServer.start({ address: '127.0.0.1', port }, join(process.argv[3], `rpc-${port}.token`), new Counters(), pino({ level: 'silent' }));
  server.setHandler({
    async handle(req, from) {
      if (req.m === 'get_state') return pager.first(from.session, state);
      if (req.m === 'get_state_page') return pager.page(from.session, req.snapshot, req.offset);
      return {};
    },
    inject() {},
  });
  process.stdout.write(`${server.endpoint.port}\n`);
  process.on('SIGTERM', () => {
    server.close();
    process.exit(0);
  });
} else {
  const { DatapathClient } = await import(join(ROOT, 'packages/controller/dist/index.js'));
  const dir = mkdtempSync(join(tmpdir(), 'tincan-bench-rpc-'));
  // A free loopback port for the server (its token file is named after it, as tincanctl expects).
  const probe = dgram.createSocket('udp4');
  await new Promise((r) => probe.bind(0, '127.0.0.1', r));
  const freePort = probe.address().port;
  probe.close();
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--serve', dir, String(freePort)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const stop = () => {
    child.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  };
  process.on('exit', stop);
  try {
    const port = await new Promise((resolve, reject) => {
      child.stdout.once('data', (d) => resolve(Number(String(d).trim())));
      child.once('exit', (code) => reject(new Error(`the RPC server exited (${code})`)));
    });
    const client = await DatapathClient.connect({ rpc: { address: '127.0.0.1', port }, stateDir: dir, timeoutMs: 5000 });
    const ms = [];
    let whole = null;
    for (let i = 0; i < POLLS; i++) {
      const t0 = process.hrtime.bigint();
      whole = await client.call('get_state', { stats: true });
      ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    client.close();
    if (whole.links.length !== LINKS || whole.peers.length !== PEERS) throw new Error(`read ${whole.links.length} links and ${whole.peers.length} peers, not ${LINKS} and ${PEERS}`);
    const bytes = Buffer.byteLength(JSON.stringify(whole));
    const pages = Math.ceil(bytes / 60_000);
    const serverRss = rssOf(child.pid);
    const clientRss = process.memoryUsage.rss();
    // tincanctl, as an operator runs it (its own process: handshake, pages, JSON out).
    const t0 = Date.now();
    const ctl = spawnSync(process.execPath, [join(ROOT, 'packages/cli/dist/bin/tincanctl.js'), '--rpc', `127.0.0.1:${port}`, '--state-dir', dir, 'status', '--json', '--all-peers'], {
      encoding: 'utf8', maxBuffer: 64 * 1024 * 1024,
    });
    const ctlMs = Date.now() - t0;
    let ctlOk = false;
    if (ctl.status === 0) {
      const s = JSON.parse(ctl.stdout);
      ctlOk = s.links.length === LINKS && s.peers.length === PEERS;
    } else console.error(ctl.stderr);
    const sorted = [...ms].sort((a, b) => a - b);
    console.log(`get_state of ${LINKS} links and ${PEERS} presences: ${bytes} bytes of JSON in ~${pages} datagrams`);
    console.log(`poll time: median ${sorted[Math.floor(sorted.length / 2)].toFixed(1)} ms, min ${sorted[0].toFixed(1)}, max ${sorted.at(-1).toFixed(1)} (${POLLS} polls)`);
    console.log(`resident memory: RPC server process ${(serverRss / 2 ** 20).toFixed(1)} MiB, polling client ${(clientRss / 2 ** 20).toFixed(1)} MiB`);
    console.log(`tincanctl status --json: ${ctlOk ? 'read it whole' : 'FAILED'} in ${ctlMs} ms (process start included)`);
    writeResults('rpc', {
      title: `Reading a node of ${LINKS} links and ${PEERS} presences over the RPC (paged get_state)`,
      settings: { links: LINKS, peers: PEERS, polls: POLLS },
      figures: [
        figure({ key: 'poll_ms', label: 'get_state, every page (controller poll)', unit: 'ms', samples: ms }),
        figure({ key: 'state_bytes', label: 'state as JSON', unit: 'bytes', median: bytes }),
        figure({ key: 'server_rss', label: 'RSS of the RPC server process', unit: 'MiB', median: serverRss / 2 ** 20 }),
        figure({ key: 'client_rss', label: 'RSS of the polling client', unit: 'MiB', median: clientRss / 2 ** 20 }),
        figure({ key: 'tincanctl_ms', label: 'tincanctl status --json (process start included)', unit: 'ms', median: ctlMs }),
      ],
      notes: [
        'The state is synthetic (no real links): the RPC server, its sessions, sealing and paging are the datapath\'s own code.',
        ctlOk ? 'tincanctl read every link and presence.' : 'tincanctl did NOT read the whole state.',
      ],
    });
    if (!ctlOk) process.exitCode = 1;
  } finally {
    stop();
  }
}
