#!/usr/bin/env node
// Benchmark of @tincan/tun: UDP packets reflected through a TUN device by a Node.js process.
//
// Everything runs in a private network namespace (tcbench-<random>, deleted on every exit path):
//   reflector  a Node process with a TUN device tcb0 (10.99.0.1/24); it swaps source and destination of every
//              IPv4 packet it reads (the IPv4 and UDP checksums do not change) and writes the batch back at once.
//   generator  a Node process that sends UDP datagrams with a kernel socket to 10.99.0.2:9001 (routed into
//              tcb0), as fast as it can in bursts, and counts what comes back to its socket bound on port 9000
//              (the reflected packets arrive as 10.99.0.2 -> 10.99.0.1:9000).
//   baseline   the same generator sending to 127.0.0.1:9000 (loopback, no TUN) in the same run.
// Prints received packets/s and Mbit/s per payload size, the reflector's own CPU use and batch size, and the
// ratio to the baseline; TUN_BENCH_RUNS (3) runs of TUN_BENCH_SECONDS (5) each, medians in
// docs/bench/tun.json. Run with `npm run bench -- tun` as root, after `npm run build --workspace @tincan/tun`
// and `npx tsc -b`.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { availableParallelism } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { median } from './lib/lab-nodes.mjs';
import { figure, writeResults } from './lib/results.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const tunDist = join(here, '../../packages/tun/dist/index.js');
const SECONDS = Number(process.env.TUN_BENCH_SECONDS ?? 5);
const RUNS = Number(process.env.TUN_BENCH_RUNS ?? 3);
const PAYLOADS = [64, 1400];
const TUN_ADDR = '10.99.0.1/24';
const PEER = '10.99.0.2'; // inside the TUN's subnet: routed into the device
const RX_PORT = 9000;
const TX_PORT = 9001;

const role = process.argv[2];
if (role === 'reflector') await reflector(process.argv[3] ?? 'tcb0', process.argv[4] ?? 'packets');
else if (role === 'generator') await generator(process.argv[3], Number(process.argv[4]), Number(process.argv[5]));
else await main();

// ---------------------------------------------------------------------------------------------------------
// Reflector (inside the namespace). SIGUSR1: print counters as one JSON line. SIGTERM: close and exit.
async function reflector(name, writeMode) {
  const { TunDevice, configureInterface } = await import(pathToFileURL(tunDist).href);
  const dev = TunDevice.open({ name, batch: 64, headroom: 40, slotSize: 2048 });
  const stats = { packets: 0, batches: 0, written: 0 };
  const views = []; // writeBatch mode: Buffers over the slots, made once per slot and reused
  for (let i = 0; i < dev.batch.offsets.length; i++) views.push(null);
  const out = [];
  dev.onError((err) => {
    console.error(`reflector: ${err.message}`);
    process.exit(3);
  });
  dev.onPackets((b) => {
    const buf = b.buffer;
    for (let i = 0; i < b.count; i++) {
      const o = b.offsets[i];
      if (buf[o] >> 4 !== 4) continue; // not IPv4: leave as is (written back too, harmless)
      // swap the 4-byte source (o+12) and destination (o+16) addresses
      const s = buf.readUInt32BE(o + 12);
      buf.writeUInt32BE(buf.readUInt32BE(o + 16), o + 12);
      buf.writeUInt32BE(s, o + 16);
    }
    let w;
    if (writeMode === 'batch') {
      out.length = b.count;
      for (let i = 0; i < b.count; i++) out[i] = buf.subarray(b.offsets[i], b.offsets[i] + b.lengths[i]);
      w = dev.writeBatch(out, b.count);
    } else {
      w = dev.writePackets(buf, b.offsets, b.lengths, b.count);
    }
    stats.packets += b.count;
    stats.batches++;
    stats.written += w;
  });
  process.on('SIGUSR1', () => console.log(JSON.stringify(stats)));
  process.on('SIGTERM', () => dev.close());
  // A longer queue than the default 500 absorbs short scheduling gaps of the reflector process.
  await configureInterface(dev.name, { mtu: 1500, txQueueLen: 4096, addresses: [TUN_ADDR], up: true });
  await new Promise((r) => setTimeout(r, 200)); // let IPv6 link-up chatter pass
  console.log(JSON.stringify({ ready: true, pid: process.pid, ...stats }));
}

