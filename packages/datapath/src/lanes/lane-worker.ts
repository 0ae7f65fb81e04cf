import type { Logger } from 'pino';
import { FRAME_HEADER_LEN, cidrContains, ip4ToNumber, parseCidr, uidToBytes, type Uid } from '@tincan/protocol';
import { addProbeCounters, zeroProbeCounters } from '../aqm.js';
import { nativeHeap } from '@tincan/tun';
import { Counters } from '../counters.js';
import { ForwardingTable } from '../forwarding-table.js';
import { Inside, type UnmappedSink } from '../inside.js';
import { Link, type LinkCounters } from '../link.js';
import { RtcLibrary } from '../rtc.js';
import { Outside, type TransitSink } from '../outside.js';
import { Vnic } from '../vnic.js';
import { Watchdog } from '../watchdog.js';
import { NativeHeapTrimmer, limitMallocArenas } from '../native-heap.js';
import { FromLane, ToLane, applyTableOp, type LaneInit, type LaneLinkStats } from './lane-ipc.js';

/** At most this many fallback packets per event-loop turn go to the primary; more are counted drops. */
const MAX_FALLBACK_PER_TURN = 256;
const STATS_INTERVAL_MS = 1000;

interface LaneLinkEntry {
  link: Link;
  attempt: number;
}

/** Where a lane process sends its messages (process.send in lane-main.ts; a test may capture them). */
export type SendToPrimary = (msg: FromLane, transfer?: undefined) => void;

/** Frames collected in one event-loop turn for the primary, packed into one buffer. */
class FallbackQueue {
  private frames: Buffer[] = [];
  private scheduled = false;
  dropped = 0;
  sent = 0;

  constructor(private readonly kind: 'inside' | 'transit', private readonly send: SendToPrimary) {}

  /** `frame` is [src UID][dst UID][IP packet], in a buffer the caller reuses: copied here. */
  push(frame: Buffer): void {
    if (this.frames.length >= MAX_FALLBACK_PER_TURN) {
      this.dropped++;
      return;
    }
    this.frames.push(Buffer.from(frame));
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    const frames = this.frames;
    if (frames.length === 0) return;
    this.frames = [];
    const offsets: number[] = [];
    const lengths: number[] = [];
    let at = 0;
    for (const f of frames) {
      offsets.push(at + FRAME_HEADER_LEN);
      lengths.push(f.length - FRAME_HEADER_LEN);
      at += f.length;
    }
    this.sent += frames.length;
    this.send({ t: 'fallback', kind: this.kind, buffer: Buffer.concat(frames, at), offsets, lengths });
  };
}

/**
 * One lane process (`--lanes N` > 1): its own queue of the multi-queue vNIC, a replica of the
 * primary's forwarding table, and one lane link per peer to the same lane of the peer's datapath.
 * It runs the same Inside (TUN → wire) and Outside (wire → TUN, every spoofing check) as the primary;
 * a packet it cannot send on an up lane link goes to the primary, which handles it as its own.
 */
export class LaneWorker implements UnmappedSink, TransitSink {
  private readonly table = new ForwardingTable();
  private readonly counters = new Counters();
  /** Made by init, with the primary's --offload. */
  private inside: Inside | null = null;
  private outside: Outside | null = null;
  /** The replicated transit switch (a table op), kept for an Outside made after it arrived. */
  private transitOn = false;
  private readonly links = new Map<Uid, LaneLinkEntry>();
  /** Counters of this lane's earlier lane links to a peer (replaced or failed), so totals only grow. */
  private readonly closedTotals = new Map<Uid, LinkCounters>();
  private readonly insideFallback: FallbackQueue;
  private readonly transitFallback: FallbackQueue;
  private config: LaneInit | null = null;
  private vnic: Vnic | null = null;
  private statsTimer: NodeJS.Timeout | null = null;
  private watchdog: Watchdog | null = null;
  /** node-datachannel, loaded by this lane's first link (rtc.ts); made by init. */
  private rtc: RtcLibrary | null = null;
  /** Gives the C heap's free pages back once lane links stop changing (native-heap.ts). */
  private heapTrimmer: NativeHeapTrimmer | null = null;
  badMessages = 0;

  constructor(private readonly send: SendToPrimary, private readonly log: Logger) {
    this.insideFallback = new FallbackQueue('inside', send);
    this.transitFallback = new FallbackQueue('transit', send);
  }

  unmapped(frame: Buffer): void {
    this.insideFallback.push(frame);
  }

