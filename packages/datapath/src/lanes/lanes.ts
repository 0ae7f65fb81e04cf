import type { Logger } from 'pino';
import { FRAME_HEADER_LEN, type LinkInfo, type SessionDescription, type Uid } from '@tincan/protocol';
import type { PacketBatch } from '@tincan/tun';
import type { AqmSettings } from '../aqm.js';
import type { ForwardingTable } from '../forwarding-table.js';
import { lanePorts, type IcePortRange, type Link } from '../link.js';
import type { VnicConfig } from '../vnic.js';
import { LaneChild } from './lane-child.js';
import { snapshotOps, type FromLane, type TableOp } from './lane-ipc.js';
import { PeerLanes, type LaneIce, type PeerLanesHost } from './peer-lanes.js';

export interface LanesOptions {
  /** Lanes, the primary included (`--lanes`, 2..MAX_LANES here: 1 means no Lanes object at all). */
  count: number;
  certificatePemFile: string;
  keyPemFile: string;
  maxBufferedBytes: number;
  /** Compact frames on lane links too (`--no-compact-frames` turns them off everywhere). */
  compactFrames: boolean;
  /** `--offload` (datapath.ts): every lane opens its queue and makes its lane links with it. */
  offload: boolean;
  /** The delay-based limit's settings (aqm.ts), or null when off: lane links get the same. */
  aqm: AqmSettings | null;
  logLevel: string;
  rtcLogLevel: 'Verbose' | 'Debug' | 'Info' | 'Warning' | 'Error' | 'Fatal';
  /** The datapath's ICE port range (`--ice-ports`); each lane gets its own share of it (lanePorts). */
  icePorts: IcePortRange;
  /** The primary's `--watchdog`: each lane process watches its own main thread with it (0: off). */
  watchdogS: number;
  /** The primary's `--sctp-send-buffer` (link.ts): lane links get the same. */
  sctpSendBufferBytes: number;
  /** The primary's `--sctp-sack-freq` (rtc.ts): lane links get the same. */
  sctpSackFreq: number;
  /** The malloc arena limit for the lane processes (native-heap.ts); 0: none. */
  mallocArenas: number;
  logger: Logger;
}

/** What the lanes need from the primary datapath. */
export interface LanesHost {
  readonly table: ForwardingTable;
  transitOn(): boolean;
  rtcMtu(): number;
  /** Packets a lane read from its queue and could not send: handled as the primary's own vNIC reads. */
  insideFromLane(batch: PacketBatch): void;
  /**
   * A full frame a lane received and could not handle itself: for another node with no lane next hop
   * (or transit off), or sealed for this node (only the primary opens those). The primary's Outside
   * takes it (Outside.fromLane): forwarded, handed to the controller or opened, as its own.
   */
  frameFromLane(frame: Buffer): void;
}

/**
 * The primary datapath's side of `--lanes N`: it supervises the N-1 lane processes (lane-child.ts),
 * replicates every forwarding-table change to them, runs the in-band lane control on each primary
 * link (peer-lanes.ts), handles the packets lanes hand back, and folds the lanes' counters into
 * get_state. See docs/architecture.md, "Lanes".
 */
export class Lanes implements PeerLanesHost {
  private readonly children: LaneChild[] = [];
  private readonly peers = new Map<Uid, PeerLanes>();
  private local: { uid: Uid; uidBytes: Buffer; vnic: VnicConfig } | null = null;
  /** Per link: lane packets in/out at the last liveness sample. */
  private readonly sampled = new Map<Uid, { inn: number; out: number }>();
  badControl = 0;
  private readonly fallbackBatch: { buffer: Buffer; offsets: Uint32Array; lengths: Uint32Array; count: number } = { buffer: Buffer.alloc(0), offsets: new Uint32Array(0), lengths: new Uint32Array(0), count: 0 };

  private logLevel: string;

  constructor(private readonly opts: LanesOptions, private readonly host: LanesHost) {
    this.logLevel = opts.logLevel;
  }

  get ourLanes(): number {
    return this.opts.count;
  }

  rtcMtu(): number {
    return this.host.rtcMtu();
  }