// ---------------------------------------------------------------------------------------------------------
// Generator (inside the namespace): prints {sent, received, seconds} for the measurement window.
async function generator(dest, payload, seconds) {
  const rx = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20 });
  const tx = dgram.createSocket({ type: 'udp4', sendBufferSize: 8 << 20 });
  await new Promise((r) => rx.bind(RX_PORT, r));
  await new Promise((r) => tx.bind(TX_PORT, r));
  // Via the TUN, 10.99.0.1:9001 -> 10.99.0.2:9000 comes back as 10.99.0.2:9001 -> 10.99.0.1:9000.
  await new Promise((r) => tx.connect(RX_PORT, dest === 'loopback' ? '127.0.0.1' : PEER, r));
  const data = Buffer.alloc(payload, 0x5a);
  let received = 0;
  let sent = 0;
  rx.on('message', () => received++);
  const warmup = 500;
  const start = Date.now();
  let measuring = false;
  let r0 = 0;
  let s0 = 0;
  let t0 = 0n;
  const BURST = 32; // libuv reads at most 32 datagrams per poll callback: keep sending and receiving balanced
  await new Promise((resolve) => {
    const tick = () => {
      for (let i = 0; i < BURST; i++) tx.send(data);
      sent += BURST;
      const now = Date.now() - start;
      if (!measuring && now >= warmup) {
        measuring = true;
        r0 = received;
        s0 = sent;
        t0 = process.hrtime.bigint();
      }
      if (now >= warmup + seconds * 1000) return resolve();
      setImmediate(tick);
    };
    tick();
  });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const result = { sent: sent - s0, received: received - r0, seconds: secs };
  tx.close();
  rx.close();
  console.log(JSON.stringify(result));
}

// ---------------------------------------------------------------------------------------------------------
function cpuTicks(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime, in 1/100 s
}

function mustIp(args) {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')} failed: ${r.stderr || r.error}`);
}

