import type { DataChannel, DataChannelInitConfig, PeerConnection } from 'node-datachannel';
import type { Logger } from 'pino';
import {
  COMPACT_FRAME_CHANNEL_ID,
  FULL_FRAME_CHANNEL_ID,
  acceptsCompactFrames,
  acceptsOffloadFrames,
  acceptsProbes,
  advertiseCompactFrames,
  isProbeMessage,
  type IceCandidate,
  type LinkHealth,
  type LinkInfo,
  type LinkState,
  type SessionDescription,
  type TurnServer,
  type Uid,
} from '@tincan/protocol';
import { LinkAqm, zeroProbeCounters, type AqmSettings, type ProbeCounters } from './aqm.js';
import { DEFAULT_HEALTH_TIMING, LinkHealthMonitor, holdsPackets, type HealthInput, type HealthTiming } from './link-health.js';
import type { RtcLibrary } from './rtc.js';

/**
 * `--sctp-send-buffer`: the bytes usrsctp holds per link, unsent and in flight alike, before the data
 * channel's own queue (bufferedAmount, bounded by maxBufferedBytes with counted drops) takes more.
 * During a bulk transfer on the lab's ~0-RTT path libdatachannel's 1 MiB (the default here too) held a
 * standing queue that the back-pressure never saw (bufferedAmount stayed 0): 128–256 KiB cut the RTT
 * under load by 10–30%. But the buffer also bounds a link's throughput to buffer / RTT (128 KiB over
 * 40 ms: 26 Mbit/s), so the default stays at 1 MiB (docs/architecture.md, "Latency under load").
 */
export const DEFAULT_SCTP_SEND_BUFFER = 1024 * 1024;
export const MIN_SCTP_SEND_BUFFER = 16 * 1024;
export const MAX_SCTP_SEND_BUFFER = 16 * 1024 * 1024;

/** An --sctp-send-buffer byte count: a whole number 16 KiB–16 MiB; throws on anything else. */
export function checkSctpSendBuffer(bytes: number): number {
  if (!Number.isInteger(bytes) || bytes < MIN_SCTP_SEND_BUFFER || bytes > MAX_SCTP_SEND_BUFFER) {
    throw new Error(`expected a whole number of bytes, ${MIN_SCTP_SEND_BUFFER}–${MAX_SCTP_SEND_BUFFER}, got ${String(bytes)}`);
  }
  return bytes;
}

/** Counters of one link; plain numbers, bumped on the per-packet path. */
export interface LinkCounters extends ProbeCounters {
  bytesIn: number;
  bytesOut: number;
  packetsIn: number;
  packetsOut: number;
  dropsBackpressure: number;
  dropsSpoofed: number;
  dropsMalformed: number;
  /** Of packetsIn / packetsOut: compact frames (bare IP packets on the compact channel). */
  compactIn: number;
  compactOut: number;
}

export interface LinkOptions {
  /** node-datachannel, loaded by the first link (rtc.ts). */
  rtc: RtcLibrary;
  uid: Uid;
  jid: string | null;
  role: 'offerer' | 'answerer';
  stun: readonly string[];
  turn: readonly TurnServer[];
  certificatePemFile: string;
  keyPemFile: string;
  /** RtcConfig mtu: the UDP path MTU libdatachannel sizes its packets for. */
  rtcMtu: number;
  /** The local UDP ports ICE may bind (IcePortRange). */
  icePorts: IcePortRange;
  /** Above this many bytes queued in the data channel, frames are dropped (counted), not queued. */
  maxBufferedBytes: number;
  /** How long to wait for ICE gathering before signaling the candidates found so far. */
  gatherTimeoutMs: number;
  /**
   * True for addresses that must never be ICE candidates: the vNIC's own. A link whose path ran
   * through the vNIC would carry itself (tunnel in tunnel); such candidates are removed from both
   * the local description and the peer's.
   */
  excludeAddress(address: string): boolean;
  /**
   * Take compact frames from the peer: open the compact-frame channel and say so in our description
   * (frame.ts). Off: full frames only, both ways, as a node without compact framing.
   */
  compactFrames: boolean;
  /**
   * `--offload` (needs compactFrames): also take [virtio_net_hdr][IP packet] messages on the compact
   * channel and say so (frame.ts OFFLOAD_FRAMING); send them to a peer that says so (sendsOffload).
   */
  offload?: boolean;
  /**
   * The delay-based limit (aqm.ts; needs compactFrames): echo the peer's latency probes and say so in
   * our description; probe a peer that says so and drop at the compact channel when the queueing
   * delay stays above target. Absent or null: none of it, as a node that predates it (a probe that
   * arrives anyway is a malformed frame).
   */
  aqm?: AqmSettings | null;
  /** Path health (link-health.ts): its timing; absent: DEFAULT_HEALTH_TIMING. Needs probes (aqm). */
  healthTiming?: HealthTiming;
  /** Datapath-wide path-health and repair counters this link bumps; absent: its own. */
  pathCounters?: PathCounters;
  logger: Logger;
}