  transit(frame: Buffer): void {
    this.transitFallback.push(frame);
  }

  /** One IPC message from the primary. */
  onMessage(raw: unknown): void {
    const r = ToLane.safeParse(raw);
    if (!r.success) {
      this.badMessages++;
      this.log.warn({ err: r.error.message }, 'bad message from the primary, ignored');
      return;
    }
    const msg = r.data;
    switch (msg.t) {
      case 'init':
        this.init(msg);
        return;
      case 'table':
        for (const op of msg.ops) {
          if (op.op === 'transit') {
            this.transitOn = op.enabled;
            this.outside?.setTransit(op.enabled);
          }
          else {
            try {
              applyTableOp(this.table, op);
            } catch (err) {
              this.badMessages++;
              this.log.warn({ err: (err as Error).message, op }, 'table operation failed');
            }
          }
        }
        for (const [uid, e] of this.links) this.table.ensurePeer(uid).link = e.link;
        return;
      case 'link':
        this.makeLink(msg);
        return;
      case 'answer': {
        const e = this.links.get(msg.peer);
        if (!e || e.attempt !== msg.attempt || !e.link.awaitingAnswer) return;
        try {
          e.link.acceptAnswer({ type: 'answer', sdp: msg.sdp });
        } catch (err) {
          this.log.debug({ err: (err as Error).message }, 'bad lane answer');
          this.closeLink(msg.peer, false);
        }
        return;
      }
      case 'close':
        this.closeLink(msg.peer, true);
        return;
      case 'logging':
        this.log.level = msg.level;
        return;
    }
  }

  private init(msg: LaneInit): void {
    if (this.config) return;
    this.config = msg;
    if (this.log.levels.values[msg.logLevel] !== undefined) this.log.level = msg.logLevel;
    // A lane loads node-datachannel too and can hang the same way: it kills itself, the primary
    // restarts it (lane-child.ts).
    this.watchdog = Watchdog.start({ timeoutS: msg.watchdogS, logger: this.log });
    // Before node-datachannel loads (with the first link) and starts its threads.
    const arenaLimit = limitMallocArenas(this.log, nativeHeap, msg.mallocArenas);
    this.heapTrimmer = new NativeHeapTrimmer(nativeHeap, arenaLimit, this.log.child({ component: 'native-heap' }));
    this.rtc = new RtcLibrary(msg.rtcLogLevel, this.log.child({ component: 'libdatachannel' }), msg.sctpSendBufferBytes, msg.sctpSackFreq);
    const vnic = Vnic.attachQueue({ name: msg.vnic.name, mtu: msg.vnic.mtu, ip4: msg.vnic.ip4, ip6: msg.vnic.ip6, offload: msg.offload });
    this.vnic = vnic;
    const inside = new Inside(this.table, this, this.counters, msg.offload);
    const outside = new Outside(this.table, this, this.counters, msg.offload);
    this.inside = inside;
    this.outside = outside;
    const uidBytes = uidToBytes(msg.uid);
    inside.setLocalUid(uidBytes);
    const ip4 = msg.vnic.ip4 ? parseCidr(msg.vnic.ip4).address : null;
    outside.attach(uidBytes, vnic, ip4 === null ? null : ip4ToNumber(ip4));
    outside.setTransit(this.transitOn);
    vnic.onPackets(inside.onPackets);
    vnic.onError((err) => this.log.error({ err }, 'vNIC queue read error'));
    this.statsTimer = setInterval(() => {
      const now = Date.now();
      for (const e of this.links.values()) e.link.sample(now); // liveness, and the probes' idle reset
      this.sendStats();
    }, STATS_INTERVAL_MS);
    this.log.info({ lane: msg.lane, vnic: vnic.name }, 'lane attached to its vNIC queue');
    this.send({ t: 'ready' });
  }