async function main() {
  if (process.getuid?.() !== 0) {
    console.error('bench tun: needs root (network namespace + TUN device)');
    process.exit(1);
  }
  if (!existsSync(tunDist) || !existsSync(join(here, '../../packages/tun/build/Release/tincan_tun.node'))) {
    console.error('bench tun: build first: npm run build --workspace @tincan/tun && npx tsc -b');
    process.exit(1);
  }
  const ns = `tcbench-${randomBytes(4).toString('hex')}`;
  const children = new Set();
  let cleaned = false;
  const cleanup = () => {
    if (cleaned) return;
    cleaned = true;
    for (const c of children) c.kill('SIGKILL');
    spawnSync('ip', ['netns', 'del', ns]);
  };
  process.on('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => process.exit(130));

  // With two or more CPUs and taskset, the reflector gets a CPU of its own and the generator another one.
  const cpus = availableParallelism();
  const pin = cpus >= 2 && spawnSync('taskset', ['-V']).status === 0;
  const inNs = (args) => {
    const cpu = args[0] === 'reflector' ? String(cpus - 1) : '0';
    const cmd = [process.execPath, fileURLToPath(import.meta.url), ...args];
    const c = spawn('ip', ['netns', 'exec', ns, ...(pin ? ['taskset', '-c', cpu] : []), ...cmd], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.add(c);
    c.setMaxListeners(100);
    c.on('exit', () => children.delete(c));
    const lines = [];
    const waiters = [];
    createInterface({ input: c.stdout }).on('line', (l) => (waiters.length ? waiters.shift()(l) : lines.push(l)));
    c.nextJson = (ms = 30_000) =>
      new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no output from ${args[0]} within ${ms} ms`)), ms);
        const done = (l) => {
          clearTimeout(t);
          resolve(JSON.parse(l));
        };
        if (lines.length) done(lines.shift());
        else waiters.push(done);
        c.once('exit', (code) => reject(new Error(`${args[0]} exited with ${code}`)));
      });
    return c;
  };

  try {
    mustIp(['netns', 'add', ns]);
    mustIp(['-n', ns, 'link', 'set', 'lo', 'up']);
    console.log(
      `namespace ${ns}; ${SECONDS} s per run; generator: one Node process (dgram, bursts of 32) ` +
        (pin ? `on CPU 0, reflector on CPU ${cpus - 1}` : `(not pinned: ${cpus} CPU(s) or no taskset)`),
    );
    const rows = [];
    for (const writeMode of ['packets', 'batch']) {
      const refl = inNs(['reflector', 'tcb0', writeMode]);
      const ready = await refl.nextJson();
      for (let run = 1; run <= RUNS; run++) for (const payload of PAYLOADS) {
        if (writeMode === 'packets') {
          const base = inNs(['generator', 'loopback', String(payload), String(SECONDS)]);
          const b = await base.nextJson(SECONDS * 1000 + 20_000);
          rows.push({ path: 'loopback (no TUN)', run, payload, ...b });
        }
        refl.kill('SIGUSR1');
        const before = await refl.nextJson();
        const cpu0 = cpuTicks(ready.pid);
        const w0 = process.hrtime.bigint();
        const gen = inNs(['generator', 'tun', String(payload), String(SECONDS)]);
        const g = await gen.nextJson(SECONDS * 1000 + 20_000);
        refl.kill('SIGUSR1');
        const after = await refl.nextJson();
        // reflector counters and CPU time over the same wall-clock window (generator start to end)
        const cpu = (cpuTicks(ready.pid) - cpu0) / 100;
        const window = Number(process.hrtime.bigint() - w0) / 1e9;
        const packets = after.packets - before.packets;
        const batches = after.batches - before.batches;
        rows.push({
          path: `TUN reflector (${writeMode === 'packets' ? 'writePackets' : 'writeBatch'})`,
          run,
          payload,
          ...g,
          reflectorCpu: cpu / window,
          batch: batches ? packets / batches : 0,
          reflectorPps: packets / window,
        });
      }
      refl.kill('SIGTERM');
      await new Promise((r) => (refl.exitCode !== null ? r() : refl.once('exit', r)));
    }
    printTable(rows);
    const pick = (path, payload) => rows.filter((r) => r.path.startsWith(path) && r.payload === payload);
    const recvPps = (r) => r.received / r.seconds;
    const tun64 = pick('TUN reflector (writePackets)', 64);
    const pps = median(tun64.map(recvPps));
    const perCore = median(tun64.map((r) => (r.reflectorCpu ? r.reflectorPps / r.reflectorCpu : 0)));
    const best = tun64[0];
    const loop = (payload) => ({ label: 'loopback, same generator', median: median(pick('loopback', payload).map(recvPps)) });
    const figures = [];
    for (const payload of PAYLOADS) {
      for (const mode of ['writePackets', 'writeBatch']) {
        const rs = pick(`TUN reflector (${mode})`, payload);
        figures.push(figure({ key: `pps_${mode}_${payload}`, label: `${payload}-byte UDP reflected through the TUN (${mode})`, unit: 'packets/s', samples: rs.map(recvPps), baseline: loop(payload) }));
      }
    }
    figures.push(figure({
      key: 'pps_per_core_64', label: '64-byte packets/s per core of reflector CPU (writePackets)', unit: 'packets/s',
      samples: tun64.map((r) => (r.reflectorCpu ? r.reflectorPps / r.reflectorCpu : NaN)), target: { op: '>=', value: 100_000, text: '≥ 100k packets/s on one core' },
      note: 'reflected/s divided by the reflector\'s CPU share: what one core carries if the generator keeps up',
    }));
    writeResults('tun', {
      title: '@tincan/tun: UDP packets reflected through a TUN device by a Node.js process',
      settings: { runs: RUNS, seconds: SECONDS, payloads: PAYLOADS.join(' and ') },
      figures,
      notes: [`generator and reflector ${pin ? `pinned to CPUs 0 and ${cpus - 1}` : 'not pinned'}; the loopback baseline is the same generator without a TUN (its own limit)`],
    });
    console.log(
      '\nrecv/s: reflected packets back at the generator\'s socket; reflected/s and reflector CPU: the reflector ' +
        'process alone;\nper core = reflected/s / CPU share, what one core would carry if the generator kept up ' +
        '(the loopback row shows the generator\'s own limit).',
    );
    console.log(
      `result: ${fmt(pps)} packets/s at 64-byte payloads reflected through the TUN (reflector: ` +
        `${((best?.reflectorCpu ?? 0) * 100).toFixed(0)}% of one core, ~${fmt(perCore)} packets/s per core); ` +
        `target >= 100k/s on one core: ${pps >= 100_000 || perCore >= 100_000 ? 'OK' : 'BELOW TARGET'}`,
    );
  } finally {
    cleanup();
  }
}

function fmt(n) {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : n.toFixed(0);
}

function printTable(rows) {
  const baseline = new Map(rows.filter((r) => r.path.startsWith('loopback')).map((r) => [`${r.payload}/${r.run}`, r]));
  console.log('');
  console.log(
    'path                          payload   sent/s   recv/s  Mbit/s(payload)  Mbit/s(IP)  vs loopback' +
      '  reflected/s  reflector CPU  per core  avg batch',
  );
  for (const r of rows) {
    const pps = r.received / r.seconds;
    const base = baseline.get(`${r.payload}/${r.run}`);
    const ratio = base && r !== base ? `${((pps / (base.received / base.seconds)) * 100).toFixed(0)}%` : '-';
    const cols = [
      r.path.padEnd(28),
      `${r.payload} B`.padStart(8),
      fmt(r.sent / r.seconds).padStart(8),
      fmt(pps).padStart(8),
      ((pps * r.payload * 8) / 1e6).toFixed(0).padStart(16),
      ((pps * (r.payload + 28) * 8) / 1e6).toFixed(0).padStart(11),
      ratio.padStart(12),
      (r.reflectorPps !== undefined ? fmt(r.reflectorPps) : '-').padStart(12),
      (r.reflectorCpu !== undefined ? `${(r.reflectorCpu * 100).toFixed(0)}%` : '-').padStart(14),
      (r.reflectorCpu ? fmt(r.reflectorPps / r.reflectorCpu) : '-').padStart(9),
      (r.batch !== undefined ? r.batch.toFixed(1) : '-').padStart(10),
    ];
    console.log(cols.join(' '));
  }
}