/** Path health and repair, datapath-wide (get_state counters). */
export interface PathCounters {
  /** Links that started checking (silence while traffic was pending, or a hint), and hints given. */
  linkChecks: number;
  linkHints: number;
  /** Links found suspect (no answer to probes), and suspect ones heard again on the same path. */
  linksSuspect: number;
  linksRecovered: number;
  /** Repairs: new links made beside a current one, those that replaced it, those that failed. */
  repairsStarted: number;
  repairsDone: number;
  repairsFailed: number;
  /** Packets held while a link was suspect or repairing; sent later; dropped (bound, age, or unsendable). */
  heldPackets: number;
  heldSent: number;
  heldDropped: number;
}

export function zeroPathCounters(): PathCounters {
  return {
    linkChecks: 0, linkHints: 0, linksSuspect: 0, linksRecovered: 0, repairsStarted: 0, repairsDone: 0, repairsFailed: 0,
    heldPackets: 0, heldSent: 0, heldDropped: 0,
  };
}

/** Packets held per link while its path is suspect: at most this many, this many bytes, this old. */
export const HOLD_MAX_PACKETS = 256;
export const HOLD_MAX_BYTES = 512 * 1024;
export const HOLD_MAX_AGE_MS = 3000;

interface HeldPacket {
  buf: Buffer;
  compact: boolean;
  atMs: number;
}

export interface LinkHandlers {
  /** A frame arrived from the peer (the buffer belongs to the callee from here on). */
  onFrame(link: Link, frame: Buffer): void;
  /** A compact frame arrived: the bare IP packet, from the link's peer to this node (the callee's). */
  onCompactFrame(link: Link, packet: Buffer): void;
  onState(link: Link, state: LinkState, reason?: string): void;
  /** The path's health changed (link-health.ts). */
  onHealth?(link: Link, health: LinkHealth, input: HealthInput): void;
}

/**
 * The local UDP ports of the links' ICE agents (RtcConfig portRangeBegin/End). Given a range, libjuice
 * hands its ports out in turn (a counter per process, from a random start, skipping ports in use)
 * instead of letting the kernel pick one at random. That matters because libjuice never releases a
 * TURN allocation when its link closes: the allocation lives on at the server for its lifetime (600 s
 * at coturn) and a new link whose Allocate comes from the same address and port gets 437 (Allocation
 * Mismatch), so it has neither a relayed nor — the TURN server being our STUN server too — a
 * server-reflexive candidate, and between two port-restricted cone NATs it cannot come up (libjuice
 * gives up only after 30 s). A random port repeats one of the last n links' with odds ~n / 28k; in
 * turn, a port comes back only after (end − begin + 1) links.
 */
export interface IcePortRange {
  begin: number;
  end: number;
}

/** The IANA dynamic ports: 16,384 links before a port comes back. */
export const DEFAULT_ICE_PORTS: IcePortRange = { begin: 49152, end: 65535 };

/**
 * The share of `range` of lane `lane` (0: the primary) of `count`: disjoint parts, so that no process
 * hands out a port another one used a moment ago (each has its own counter). Several datapaths on one
 * host need disjoint ranges for the same reason (`--ice-ports`).
 */
export function lanePorts(range: IcePortRange, lane: number, count: number): IcePortRange {
  if (count <= 1) return range;
  const size = Math.floor((range.end - range.begin + 1) / count);
  if (size < 1) throw new Error(`the ICE port range ${range.begin}-${range.end} is too short for ${count} lanes`);
  const begin = range.begin + lane * size;
  return { begin, end: lane === count - 1 ? range.end : begin + size - 1 };
}

/**
 * "begin-end" (1024 ≤ begin ≤ end ≤ 65535) to an IcePortRange; throws on anything else. A short range
 * brings ports back soon (and a single port allows one link at a time): only for tests.
 */
