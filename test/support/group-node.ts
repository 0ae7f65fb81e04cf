import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, afterEach } from 'vitest';
import { DATAPATH_NODE_FLAGS } from '@tincan/datapath/node-flags';
import { ip6FromUid, uidFromIp4 } from '@tincan/protocol';
import { CTL_BIN, DATAPATH_BIN, NsProcess, killedByWatchdog, type StateLike } from './tincan-node.js';
import { ns } from '../harness/namespace.js';

const run = promisify(execFile);
/** systemd's RestartSec in scripts/systemd/tincan-datapath@.service. */
const RESTART_DELAY_MS = 2_000;

export const GROUPVPN_BIN = DATAPATH_BIN.replace('/datapath/dist/bin/tincan-datapath.js', '/groupvpn/dist/bin/tincan-groupvpn.js');

export interface LabInfo {
  xmpp: { host: string; port: number; ca_file: string };
  stun: string;
  turn: { address: string; username: string; password: string };
}

export interface GroupNodeSpec {
  host: string;
  ip4: string; // e.g. 10.254.1.1
  prefix?: number;
  account: string; // e.g. node11
  password?: string;
  networkId: string;
  policy?: 'proactive' | 'on-demand';
  idleTimeoutS?: number;
  maxLinks?: number;
  /** The config's `routing` object (multihop, topology, deny, advertise, …). */
  routing?: Record<string, unknown>;
  /** Extra tincan-datapath options (e.g. --watchdog). */
  datapathArgs?: string[];
  /** More config keys (e.g. members, membership). */
  extraConfig?: Record<string, unknown>;
}

/** The parts of groupvpn-status.json the tests read. */
export interface GroupVpnStatusLike {
  links: number;
  trickle: { descriptions_trickled: number; descriptions_whole: number; con_cand_sent: number };
  peers: { uid: string; link: string }[];
  routing: {
    multihop: boolean;
    topology: string;
    channel: string | null;
    structural_links: number;
    routes: { uid: string; ip4: string | null; via: string; hops: number; subnets: string[] }[];
    subnets: { subnet: string; uid: string }[];
    counters: Record<string, number>;
  };
}

/** A real node in a lab host: tincan-datapath + tincan-groupvpn with a config file. */
export class GroupNode {
  readonly uid: string;
  readonly ip6: string;
  datapath: NsProcess | null = null;
  /** Datapaths this node ran before `datapath` (their logs stay readable). */
  private readonly earlierDatapaths: NsProcess[] = [];
  /** How often the supervision in startDatapath restarted a datapath its watchdog had killed. */
  watchdogRestarts = 0;
  private stopping = false;
  controller: NsProcess | null = null;

  constructor(readonly spec: GroupNodeSpec, private readonly lab: LabInfo) {
    this.uid = uidFromIp4(spec.ip4);
    this.ip6 = ip6FromUid(this.uid);
  }

  private files: { dir: string; stateDir: string; configFile: string } | null = null;

  /**
   * The node's temp dir, state dir and config file, made on first use: a node declared in a suite
   * that a test filter skips leaves nothing behind.
   */
  private paths(): { dir: string; stateDir: string; configFile: string } {
    if (this.files) return this.files;
    const { spec, lab } = this;
    const dir = mkdtempSync(join(tmpdir(), `tincan-gv-${spec.host}-`));
    const stateDir = join(dir, 'state');
    const configFile = join(dir, 'groupvpn.json');
    writeFileSync(configFile, JSON.stringify({
      network_id: spec.networkId,
      xmpp: {
        host: lab.xmpp.host, port: lab.xmpp.port, jid: `${spec.account}@vpn.test`,
        password: spec.password ?? `pw-${spec.account}`, ca_file: lab.xmpp.ca_file, mechanism: 'PLAIN',
      },
      vnic: { name: 'tincan0', ip4: `${spec.ip4}/${spec.prefix ?? 16}`, mtu: 1280 },
      stun: [lab.stun],
      turn: [{ address: lab.turn.address, username: lab.turn.username, password: lab.turn.password }],
      link_policy: spec.policy ?? 'proactive',
      max_links: spec.maxLinks ?? 32,
      idle_timeout_s: spec.idleTimeoutS ?? 300,
      datapath: '127.0.0.1:5801',
      state_dir: stateDir,
      ...(spec.routing ? { routing: spec.routing } : {}),
      ...spec.extraConfig,
    }, null, 2));
    this.files = { dir, stateDir, configFile };
    return this.files;
  }

  get dir(): string {
    return this.paths().dir;
  }

  get stateDir(): string {
    return this.paths().stateDir;
  }

  get configFile(): string {
    return this.paths().configFile;
  }

  get ns(): string {
    return ns(this.spec.host);
  }