  /** Called once the vNIC (opened with IFF_MULTI_QUEUE) is up: starts lanes 1..count-1. */
  start(uid: Uid, vnic: VnicConfig): void {
    if (this.local) return;
    this.local = { uid, uidBytes: Buffer.from(uid, 'hex'), vnic };
    for (let lane = 1; lane < this.opts.count; lane++) {
      const child = new LaneChild(
        lane,
        () => ({
          init: {
            t: 'init', lane, uid,
            vnic: { name: vnic.name, mtu: vnic.mtu, ...(vnic.ip4 ? { ip4: vnic.ip4 } : {}), ...(vnic.ip6 ? { ip6: vnic.ip6 } : {}) },
            certificatePemFile: this.opts.certificatePemFile,
            keyPemFile: this.opts.keyPemFile,
            maxBufferedBytes: this.opts.maxBufferedBytes,
            compactFrames: this.opts.compactFrames,
            offload: this.opts.offload,
            aqm: this.opts.aqm,
            logLevel: this.logLevel,
            rtcLogLevel: this.opts.rtcLogLevel,
            icePorts: lanePorts(this.opts.icePorts, lane, this.opts.count),
            watchdogS: this.opts.watchdogS,
            sctpSendBufferBytes: this.opts.sctpSendBufferBytes,
            sctpSackFreq: this.opts.sctpSackFreq,
            mallocArenas: this.opts.mallocArenas,
          },
          snapshot: { t: 'table', ops: snapshotOps(this.host.table, this.host.transitOn()) },
        }),
        {
          onReady: (c) => {
            for (const p of this.peers.values()) p.onLaneRestarted(c.lane);
          },
          onMessage: (c, msg) => this.onLaneMessage(c, msg),
        },
        this.opts.logger.child({ component: 'lane', lane }),
      );
      this.children.push(child);
      child.start();
    }
  }

  /** set_logging reaches the lane processes too (and the ones started later). */
  setLogLevel(level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'): void {
    this.logLevel = level;
    for (const c of this.children) c.send({ t: 'logging', level });
  }

  // --- forwarding-table replication --------------------------------------------------------------

  replicate(...ops: TableOp[]): void {
    if (ops.length === 0) return;
    for (const c of this.children) c.send({ t: 'table', ops });
  }

  // --- lane control per primary link -------------------------------------------------------------

  /** A new primary link: its lane control channel (created before negotiation, like channel 0). */
  attach(link: Link, ice: LaneIce, remote?: SessionDescription): void {
    this.peers.get(link.uid)?.close();
    const p = new PeerLanes(link, ice, this, this.opts.logger.child({ component: 'lanes', peer: link.uid.slice(0, 12) }));
    if (remote) p.setRemoteDescription(remote.sdp);
    this.peers.set(link.uid, p);
  }

  /** The peer's answer to our primary offer. */
  remoteDescription(link: Link, sdp: string): void {
    const p = this.peers.get(link.uid);
    if (p) p.setRemoteDescription(sdp);
  }

  /** The primary link closed (trimmed, replaced or stopped): its lane links close too. */
  linkClosed(link: Link): void {
    const p = this.peers.get(link.uid);
    if (!p) return;
    p.close();
    this.peers.delete(link.uid);
    this.sampled.delete(link.uid);
    for (const c of this.children) {
      c.send({ t: 'close', peer: link.uid });
      c.forget(link.uid);
    }
  }

  makeLaneLink(lane: number, peer: Uid, attempt: number, ice: LaneIce, remote?: SessionDescription): boolean {
    const child = this.children[lane - 1];
    if (!child?.ready) return false;
    child.send({
      t: 'link', peer, attempt, stun: [...ice.stun], turn: [...ice.turn], rtcMtu: this.host.rtcMtu(),
      ...(remote ? { remote } : {}),
    });
    return true;
  }

  acceptLaneAnswer(lane: number, peer: Uid, attempt: number, sdp: string): void {
    this.children[lane - 1]?.send({ t: 'answer', peer, attempt, sdp });
  }

  countBadControl(): void {
    this.badControl++;
  }

  private onLaneMessage(child: LaneChild, msg: Exclude<FromLane, { t: 'ready' | 'stats' }>): void {
    switch (msg.t) {
      case 'description':
        this.peers.get(msg.peer)?.onLaneDescription(child.lane, msg.attempt, msg.description);
        return;
      case 'description-error':
        this.peers.get(msg.peer)?.onLaneState(child.lane, msg.attempt, 'none');
        return;
      case 'state':
        this.peers.get(msg.peer)?.onLaneState(child.lane, msg.attempt, msg.state);
        return;
      case 'fallback':
        this.onFallback(msg);
        return;
    }
  }

  // --- packets the lanes hand back ---------------------------------------------------------------

