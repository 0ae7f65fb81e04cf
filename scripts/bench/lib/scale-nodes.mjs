// Helpers for the scale benchmark: the lab's extra hosts (scripts/lab hosts N), GroupVPN node pairs
// (tincan-datapath + tincan-groupvpn) started straight in a host's namespace, and per-process
// figures from /proc (resident memory, CPU time).
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, readlinkSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CONTROLLER_FLAGS, DATAPATH_FLAGS, ROOT, nsOf, uidOf } from './lab-nodes.mjs';

const run = promisify(execFile);
const LAB = join(ROOT, 'scripts/lab');
export const LAB_DIR = process.env.TINCAN_LAB_DIR ?? '/tmp/tincan-lab';
const DATAPATH = join(ROOT, 'packages/datapath/dist/bin/tincan-datapath.js');
const GROUPVPN = join(ROOT, 'packages/groupvpn/dist/bin/tincan-groupvpn.js');

/** The extra hosts now in the lab (hosts.json; none if the file is missing). */
export function readExtraHosts() {
  const f = join(LAB_DIR, 'hosts.json');
  return existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')).hosts : [];
}

/**
 * At least n extra hosts m1..mn (scripts/lab hosts). Returns them and `restore()`, which puts the
 * number of hosts back to what it was (0 if there were none), killing anything left inside them.
 */
export async function extraHosts(n) {
  const before = readExtraHosts().length;
  if (before < n) await run(LAB, ['hosts', String(n)], { timeout: 120_000 });
  const hosts = readExtraHosts().slice(0, n);
  if (hosts.length < n) throw new Error(`scripts/lab hosts ${n} left only ${hosts.length} hosts`);
  return {
    hosts,
    restore: async () => {
      if (before < n) await run(LAB, ['hosts', String(before)], { timeout: 120_000 }).catch(() => undefined);
    },
  };
}

/** Ticks per second of /proc/PID/stat's utime and stime (USER_HZ, 100 on the usual kernels). */
export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of a process in seconds, or null if it is gone. */
export function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name (field 2) may hold spaces and parentheses: fields are counted after the last ')'
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK; // fields 14 and 15 of proc(5)
  } catch {
    return null;
  }
}

/** CPU seconds the whole machine has spent busy (everything but idle and iowait), from /proc/stat. */
export function machineBusySeconds() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  return (user + nice + system + irq + softirq + steal) / CLK_TCK;
}

/** VmRSS of a process in kB, or null if it is gone. */
export function rssKb(pid) {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/**
 * Memory of a process in kB: rss (VmRSS), anon (RssAnon: heap, stacks — what the process itself
 * holds; the rest of RSS is file pages such as the node binary, shared by every node process) and
 * pss (proportional set size: shared pages divided among their users). null if it is gone.
 */
export function memKb(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const field = (text, name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
    let pss = NaN;
    try {
      pss = field(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'), 'Pss');
    } catch { /* kernel without smaps_rollup */ }
    return { rss: field(status, 'VmRSS'), anon: field(status, 'RssAnon'), pss };
  } catch {
    return null;
  }
}

/** The command line of a process (arguments joined by spaces), or '' if it is gone. */
export function cmdline(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
  } catch {
    return '';
  }
}

const NODE_EXE = realpathSync(process.execPath);
const exeOf = (pid) => {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return '';
  }
};