  /**
   * Starts the datapath, supervised as systemd supervises it in production (Restart=on-failure,
   * RestartSec=2) for the one failure a test cannot do anything about: its liveness watchdog killed it
   * (docs/deployment.md, "Liveness watchdog": a libdatachannel deadlock). The restart is announced on
   * the test's output and counted in `watchdogRestarts`. Any other death (a crash, or a test's own
   * kill) is left alone.
   */
  startDatapath(): void {
    const p = this.spawn('datapath', [...DATAPATH_NODE_FLAGS, DATAPATH_BIN, '--state-dir', this.stateDir, '--log-level', 'debug', ...(this.spec.datapathArgs ?? [])]);
    if (this.datapath) this.earlierDatapaths.push(this.datapath);
    this.datapath = p;
    this.stopping = false;
    p.child.on('close', () => {
      if (this.datapath !== p || this.stopping || !killedByWatchdog(p)) return;
      this.watchdogRestarts++;
      console.warn(`${this.spec.host}: the datapath's watchdog killed it (its main thread stalled); restarting it in ${RESTART_DELAY_MS} ms, as systemd would`);
      setTimeout(() => {
        if (this.datapath === p && !this.stopping) this.startDatapath();
      }, RESTART_DELAY_MS);
    });
  }

  startController(): void {
    this.controller = this.spawn('groupvpn', [GROUPVPN_BIN, '--config', this.configFile, '--log-level', 'debug']);
  }

  start(): void {
    this.startDatapath();
    this.startController();
  }

  private spawn(name: string, args: string[]): NsProcess {
    const p = new NsProcess(this.ns, `${this.spec.host}/${name}`, process.execPath, args);
    p.child.stdout!.on('data', (d: Buffer) => {
      for (const l of d.toString().split('\n')) if (l) p.keep(l);
    });
    return p;
  }

  async status(): Promise<StateLike> {
    return JSON.parse(await this.ctl('status', '--json')) as StateLike;
  }

  /** Runs tincanctl in the node's namespace with its state directory; its stdout. */
  async ctl(...args: string[]): Promise<string> {
    const { stdout } = await run('ip', ['netns', 'exec', this.ns, process.execPath, CTL_BIN, '--state-dir', this.stateDir, ...args], { timeout: 20_000 });
    return stdout;
  }

  /** Links in state up, by peer UID (empty if the datapath does not answer). */
  async upLinks(): Promise<Map<string, StateLike['links'][number]>> {
    try {
      const s = await this.status();
      return new Map(s.links.filter((l) => l.state === 'up').map((l) => [l.uid, l]));
    } catch {
      return new Map();
    }
  }

  /** The controller's status file (groupvpn-status.json), or null while there is none. */
  controllerStatus(): GroupVpnStatusLike | null {
    try {
      return JSON.parse(readFileSync(join(this.stateDir, 'groupvpn-status.json'), 'utf8')) as GroupVpnStatusLike;
    } catch {
      return null;
    }
  }

  /** ping's output (throws if no reply came). */
  async pingOutput(address: string, count = 2): Promise<string> {
    const args = ['netns', 'exec', this.ns, 'ping', ...(address.includes(':') ? ['-6'] : []), '-c', String(count), '-i', '0.2', '-W', '2', address];
    const { stdout } = await run('ip', args, { timeout: 10_000 + count * 300 });
    return stdout;
  }

  async ping(address: string, count = 2): Promise<boolean> {
    const args = ['netns', 'exec', this.ns, 'ping', ...(address.includes(':') ? ['-6'] : []), '-c', String(count), '-i', '0.2', '-W', '2', address];
    try {
      const { stdout } = await run('ip', args, { timeout: 20_000 });
      return /\b[1-9]\d* received/.test(stdout);
    } catch {
      return false;
    }
  }

  logs(): string {
    const exit = (p: NsProcess | null) => (!p ? 'not started' : p.running ? 'running' : `exited (code ${p.child.exitCode}, signal ${p.child.signalCode})`);
    return [
      ...this.earlierDatapaths.flatMap((p, i) => [`----- ${this.spec.host} datapath, run ${i + 1}, ${exit(p)} -----`, ...p.log.slice(-50)]),
      `----- ${this.spec.host} datapath, ${exit(this.datapath)} -----`, ...(this.datapath?.log ?? []).slice(-150),
      `----- ${this.spec.host} groupvpn, ${exit(this.controller)} -----`, ...(this.controller?.log ?? []).slice(-150),
    ].join('\n');
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all([this.controller?.stop(), this.datapath?.stop()]);
  }

  async remove(): Promise<void> {
    await this.stop();
    if (this.files) rmSync(this.files.dir, { recursive: true, force: true });
    this.files = null;
  }
}

/**
 * Prints every node's logs when a test of the suite fails, or when the suite's setup (beforeAll)
 * throws: then no test runs, and an afterEach would print nothing.
 */
export function printLogsOnFailure(nodes: () => GroupNode[]): void {
  let printed = false;
  const print = () => {
    printed = true;
    for (const n of nodes()) console.log(n.logs());
  };
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') print();
  });
  afterAll(({}, suite) => { // vitest wants the context destructured
    if (!printed && suite.result?.state === 'fail') print();
  });
}

/** Polls `check` until it returns true or the time is up. */
export async function eventually(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