export function parseIcePortRange(text: string): IcePortRange {
  const m = /^(\d{4,5})-(\d{4,5})$/.exec(text.trim());
  const begin = m ? Number(m[1]) : NaN;
  const end = m ? Number(m[2]) : NaN;
  if (!(begin >= 1024 && end <= 65535 && begin <= end)) {
    throw new Error(`expected begin-end, two ports 1024–65535 with begin ≤ end (got ${JSON.stringify(text)})`);
  }
  return { begin, end };
}

const CHANNEL_LABEL = 'tincan';
const COMPACT_CHANNEL_LABEL = 'tincan-compact';

/**
 * One TinCan link: an ICE/DTLS PeerConnection with a negotiated, unordered, unreliable data channel
 * carrying full frames and, when compact framing is on, a second one carrying compact frames. The
 * peer's certificate fingerprint in its signaled description is verified by libdatachannel during the
 * DTLS handshake (fingerprint verification is never disabled).
 */
export class Link {
  readonly uid: Uid;
  readonly jid: string | null;
  readonly role: 'offerer' | 'answerer';
  readonly createdMs = Date.now();
  connectedMs: number | null = null;
  state: LinkState = 'connecting';
  readonly counters: LinkCounters = {
    bytesIn: 0, bytesOut: 0, packetsIn: 0, packetsOut: 0,
    dropsBackpressure: 0, dropsSpoofed: 0, dropsMalformed: 0, compactIn: 0, compactOut: 0,
    ...zeroProbeCounters(),
  };
  /**
   * Per-packet (read-only outside Link): frames from this node to the peer may go compact
   * (sendCompact). True while the peer's description offered compact frames and their channel is open.
   */
  sendsCompact = false;
  /**
   * Per-packet (read-only outside Link): sendCompact may also carry [virtio_net_hdr][packet] messages
   * (super-packets): sendsCompact, and the peer's description offered offload.
   */
  sendsOffload = false;
  /** This link takes [virtio_net_hdr][packet] messages on its compact channel (we advertised offload). */
  readonly takesOffload: boolean;
  /** Liveness: times of the last counter change seen by the periodic sampler. */
  lastRxMs: number | null = null;
  lastTxMs: number | null = null;
  private sampledIn = 0;
  private sampledOut = 0;

  private readonly pc: PeerConnection;
  private readonly dc: DataChannel;
  /** The compact-frame channel; null with compact framing off. */
  private readonly compactDc: DataChannel | null;
  private compactOpen = false;
  /** The peer's signaled description offered compact frames. */
  private peerTakesCompact = false;
  private peerTakesOffload = false;
  /** The peer's description said it echoes latency probes. */
  private peerTakesProbes = false;
  /** Probes and the delay-based limit (aqm.ts); null when off. */
  private readonly aqm: LinkAqm | null;
  private readonly compactFrames: boolean;
  private readonly maxBuffered: number;
  private readonly log: Logger;
  private closed = false;
  private sendErrors = 0;
  /** A TURN server was configured; libjuice finished gathering; a relayed candidate was found. */
  private readonly asksTurn: boolean;
  private gatheringDone = false;
  private relayGathered = false;
  /** Path health (link-health.ts); `holding` mirrors holdsPackets(health.state) for the per-packet path. */
  private readonly health: LinkHealthMonitor;
  private holding = false;
  private held: HeldPacket[] = [];
  private heldBytes = 0;
  readonly pathCounters: PathCounters;