/** True while a process exists and is not a zombie. */
export function alivePid(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Resolves when `pid` is node running `needle` (the wrappers have exec'd into it), within `ms`. */
export async function waitExeced(pid, needle, ms = 30_000) {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    // the wrappers' command lines (nice …, ip netns exec …) hold the script's name too: the
    // executable itself must be node
    if (exeOf(pid) === NODE_EXE && cmdline(pid).includes(needle)) return;
    // (the command line reads empty for a moment in the middle of an exec, too)
    if (!alivePid(pid)) throw new Error(`process ${pid} exited before running ${needle}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`process ${pid} does not run ${needle} after ${ms} ms (it runs: ${cmdline(pid)})`);
}

/**
 * A GroupVPN node in extra host `host`: config written under `dir`, datapath and controller
 * started by `start()` as `ip netns exec NS node …` (ip execs, so the child's pid is node's).
 */
export function groupPair({
  host, index, account = `node${index}`, dir, lab, networkId, policy, topology, topologyAt = 'topology', maxLinks, mechanism, niceAdjust = 0,
}) {
  const ip4 = `10.254.${index >> 8}.${index & 255}`;
  const stateDir = join(dir, 'state');
  mkdirSync(stateDir, { recursive: true });
  const configFile = join(dir, 'groupvpn.json');
  const config = {
    network_id: networkId,
    xmpp: { host: lab.xmpp.host, port: lab.xmpp.port, jid: `${account}@${lab.xmpp.domain}`, password: `pw-${account}`, ca_file: lab.xmpp.ca_file, mechanism },
    vnic: { name: 'tincan0', ip4: `${ip4}/16`, mtu: 1280 },
    stun: [lab.stun],
    turn: [{ address: lab.turn.address, username: lab.turn.username, password: lab.turn.password }],
    link_policy: policy,
    max_links: maxLinks,
    datapath: '127.0.0.1:5801',
    state_dir: stateDir,
    log_level: 'warn',
  };
  if (topology && topologyAt === 'routing.topology') config.routing = { topology };
  else if (topology) config.topology = topology;
  writeFileSync(configFile, JSON.stringify(config, null, 2));
  const procs = {};
  const spawnNode = (name, args) => {
    const log = openSync(join(dir, `${name}.log`), 'w');
    // `nice -n K` (K = what the caller raised its own priority by: the node runs at the usual
    // priority) execs ip, which execs node: the child's pid is node's
    const p = spawn('nice', ['-n', String(niceAdjust), 'ip', 'netns', 'exec', nsOf(host), process.execPath, ...args], { stdio: ['ignore', log, log] });
    procs[name] = p;
    return p;
  };
  return {
    host, index, ip4, uid: uidOf(ip4), account, dir, stateDir, configFile, procs,
    /** Starts the datapath, then the controller (which waits for the datapath by itself). */
    start() {
      spawnNode('datapath', [...DATAPATH_FLAGS, DATAPATH, '--state-dir', stateDir, '--log-level', 'warn', ...(process.env.BENCH_DATAPATH_ARGS ?? '').split(' ').filter(Boolean)]);
      spawnNode('groupvpn', [...CONTROLLER_FLAGS, GROUPVPN, '--config', configFile]);
    },
    pids() {
      return { datapath: procs.datapath?.pid, groupvpn: procs.groupvpn?.pid };
    },
    alive() {
      return Object.values(procs).every((p) => p.exitCode === null && p.signalCode === null);
    },
    /** groupvpn-status.json, or null while it is missing or being replaced. */
    status() {
      try {
        return JSON.parse(readFileSync(join(stateDir, 'groupvpn-status.json'), 'utf8'));
      } catch {
        return null;
      }
    },
    /** The warnings and errors in both logs: `msg` of each JSON line, or the raw line. */
    logMessages() {
      const out = [];
      for (const name of Object.keys(procs)) {
        let text = '';
        try { text = readFileSync(join(dir, `${name}.log`), 'utf8'); } catch { continue; }
        for (const line of text.split('\n')) {
          if (!line) continue;
          try {
            const o = JSON.parse(line);
            out.push(`${name}: ${o.msg}${o.err ? ` (${String(o.err).replace(/\/tmp\/\S+/g, '…').slice(0, 100)})` : ''}`);
          } catch {
            out.push(`${name}: ${line.slice(0, 120)}`);
          }
        }
      }
      return out;
    },
    logTail(lines = 8) {
      const out = [];
      for (const name of Object.keys(procs)) {
        try {
          const l = readFileSync(join(dir, `${name}.log`), 'utf8').trimEnd().split('\n').slice(-lines);
          if (l.length && l[0] !== '') out.push(`  ${host} ${name}:`, ...l.map((x) => `    ${x.slice(0, 300)}`));
        } catch { /* no log */ }
      }
      return out.join('\n');
    },
    async stop() {
      const ps = Object.values(procs).filter((p) => p.exitCode === null && p.signalCode === null);
      for (const p of ps) p.kill('SIGTERM');
      const exited = Promise.all(ps.map((p) => new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r() : p.once('exit', r)))));
      const t = setTimeout(() => { for (const p of ps) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL'); }, 3000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Where GroupVPN's config takes a topology: 'topology', 'routing.topology', or null (nowhere). */
export async function topologyKey() {
  const { stdout } = await run(process.execPath, [GROUPVPN, '--print-config-schema'], { timeout: 30_000, maxBuffer: 16 << 20 });
  const props = JSON.parse(stdout).properties ?? {};
  if (props.topology) return 'topology';
  if (props.routing?.properties?.topology) return 'routing.topology';
  return null;
}

/** `groupvpn --check-config` on a config file: {ok, output}. */
export async function checkConfig(configFile) {
  try {
    const { stdout, stderr } = await run(process.execPath, [GROUPVPN, '--config', configFile, '--check-config'], { timeout: 30_000 });
    return { ok: true, output: `${stdout}${stderr}` };
  } catch (err) {
    return { ok: false, output: `${err.stdout ?? ''}${err.stderr ?? ''}` || String(err) };
  }
}

/** The nice value of a process (field 19 of /proc/PID/stat), or null if it is gone. */
export function niceOf(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  } catch {
    return null;
  }
}

/** The pid of a lab daemon (prosody, coturn) from $LABDIR/pids, checked against its command line. */
export function labDaemonPid(name) {
  const pid = Number(readFileSync(join(LAB_DIR, 'pids', `${name}.pid`), 'utf8').trim());
  if (!cmdline(pid).includes(name === 'coturn' ? 'turnserver' : name)) {
    throw new Error(`${name}: pid ${pid} from ${LAB_DIR}/pids runs "${cmdline(pid)}"`);
  }
  return pid;
}