  private onFallback(msg: Extract<FromLane, { t: 'fallback' }>): void {
    const bytes = msg.buffer;
    const buffer: Buffer = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const n = Math.min(msg.offsets.length, msg.lengths.length);
    if (msg.kind === 'inside') {
      const b = this.fallbackBatch;
      if (b.offsets.length < n) {
        b.offsets = new Uint32Array(n);
        b.lengths = new Uint32Array(n);
      }
      let count = 0;
      for (let i = 0; i < n; i++) {
        const off = msg.offsets[i]!;
        const len = msg.lengths[i]!;
        if (off < FRAME_HEADER_LEN || len < 0 || off + len > buffer.length) continue;
        b.offsets[count] = off;
        b.lengths[count] = len;
        count++;
      }
      b.buffer = buffer;
      b.count = count;
      this.host.insideFromLane(b);
      return;
    }
    for (let i = 0; i < n; i++) {
      const off = msg.offsets[i]!;
      const len = msg.lengths[i]!;
      if (off < FRAME_HEADER_LEN || len < 20 || off + len > buffer.length) continue;
      this.host.frameFromLane(buffer.subarray(off - FRAME_HEADER_LEN, off + len));
    }
  }

  // --- observability -----------------------------------------------------------------------------

  /** Adds the lanes' traffic to one link's get_state record and says how many lane links are up. */
  decorate(info: LinkInfo): LinkInfo {
    const own = info.stats;
    const lanes: NonNullable<LinkInfo['lanes']> = [{
      lane: 0, up: info.state === 'up',
      bytes_in: own.bytes_in, bytes_out: own.bytes_out, packets_in: own.packets_in, packets_out: own.packets_out,
      drops_aqm: own.drops_aqm, probes_answered: own.probes_answered,
    }];
    if (!this.peers.has(info.uid)) return { ...info, lanes_up: 0, lanes };
    let up = 0;
    const s = { ...own };
    for (const c of this.children) {
      const isUp = c.laneUp(info.uid);
      if (isUp) up++;
      const t = c.totals(info.uid);
      lanes.push({
        lane: c.lane, up: isUp,
        bytes_in: t?.bytesIn ?? 0, bytes_out: t?.bytesOut ?? 0, packets_in: t?.packetsIn ?? 0, packets_out: t?.packetsOut ?? 0,
        drops_aqm: t?.dropsAqm ?? 0, probes_answered: t?.probesAnswered ?? 0,
      });
      if (!t) continue;
      s.bytes_in += t.bytesIn; s.bytes_out += t.bytesOut; s.packets_in += t.packetsIn; s.packets_out += t.packetsOut;
      s.drops_backpressure += t.dropsBackpressure; s.drops_spoofed += t.dropsSpoofed; s.drops_malformed += t.dropsMalformed;
      s.compact_in += t.compactIn; s.compact_out += t.compactOut;
      s.drops_aqm += t.dropsAqm; s.probes_out += t.probesOut; s.probes_answered += t.probesAnswered;
      s.probes_echoed += t.probesEchoed; s.probes_bad += t.probesBad;
    }
    return { ...info, stats: s, lanes_up: up, lanes };
  }

  /** vNIC packets the lanes sent to `uid` on its route's lane link (added to routes[].packets_out). */
  routePacketsOut(uid: Uid): number {
    let n = 0;
    for (const c of this.children) n += c.totals(uid)?.routePacketsOut ?? 0;
    return n;
  }

  /** Liveness (last_rx_ms / last_tx_ms): lane traffic counts as traffic on the link. */
  sample(link: Link, now: number): void {
    let inn = 0;
    let out = 0;
    for (const c of this.children) {
      const t = c.totals(link.uid);
      if (t) {
        inn += t.packetsIn;
        out += t.packetsOut;
      }
    }
    const last = this.sampled.get(link.uid);
    if (last) {
      if (inn !== last.inn) link.lastRxMs = now;
      if (out !== last.out) link.lastTxMs = now;
    }
    this.sampled.set(link.uid, { inn, out });
  }

  /** Datapath-wide counters of all lane processes, summed, prefixed `lanes_`. */
  counters(): Record<string, number> {
    const out: Record<string, number> = {
      lanes_processes: this.children.length,
      lanes_ready: this.children.filter((c) => c.ready).length,
      lanes_restarts: this.children.reduce((n, c) => n + c.restarts, 0),
      lanes_control_dropped: this.badControl,
      lanes_ipc_bad: this.children.reduce((n, c) => n + c.badMessages, 0),
    };
    for (const c of this.children) {
      for (const [k, v] of Object.entries(c.counters())) out[`lanes_${k}`] = (out[`lanes_${k}`] ?? 0) + v;
    }
    return out;
  }

  async stop(): Promise<void> {
    for (const p of this.peers.values()) p.close();
    this.peers.clear();
    await Promise.all(this.children.map((c) => c.stop()));
  }
}