  constructor(opts: LinkOptions, private readonly handlers: LinkHandlers) {
    this.uid = opts.uid;
    this.jid = opts.jid;
    this.role = opts.role;
    this.maxBuffered = opts.maxBufferedBytes;
    this.log = opts.logger;
    this.asksTurn = opts.turn.length > 0;
    this.pc = new (opts.rtc.get().PeerConnection)(opts.uid.slice(0, 8), {
      iceServers: iceServers(opts.stun, opts.turn),
      certificatePemFile: opts.certificatePemFile,
      keyPemFile: opts.keyPemFile,
      mtu: opts.rtcMtu,
      portRangeBegin: opts.icePorts.begin,
      portRangeEnd: opts.icePorts.end,
      disableAutoNegotiation: true,
    });
    this.pc.onStateChange((s) => this.onPcState(s));
    // Negotiated channel with a fixed id on both sides: no in-band open, and JS always holds the
    // reference (a channel received through onDataChannel and not referenced gets collected).
    this.dc = this.pc.createDataChannel(CHANNEL_LABEL, {
      negotiated: true,
      id: FULL_FRAME_CHANNEL_ID,
      unordered: true,
      maxRetransmits: 0,
    });
    this.compactFrames = opts.compactFrames;
    this.takesOffload = opts.compactFrames && opts.offload === true;
    this.compactDc = opts.compactFrames ? this.openCompactChannel() : null;
    this.aqm = opts.compactFrames && opts.aqm ? new LinkAqm(opts.aqm, this.counters, (msg) => this.sendProbeMessage(msg), () => performance.now()) : null;
    this.dc.onOpen(() => {
      if (this.closed) return;
      this.connectedMs = Date.now();
      this.setState('up');
      if (this.held.length > 0 && !this.holding) this.flushHeld(now());
    });
    this.dc.onClosed(() => this.setState('down', 'data channel closed'));
    this.dc.onError((e) => this.log.debug({ err: e }, 'data channel error'));
    this.dc.onMessage((msg) => this.receive(msg, false));
    this.gatherTimeoutMs = opts.gatherTimeoutMs;
    this.excludeAddress = opts.excludeAddress;
    this.pathCounters = opts.pathCounters ?? zeroPathCounters();
    this.health = new LinkHealthMonitor(opts.healthTiming ?? DEFAULT_HEALTH_TIMING, performance.now(), (state, input, before) => this.onHealth(state, input, before));
  }

  private readonly gatherTimeoutMs: number;
  private readonly excludeAddress: (address: string) => boolean;