  private makeLink(msg: Extract<ToLane, { t: 'link' }>): void {
    const config = this.config;
    const rtc = this.rtc;
    const outside = this.outside;
    if (!config || !rtc || !outside) return;
    this.closeLink(msg.peer, false);
    const attempt = msg.attempt;
    const link = new Link(
      {
        rtc,
        uid: msg.peer,
        jid: null,
        role: msg.remote ? 'answerer' : 'offerer',
        stun: msg.stun,
        turn: msg.turn,
        certificatePemFile: config.certificatePemFile,
        keyPemFile: config.keyPemFile,
        rtcMtu: msg.rtcMtu,
        icePorts: config.icePorts,
        maxBufferedBytes: config.maxBufferedBytes,
        gatherTimeoutMs: 2000,
        excludeAddress: (address) => this.isOverlayAddress(address),
        compactFrames: config.compactFrames,
        offload: config.offload,
        aqm: config.aqm,
        logger: this.log.child({ component: 'lane-link', peer: msg.peer.slice(0, 12) }),
      },
      {
        onFrame: outside.onFrame,
        onCompactFrame: outside.onCompactFrame,
        onState: (l, state) => {
          if (this.links.get(l.uid)?.link !== l) return;
          this.heapTrimmer?.linkChanged();
          this.send({ t: 'state', peer: l.uid, attempt, state });
        },
      },
    );
    this.links.set(msg.peer, { link, attempt });
    this.table.ensurePeer(msg.peer).link = link;
    link.localDescription(msg.remote).then(
      (description) => {
        if (this.links.get(msg.peer)?.link === link) this.send({ t: 'description', peer: msg.peer, attempt, description });
      },
      (err: unknown) => {
        if (this.links.get(msg.peer)?.link !== link) return;
        this.closeLink(msg.peer, false);
        this.send({ t: 'description-error', peer: msg.peer, attempt, message: (err as Error).message });
      },
    );
  }

  /** Closes the lane link to `peer`; `forget`: the primary link is gone, its totals start again. */
  private closeLink(peer: Uid, forget: boolean): void {
    const e = this.links.get(peer);
    if (e) {
      e.link.close();
      this.heapTrimmer?.linkChanged();
      this.links.delete(peer);
      const p = this.table.peer(peer);
      if (p?.link === e.link) p.link = null;
      if (!forget) this.closedTotals.set(peer, addCounters(this.closedTotals.get(peer), e.link.counters));
    }
    if (forget) this.closedTotals.delete(peer);
  }

  private isOverlayAddress(address: string): boolean {
    const v = this.config?.vnic;
    if (!v) return false;
    if ([v.ip4, v.ip6].some((cidr) => cidr !== undefined && cidrContains(cidr, address))) return true;
    return this.table.subnets().some((s) => cidrContains(s.subnet, address));
  }

  private sendStats(): void {
    const links: LaneLinkStats[] = [];
    const peers = new Set<Uid>([...this.links.keys(), ...this.closedTotals.keys()]);
    for (const uid of peers) {
      const e = this.links.get(uid);
      const c = addCounters(this.closedTotals.get(uid), e?.link.counters);
      links.push({ peer: uid, up: e?.link.state === 'up', ...c, routePacketsOut: this.table.peer(uid)?.routePacketsOut ?? 0 });
    }
    this.send({
      t: 'stats',
      counters: this.counters.snapshot({
        vnic_write_drops: this.vnic?.writeDrops ?? 0,
        fallbackToPrimary: this.insideFallback.sent + this.transitFallback.sent,
        fallbackDropped: this.insideFallback.dropped + this.transitFallback.dropped,
        badMessages: this.badMessages,
      }),
      links,
    });
  }

  stop(): void {
    if (this.statsTimer) clearInterval(this.statsTimer);
    this.heapTrimmer?.stop();
    for (const uid of [...this.links.keys()]) this.closeLink(uid, true);
    this.vnic?.close();
    this.rtc?.cleanup();
    // Last: a close above that deadlocks still gets the lane killed (and restarted).
    this.watchdog?.stop();
  }
}

function addCounters(a: LinkCounters | undefined, b: LinkCounters | undefined): LinkCounters {
  const z = { bytesIn: 0, bytesOut: 0, packetsIn: 0, packetsOut: 0, dropsBackpressure: 0, dropsSpoofed: 0, dropsMalformed: 0, compactIn: 0, compactOut: 0, ...zeroProbeCounters() };
  const x = a ?? z;
  const y = b ?? z;
  const probes = zeroProbeCounters();
  addProbeCounters(probes, x);
  addProbeCounters(probes, y);
  return {
    ...probes,
    bytesIn: x.bytesIn + y.bytesIn, bytesOut: x.bytesOut + y.bytesOut,
    packetsIn: x.packetsIn + y.packetsIn, packetsOut: x.packetsOut + y.packetsOut,
    dropsBackpressure: x.dropsBackpressure + y.dropsBackpressure,
    dropsSpoofed: x.dropsSpoofed + y.dropsSpoofed, dropsMalformed: x.dropsMalformed + y.dropsMalformed,
    compactIn: x.compactIn + y.compactIn, compactOut: x.compactOut + y.compactOut,
  };
}
