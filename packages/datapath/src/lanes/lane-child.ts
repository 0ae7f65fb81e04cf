import { fork, type ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';
import type { Uid } from '@tincan/protocol';
import { addProbeCounters, zeroProbeCounters } from '../aqm.js';
import type { LinkCounters } from '../link.js';
import { withNodeFlags } from '../node-flags.js';
import { FromLane, type LaneInit, type LaneLinkStats, type ToLane } from './lane-ipc.js';

const LANE_MAIN = new URL('./lane-main.js', import.meta.url);
const RESTART_MIN_MS = 500;
const RESTART_MAX_MS = 30_000;
/** A lane that ran this long before dying restarts at the shortest backoff again. */
const STABLE_MS = 30_000;
const STOP_GRACE_MS = 2000;

export interface LaneChildHandlers {
  /** The lane process (re)started and attached its queue: its lane links must be made again. */
  onReady(child: LaneChild): void;
  onMessage(child: LaneChild, msg: Exclude<FromLane, { t: 'ready' | 'stats' }>): void;
}

export type LaneTotals = LinkCounters & { routePacketsOut: number };

function zeroTotals(): LaneTotals {
  return { bytesIn: 0, bytesOut: 0, packetsIn: 0, packetsOut: 0, dropsBackpressure: 0, dropsSpoofed: 0, dropsMalformed: 0, compactIn: 0, compactOut: 0, routePacketsOut: 0, ...zeroProbeCounters() };
}

function addInto(into: LaneTotals, c: LaneTotals): void {
  into.bytesIn += c.bytesIn; into.bytesOut += c.bytesOut; into.packetsIn += c.packetsIn; into.packetsOut += c.packetsOut;
  into.dropsBackpressure += c.dropsBackpressure; into.dropsSpoofed += c.dropsSpoofed; into.dropsMalformed += c.dropsMalformed;
  into.compactIn += c.compactIn; into.compactOut += c.compactOut;
  into.routePacketsOut += c.routePacketsOut;
  addProbeCounters(into, c);
}

/**
 * One lane process, supervised: forked with an IPC channel, given its init and the table snapshot,
 * restarted with backoff when it dies (its queue detaches, and the kernel moves its flows to the other
 * queues meanwhile). Keeps the lane's last reported counters, folded into a base when the process
 * dies, so the totals the primary reports only grow.
 */
export class LaneChild {
  private proc: ChildProcess | null = null;
  private startedMs = 0;
  private backoffMs = RESTART_MIN_MS;
  private restartTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  ready = false;
  restarts = 0;
  /** Per peer: counters of this lane's previous processes, and of the running one. */
  private readonly base = new Map<Uid, LaneTotals>();
  private current = new Map<Uid, LaneLinkStats>();
  private baseCounters: Record<string, number> = {};
  private currentCounters: Record<string, number> = {};
  badMessages = 0;

  constructor(
    readonly lane: number,
    private readonly init: () => { init: LaneInit; snapshot: ToLane },
    private readonly handlers: LaneChildHandlers,
    private readonly log: Logger,
  ) {}

  start(): void {
    if (this.stopped || this.proc) return;
    const { init, snapshot } = this.init();
    const proc = fork(LANE_MAIN, [], {
      // the datapath's own Node flags (fork's default), and DATAPATH_NODE_FLAGS even when it was started without them
      execArgv: withNodeFlags(process.execArgv),
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, TINCAN_LANE: String(this.lane) },
    });
    this.proc = proc;
    this.startedMs = Date.now();
    this.ready = false;
    proc.on('message', (raw) => this.onMessage(raw));
    proc.on('error', (err) => this.log.warn({ err: err.message }, 'lane process error'));
    proc.on('exit', (code, signal) => this.onExit(proc, code, signal));
    this.send(init);
    this.send(snapshot);
    this.log.info({ pid: proc.pid }, 'lane process started');
  }

  send(msg: ToLane): void {
    const proc = this.proc;
    if (!proc || !proc.connected) return;
    proc.send(msg, (err) => {
      if (err) this.log.debug({ err: err.message }, 'lane IPC send failed');
    });
  }

  private onMessage(raw: unknown): void {
    const r = FromLane.safeParse(raw);
    if (!r.success) {
      this.badMessages++;
      return;
    }
    const msg = r.data;
    if (msg.t === 'ready') {
      this.ready = true;
      this.handlers.onReady(this);
      return;
    }
    if (msg.t === 'stats') {
      this.current = new Map(msg.links.map((l) => [l.peer, l]));
      this.currentCounters = msg.counters;
      return;
    }
    this.handlers.onMessage(this, msg);
  }

  private onExit(proc: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.proc !== proc) return;
    this.proc = null;
    this.ready = false;
    for (const [uid, s] of this.current) {
      const b = this.base.get(uid) ?? zeroTotals();
      addInto(b, s);
      this.base.set(uid, b);
    }
    this.current = new Map();
    for (const [k, v] of Object.entries(this.currentCounters)) this.baseCounters[k] = (this.baseCounters[k] ?? 0) + v;
    this.currentCounters = {};
    if (this.stopped) return;
    if (Date.now() - this.startedMs > STABLE_MS) this.backoffMs = RESTART_MIN_MS;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(RESTART_MAX_MS, this.backoffMs * 2);
    this.restarts++;
    this.log.warn({ code, signal, restartInMs: delay }, 'lane process exited; its flows fall back to the other queues');
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      this.start();
    }, delay);
  }

  /** Lane link counters to `peer`, over all of this lane's processes. */
  totals(uid: Uid): LaneTotals | null {
    const b = this.base.get(uid);
    const c = this.current.get(uid);
    if (!b && !c) return null;
    const t = zeroTotals();
    if (b) addInto(t, b);
    if (c) addInto(t, c);
    return t;
  }

  laneUp(uid: Uid): boolean {
    return this.ready && this.current.get(uid)?.up === true;
  }

  /** The primary link to `peer` is gone: its lane totals start from zero with the next one. */
  forget(uid: Uid): void {
    this.base.delete(uid);
    this.current.delete(uid);
  }

  counters(): Record<string, number> {
    const out = { ...this.baseCounters };
    for (const [k, v] of Object.entries(this.currentCounters)) out[k] = (out[k] ?? 0) + v;
    return out;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const proc = this.proc;
    if (!proc) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), STOP_GRACE_MS);
    await exited;
    clearTimeout(timer);
  }
}