  /** Makes the local description (offer, or answer to `remote`), with the candidates gathered. */
  async localDescription(remote?: SessionDescription): Promise<SessionDescription> {
    const gathered = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, this.gatherTimeoutMs);
      this.pc.onGatheringStateChange((s) => {
        if (s === 'complete') {
          this.gatheringDone = true;
          clearTimeout(timer);
          resolve();
        }
      });
    });
    this.startDescription(remote);
    await gathered;
    const d = this.pc.localDescription();
    if (!d || (d.type !== 'offer' && d.type !== 'answer')) throw new Error('no local description');
    const sdp = this.filterCandidates(d.sdp);
    if (/ typ relay/.test(sdp)) this.relayGathered = true;
    return { type: d.type, sdp: this.advertiseFraming(sdp) };
  }

  /**
   * Gathering is complete and brought no relayed candidate although a TURN server was configured:
   * the server refused the Allocate (or never answered it in time). The usual cause is 437
   * (Allocation Mismatch): an allocation from the same address and port — an earlier link's, which
   * libjuice never releases — is still alive. Such a link has no server-reflexive candidate either
   * (the TURN server is our STUN server, asked once), so behind a port-restricted NAT it cannot
   * come up; a fresh PeerConnection binds the next port (IcePortRange) and asks from a new 5-tuple.
   */
  get gatheredWithoutRelay(): boolean {
    return this.asksTurn && this.gatheringDone && !this.relayGathered;
  }

  /** The peer's signaled description (offer or answer), once the link has it. */
  remoteSdp: string | null = null;

  /**
   * The SHA-256 fingerprint (upper case) of the certificate the peer presented in the DTLS handshake,
   * as libdatachannel reports it once it verified it; null before, or when it reports none.
   */
  remoteFingerprint(): string | null {
    if (this.closed) return null;
    try {
      const f = this.pc.remoteFingerprint() as { value?: unknown; algorithm?: unknown } | number;
      if (typeof f !== 'object' || typeof f.value !== 'string' || f.value === '' || f.algorithm !== 'sha-256') return null;
      return f.value.toUpperCase();
    } catch {
      return null;
    }
  }

  /** Hands the peer's description (if any) to the PeerConnection and starts our answer, or our offer. */
  private startDescription(remote: SessionDescription | undefined): void {
    if (remote) {
      this.remoteSdp = remote.sdp;
      this.notePeerFraming(remote.sdp);
      this.pc.setRemoteDescription(this.filterCandidates(remote.sdp), remote.type);
      this.pc.setLocalDescription('answer');
    } else {
      this.pc.setLocalDescription('offer');
    }
  }

  private filterCandidates(sdp: string): string {
    return sdp
      .split(/\r?\n/)
      .filter((line) => {
        const address = candidateAddress(line);
        return address === null || !this.excludeAddress(address);
      })
      .join('\r\n');
  }

  /**
   * Lanes (lanes/peer-lanes.ts): one more negotiated data channel on this link's PeerConnection, for
   * in-band control between the two datapaths. The caller holds the reference (and closes it).
   */
  createControlChannel(label: string, init: DataChannelInitConfig): DataChannel {
    return this.pc.createDataChannel(label, init);
  }

  // --- trickle ICE ---------------------------------------------------------------------------------

  /**
   * Trickle ICE: makes the local description (offer, or answer to `remote`) and returns it at once,
   * with the candidates libjuice has already (its host candidates). Every candidate gathered later
   * goes to `onCandidate` (after this returns: libdatachannel reports them from its own thread),
   * then `onCandidate(null)` when gathering is complete. Candidates of excluded addresses are
   * removed here as in the whole description.
   */
  trickleDescription(remote: SessionDescription | undefined, onCandidate: (c: IceCandidate | null) => void): SessionDescription {
    let announced: Set<string> | null = null;
    const early: IceCandidate[] = [];
    let doneEarly = false;
    const report = (c: IceCandidate): void => {
      if (this.closed || announced!.has(candidateKey(c.candidate))) return;
      const address = candidateAddress(c.candidate);
      if (address !== null && this.excludeAddress(address)) return;
      announced!.add(candidateKey(c.candidate));
      if (/ typ relay/.test(c.candidate)) this.relayGathered = true;
      onCandidate(c);
    };
    this.pc.onLocalCandidate((candidate, mid) => {
      if (announced === null) early.push({ candidate, mid });
      else report({ candidate, mid });
    });
    this.pc.onGatheringStateChange((state) => {
      if (state !== 'complete') return;
      this.gatheringDone = true;
      if (announced === null) doneEarly = true;
      else if (!this.closed) onCandidate(null);
    });
    this.startDescription(remote);
    const d = this.pc.localDescription();
    if (!d || (d.type !== 'offer' && d.type !== 'answer')) throw new Error('no local description');
    const sdp = this.filterCandidates(d.sdp);
    announced = new Set(sdp.split('\r\n').filter((l) => candidateAddress(l) !== null).map(candidateKey));
    if (/ typ relay/.test(sdp)) this.relayGathered = true;
    if (early.length > 0 || doneEarly) {
      // Reported before the description was taken (unexpected: libdatachannel calls back through
      // its own thread): they still follow the description.
      setImmediate(() => {
        for (const c of early) report(c);
        if (doneEarly && !this.closed) onCandidate(null);
      });
    }
    return { type: d.type, sdp: this.advertiseFraming(sdp) };
  }

  /**
   * Trickle ICE: the peer's candidates, after its description. Those of excluded addresses are
   * dropped (counted in `filtered`); a malformed one throws.
   */
  addRemoteCandidates(candidates: readonly IceCandidate[]): { added: number; filtered: number } {
    if (this.closed) throw new Error('the link is closed');
    if (!this.pc.remoteDescription()) throw new Error('the link has no remote description yet');
    let added = 0;
    let filtered = 0;
    for (const c of candidates) {
      const address = candidateAddress(c.candidate);
      if (address !== null && this.excludeAddress(address)) {
        filtered++;
        continue;
      }
      this.pc.addRemoteCandidate(c.candidate, c.mid);
      added++;
    }
    return { added, filtered };
  }

  /** Completes an offerer's link with the peer's answer. */
  acceptAnswer(answer: SessionDescription): void {
    this.remoteSdp = answer.sdp;
    this.notePeerFraming(answer.sdp);
    this.pc.setRemoteDescription(this.filterCandidates(answer.sdp), answer.type);
  }

  get awaitingAnswer(): boolean {
    return this.role === 'offerer' && this.pc.signalingState() === 'have-local-offer';
  }

  /** Per-packet: one message from either channel, to the handler of its framing. */
  private receive(msg: string | Buffer | ArrayBuffer, compact: boolean): void {
    if (typeof msg === 'string' || !(msg instanceof Buffer)) {
      this.counters.dropsMalformed++;
      return;
    }
    if (compact && isProbeMessage(msg)) {
      // A latency probe or an echo (aqm.ts): not a packet. Without probes, what an older node sees.
      if (this.aqm === null) this.counters.dropsMalformed++;
      else this.aqm.onMessage(msg);
      return;
    }
    this.counters.packetsIn++;
    this.counters.bytesIn += msg.length;
    if (compact) {
      this.counters.compactIn++;
      this.handlers.onCompactFrame(this, msg);
    } else {
      this.handlers.onFrame(this, msg);
    }
  }

  /** Per-packet: sends one full frame; false if it was dropped (link not open, or too much queued). */
  send(frame: Buffer): boolean {
    if (this.holding) return this.hold(frame, false);
    return this.sendOn(this.dc, frame);
  }

  private sendOn(dc: DataChannel, frame: Buffer): boolean {
    if (this.state !== 'up') return false;
    if (dc.bufferedAmount() > this.maxBuffered) {
      this.counters.dropsBackpressure++;
      if (dc === this.compactDc) this.aqm?.backpressureDrop();
      return false;
    }
    try {
      dc.sendMessageBinary(frame);
    } catch (err) {
      // The channel closed (or the transport failed) before its close event reached us: libdatachannel
      // throws on send then. Drop the frame; the state change follows from the close / state events.
      this.counters.dropsBackpressure++;
      this.sendErrors++;
      if (this.sendErrors === 1) this.log.debug({ err: (err as Error).message }, 'data channel send failed');
      return false;
    }
    this.counters.packetsOut++;
    this.counters.bytesOut += frame.length;
    return true;
  }

  // --- compact frames (frame.ts) --------------------------------------------------------------------

  /**
   * Per-packet: sends one compact frame (the bare IP packet of a frame from this node to the peer) on
   * the compact channel. Only while `sendsCompact`; false if it was dropped.
   */
  sendCompact(packet: Buffer): boolean {
    const dc = this.compactDc;
    if (dc === null || !this.sendsCompact) return false;
    if (this.holding) return this.hold(packet, true);
    const aqm = this.aqm;
    // The delay-based limit (aqm.ts) may send a probe first, or drop the packet (counted in dropsAqm).
    if (aqm !== null && aqm.active && this.state === 'up' && aqm.beforeSend(packet.length)) return false;
    if (!this.sendOn(dc, packet)) return false;
    this.counters.compactOut++;
    return true;
  }

  /** A probe or an echo on the compact channel (aqm.ts); false if it could not go. Not a packet: not counted as one. */
  private sendProbeMessage(msg: Buffer): boolean {
    const dc = this.compactDc;
    if (dc === null || !this.compactOpen || this.state !== 'up' || dc.bufferedAmount() > this.maxBuffered) return false;
    try {
      dc.sendMessageBinary(msg);
      return true;
    } catch {
      return false; // the channel closed: the state change follows
    }
  }

  /** The queueing delay the probes measured last (ms above the baseline), or null (no samples, or off). */
  get queueDelayMs(): number | null {
    const d = this.aqm?.control.lastDelayMs ?? NaN;
    return Number.isNaN(d) ? null : Math.round(d * 100) / 100;
  }

  /** The compact channel: negotiated like the full-frame one, same unordered, no-retransmit mode. */
  private openCompactChannel(): DataChannel {
    const dc = this.pc.createDataChannel(COMPACT_CHANNEL_LABEL, {
      negotiated: true,
      id: COMPACT_FRAME_CHANNEL_ID,
      unordered: true,
      maxRetransmits: 0,
    });
    dc.onOpen(() => this.setCompactOpen(true));
    dc.onClosed(() => this.setCompactOpen(false));
    dc.onError((e) => this.log.debug({ err: e }, 'compact data channel error'));
    dc.onMessage((msg) => this.receive(msg, true));
    return dc;
  }

  /** The peer's signaled description offered compact frames (we send them once their channel is open). */
  get peerOffersCompact(): boolean {
    return this.peerTakesCompact;
  }

  /** Our description says we take compact frames (when we do). */
  private advertiseFraming(sdp: string): string {
    return this.compactFrames ? advertiseCompactFrames(sdp, { offload: this.takesOffload, probe: this.aqm !== null }) : sdp;
  }

  /** Reads the peer's signaled description: does it take compact frames? */
  private notePeerFraming(sdp: string): void {
    this.peerTakesCompact = this.compactFrames && acceptsCompactFrames(sdp);
    this.peerTakesOffload = this.takesOffload && acceptsOffloadFrames(sdp);
    this.peerTakesProbes = this.aqm !== null && acceptsProbes(sdp);
    this.updateFraming();
  }

  private setCompactOpen(open: boolean): void {
    if (this.closed) return;
    this.compactOpen = open;
    this.updateFraming();
  }

  private updateFraming(): void {
    const compact = this.peerTakesCompact && this.compactOpen;
    this.sendsOffload = compact && this.peerTakesOffload;
    if (this.aqm !== null) this.aqm.active = compact && this.peerTakesProbes;
    if (compact === this.sendsCompact) return;
    this.sendsCompact = compact;
    this.log.debug({ framing: compact ? 'compact' : 'full' }, 'framing');
    if (compact && this.held.length > 0 && !this.holding) this.flushHeld(now());
  }

  // --- path health (link-health.ts) and held packets -------------------------------------------------

  /** The path's health. */
  get healthState(): LinkHealth {
    return this.health.state;
  }

  /** Probes can tell whether the path carries: the link is up and the peer echoes them. */
  private get canProbe(): boolean {
    return this.state === 'up' && !this.closed && this.aqm !== null && this.aqm.active;
  }

  /** One health tick (every DEFAULT_HEALTH_TIMING.tickMs): may probe, may change the health. */
  healthTick(now: number): void {
    if (!this.canProbe) return;
    const c = this.counters;
    if (this.health.tick(now, c.packetsIn + c.probesAnswered + c.probesEchoed, c.packetsIn + c.packetsOut)) this.aqm!.probeNow();
  }

  /** A hint that paths may have changed: an up link checks its path now (an idle one too). */
  hint(now: number): void {
    if (!this.canProbe) return;
    this.pathCounters.linkHints++;
    if (this.health.apply('hint', now)) this.aqm!.probeNow();
  }

  /** A new link is being made beside this one (repair), or that failed. */
  repairing(started: boolean, now: number): void {
    this.health.apply(started ? 'repair' : 'repair_failed', now);
  }

  private onHealth(state: LinkHealth, input: HealthInput, before: LinkHealth): void {
    const pc = this.pathCounters;
    if (state === 'checking') pc.linkChecks++;
    else if (state === 'suspect' && input === 'no_answer') pc.linksSuspect++;
    else if (state === 'ok' && holdsPackets(before)) pc.linksRecovered++;
    this.holding = holdsPackets(state);
    // A pause in traffic is a check answered at once (ok → checking → ok): only what holds packets
    // (suspect, repairing) and the way back from it are worth a log line and the controller's attention.
    const matters = this.holding || holdsPackets(before);
    if (matters) this.log.info({ health: state, input, was: before }, 'link health');
    else this.log.debug({ health: state, input, was: before }, 'link health');
    if (!this.holding && this.held.length > 0) this.flushHeld(now());
    if (matters) this.handlers.onHealth?.(this, state, input);
  }

  /** Holds a copy of a packet (the caller's buffer is reused) while the path is suspect; bounded. */
  private hold(buf: Buffer, compact: boolean): boolean {
    const pc = this.pathCounters;
    if (this.held.length >= HOLD_MAX_PACKETS || this.heldBytes + buf.length > HOLD_MAX_BYTES) {
      pc.heldDropped++;
      return false;
    }
    this.held.push({ buf: Buffer.from(buf), compact, atMs: now() });
    this.heldBytes += buf.length;
    pc.heldPackets++;
    return true;
  }

  /** Hands the held packets over (to the link that replaces this one); this link holds none after. */
  takeHeld(): HeldPacket[] {
    const h = this.held;
    this.held = [];
    this.heldBytes = 0;
    return h;
  }

  /** Packets another link held for the same peer: sent as soon as this one can (now, or when framing settles). */
  adoptHeld(packets: HeldPacket[]): void {
    for (const p of packets) {
      this.held.push(p);
      this.heldBytes += p.buf.length;
    }
    if (this.state === 'up' && !this.holding) this.flushHeld(now());
  }

  /**
   * Sends the held packets, oldest first, unless too old. A compact packet waits while the compact
   * channel is not open yet (flushed again when it opens); one this link can never send compact goes.
   */
  private flushHeld(at: number): void {
    if (this.state !== 'up') return;
    const pc = this.pathCounters;
    const waitCompact = this.compactDc !== null && this.peerTakesCompact && !this.sendsCompact;
    const keep: HeldPacket[] = [];
    for (const p of this.held) {
      if (at - p.atMs > HOLD_MAX_AGE_MS) pc.heldDropped++;
      else if (p.compact && waitCompact) keep.push(p);
      else if ((p.compact ? this.sendCompact(p.buf) : this.sendOn(this.dc, p.buf))) pc.heldSent++;
      else pc.heldDropped++;
    }
    this.held = keep;
    this.heldBytes = keep.reduce((n, p) => n + p.buf.length, 0);
  }

  /** Called about once a second: turns counter movement into liveness timestamps. */
  sample(now: number): void {
    if (this.counters.packetsIn !== this.sampledIn) {
      this.sampledIn = this.counters.packetsIn;
      this.lastRxMs = now;
    }
    if (this.counters.packetsOut !== this.sampledOut) {
      this.sampledOut = this.counters.packetsOut;
      this.lastTxMs = now;
    } else {
      this.aqm?.idle(); // sent nothing since the last sample: the next packet probes first
    }
  }

  info(ip4: string[], ip6: string[]): LinkInfo {
    let pair: ReturnType<PeerConnection['getSelectedCandidatePair']> = null;
    let rtt: number | null = null;
    if (!this.closed) {
      try {
        pair = this.pc.getSelectedCandidatePair();
        const r = this.pc.rtt();
        rtt = r >= 0 ? r : null;
      } catch {
        pair = null;
      }
    }
    const c = this.counters;
    return {
      uid: this.uid,
      jid: this.jid,
      state: this.state,
      role: this.role,
      ip4,
      ip6,
      local_candidate: pair ? candidateType(pair.local.type) : null,
      remote_candidate: pair ? candidateType(pair.remote.type) : null,
      local_address: pair ? hostPort(pair.local.address, pair.local.port) : null,
      remote_address: pair ? hostPort(pair.remote.address, pair.remote.port) : null,
      rtt_ms: rtt,
      created_ms: this.createdMs,
      connected_ms: this.connectedMs,
      last_rx_ms: this.lastRxMs,
      last_tx_ms: this.lastTxMs,
      stats: {
        bytes_in: c.bytesIn, bytes_out: c.bytesOut, packets_in: c.packetsIn, packets_out: c.packetsOut,
        drops_backpressure: c.dropsBackpressure, drops_spoofed: c.dropsSpoofed, drops_malformed: c.dropsMalformed,
        compact_in: c.compactIn, compact_out: c.compactOut,
        drops_aqm: c.dropsAqm, probes_out: c.probesOut, probes_answered: c.probesAnswered, probes_echoed: c.probesEchoed, probes_bad: c.probesBad,
      },
      queue_delay_ms: this.queueDelayMs,
      framing: this.sendsCompact ? 'compact' : 'full',
      health: this.health.state,
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sendsCompact = false;
    this.holding = false;
    this.pathCounters.heldDropped += this.held.length;
    this.takeHeld();
    try {
      this.dc.close();
    } catch { /* already closed */ }
    try {
      this.compactDc?.close();
    } catch { /* already closed */ }
    try {
      this.pc.close();
    } catch { /* already closed */ }
    this.state = 'down';
  }

  private onPcState(s: string): void {
    if (this.closed) return;
    if (s === 'failed') this.setState('failed', 'ICE/DTLS failed');
    else if (s === 'closed') this.setState('down', 'peer connection closed');
    else if (s === 'disconnected') this.setState('down', 'peer connection disconnected');
    else if (s === 'connected' && this.dc.isOpen()) this.setState('up');
  }

  private setState(s: LinkState, reason?: string): void {
    if (this.state === s) return;
    if (this.state === 'failed') return; // terminal until the controller trims and recreates
    this.state = s;
    this.log.info({ state: s, reason }, 'link state');
    this.handlers.onState(this, s, reason);
  }
}

function now(): number {
  return performance.now();
}

function iceServers(stun: readonly string[], turn: readonly TurnServer[]): string[] {
  // A TURN server also reflects (its Allocate answer carries the mapped address): asking the same
  // server again as a STUN server only costs libjuice another paced transaction during gathering.
  const turnAddresses = new Set(turn.map((t) => t.address));
  const out = stun.filter((s) => !turnAddresses.has(s)).map((s) => `stun:${s}`);
  for (const t of turn) {
    out.push(`turn:${encodeURIComponent(t.username)}:${encodeURIComponent(t.password)}@${t.address}`);
  }
  return out;
}

/** The connection address of an SDP candidate line ("a=candidate:…" or "candidate:…"), else null. */
function candidateAddress(line: string): string | null {
  const m = /^(?:a=)?candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ/.exec(line);
  return m ? m[1]! : null;
}

/** A candidate line without its "a=" prefix, to compare candidates however they were written. */
function candidateKey(line: string): string {
  return line.startsWith('a=') ? line.slice(2) : line;
}

function candidateType(t: string): 'host' | 'srflx' | 'prflx' | 'relay' | 'unknown' {
  const s = t.toLowerCase();
  if (s.includes('host')) return 'host';
  if (s.includes('srflx') || s.includes('server')) return 'srflx';
  if (s.includes('prflx') || s.includes('peer')) return 'prflx';
  if (s.includes('relay')) return 'relay';
  return 'unknown';
}

function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}
