import { PROBE_ECHO_TYPE, PROBE_LEN, PROBE_TYPE, readProbe, writeProbe } from '@tincan/protocol';

/**
 * A delay-based limit on a link's send queue (docs/architecture.md, "Latency under load"): CoDel's
 * control law (RFC 8289) on the queueing delay that in-band latency probes measure, applied where the
 * datapath hands a packet to the link's compact channel.
 *
 * usrsctp's send buffer (1 MiB by default) holds a standing queue during a bulk transfer that no
 * counter shows. A probe sent on the same channel waits in the same queues (libdatachannel's, then
 * usrsctp's, FIFO per stream) as the bulk data before it; the peer echoes it at once, and the echo
 * comes back behind whatever the peer sends (and waits, like every reply, for both ends' busy event
 * loops). Its round trip less the windowed minimum of those round trips is what a packet of this
 * link waits beyond the path's own delay: the delay pings see. (A one-way measure of this
 * direction's queue alone was tried: in the lab it stayed at ~3 ms while pings took 15, the rest
 * being both datapaths' CPU that this side's sending rate drives.)
 */
export interface AqmSettings {
  /** Queueing delay above the baseline that CoDel tolerates (its `target`), ms: the least; on a longer path more (DelayControl.targetMs). */
  targetMs: number;
  /**
   * How long the delay must stay above target before the first drop, and the control law's base, ms:
   * the longest; on a short path it is shorter (DelayControl.intervalMs).
   */
  intervalMs: number;
}

export const DEFAULT_AQM_SETTINGS: AqmSettings = { targetMs: 2, intervalMs: 100 };

/** The shortest interval the control law uses (DelayControl.intervalMs). */
export const MIN_AQM_INTERVAL_MS = 30;
/** On a longer path the target is this share of the interval (DelayControl.targetMs). */
export const TARGET_SHARE_OF_INTERVAL = 0.05;
/** A probe goes out once this many bytes have been sent since the last one (≤ ~0.5% of the traffic)… */
export const PROBE_EVERY_BYTES = 64 * 1024;
/** …and no sooner than this after the last one. */
export const PROBE_MIN_SPACING_MS = 5;
/** The baseline is the minimum round trip over the last one to two of these windows. */
export const BASELINE_WINDOW_MS = 5000;
/** Only packets at least this long are dropped: dropping a TCP ACK or a ping frees no queue. */
export const AQM_MIN_DROP_BYTES = 512;
/** Dropping stops when no sample came for this many intervals (echoes lost, or no longer sent). */
const STALE_AFTER_INTERVALS = 4;
/** Probes whose echo is awaited (older ones are forgotten: probes ride an unreliable channel). */
const PROBE_SLOTS = 16;
/** Echoes sent per ECHO_WINDOW_MS at most; a probing peer sends one per PROBE_MIN_SPACING_MS at most. */
const MAX_ECHOES_PER_WINDOW = 64;
const ECHO_WINDOW_MS = 100;

/** The control law alone, on delay samples and a clock given by the caller (unit-tested with a fake one). */
export class DelayControl {
  /** Dropping: the delay has stayed above target for an interval, and not yet fallen below it. */
  dropping = false;
  /** The last queueing delay measured (ms above the baseline), or NaN before the first sample. */
  lastDelayMs = NaN;
  private minCurrent = Infinity;
  private minPrevious = Infinity;
  private windowStart = -Infinity;
  /** The interval being watched: its start (-1: none), its samples' delays summed, and their count. */
  private intervalStart = -1;
  private intervalSumMs = 0;
  private intervalSamples = 0;
  private count = 0;
  private lastCount = 0;
  private dropNext = 0;
  private firstDropDue = false;
  private lastSampleMs = -Infinity;

  constructor(private readonly settings: AqmSettings) {}

  /**
   * The interval in use: CoDel's should be about the round trip of the flows it controls, whose
   * reaction to a drop shows only a round trip later. Inner flows between two nodes have about the
   * link's own round trip, the baseline: four of them, at least MIN_AQM_INTERVAL_MS (probe noise) and
   * at most the configured interval (100 ms, CoDel's default for Internet paths).
   */
  get intervalMs(): number {
    const adaptive = Math.max(MIN_AQM_INTERVAL_MS, 4 * this.baselineMs);
    return Math.min(this.settings.intervalMs, Number.isFinite(adaptive) ? adaptive : this.settings.intervalMs);
  }

  /**
   * The target in use: the configured one, or on a longer path 5% of the interval (RFC 8289 puts
   * target at 5–10% of interval). A TCP flow over a path of tens of ms needs some queue to keep
   * the path full: in the lab over 42 ms (a delay forwarder), 2 ms cost a quarter of the throughput
   * where 5 ms cost ~6%.
   */
  get targetMs(): number {
    return Math.max(this.settings.targetMs, TARGET_SHARE_OF_INTERVAL * this.intervalMs);
  }

  /** The baseline: the windowed minimum of the round trips seen (Infinity before any). */
  get baselineMs(): number {
    return Math.min(this.minCurrent, this.minPrevious);
  }

  /**
   * One probe's round trip, taken at `now`: updates the baseline and, once an interval has passed,
   * the state. Like CoDel, it acts on the smallest delay seen over an interval, not on each sample:
   * a probe's round trip carries the scheduling noise of two busy event loops, and a standing queue
   * is what no probe of the interval got past.
   */
  sample(rttMs: number, now: number): void {
    this.lastSampleMs = now;
    if (now - this.windowStart >= BASELINE_WINDOW_MS) {
      this.minPrevious = now - this.windowStart >= 2 * BASELINE_WINDOW_MS ? Infinity : this.minCurrent;
      this.minCurrent = Infinity;
      this.windowStart = now;
    }
    if (rttMs < this.minCurrent) this.minCurrent = rttMs;
    const delay = rttMs - this.baselineMs;
    this.lastDelayMs = delay;
    this.intervalSumMs += delay;
    this.intervalSamples++;
    if (this.intervalStart < 0) this.intervalStart = now;
    const interval = this.intervalMs;
    if (now - this.intervalStart < interval) return;
    const above = this.intervalSumMs / this.intervalSamples >= this.targetMs;
    this.intervalStart = now;
    this.intervalSumMs = 0;
    this.intervalSamples = 0;
    if (!above) {
      this.dropping = false;
      return;
    }
    if (this.dropping) return;
    // RFC 8289: start again near the drop rate that controlled the queue last time, if that was recent.
    const delta = this.count - this.lastCount;
    this.count = delta > 1 && now - this.dropNext < 16 * interval ? delta : 1;
    this.lastCount = this.count;
    this.dropping = true;
    this.firstDropDue = true;
    this.dropNext = now;
  }

  /**
   * While dropping: whether the packet at hand (a droppable one) goes, at `now`. Without a sample
   * for STALE_AFTER_INTERVALS intervals it stops dropping.
   */
  dropDue(now: number): boolean {
    if (!this.dropping || now < this.dropNext) return false;
    const interval = this.intervalMs;
    if (now - this.lastSampleMs > STALE_AFTER_INTERVALS * interval) {
      this.idle();
      return false;
    }
    if (this.firstDropDue) this.firstDropDue = false;
    else this.count++;
    // No catch-up burst after a pause in sending: the next drop is a control-law step from now.
    this.dropNext = now + interval / Math.sqrt(this.count);
    return true;
  }

  /**
   * A packet was dropped at `now` by other means (the channel's back-pressure): while dropping, it
   * stands for the drop that was due, so the inner flows do not get both.
   */
  otherDrop(now: number): void {
    if (!this.dropping || now < this.dropNext) return;
    if (this.firstDropDue) this.firstDropDue = false;
    else this.count++;
    this.dropNext = now + this.intervalMs / Math.sqrt(this.count);
  }

  /** The link went idle: nothing queues, so nothing is above target. */
  idle(): void {
    this.intervalStart = -1;
    this.intervalSumMs = 0;
    this.intervalSamples = 0;
    this.dropping = false;
  }
}

/** The probe and AQM counters of a link (a subset of LinkCounters). */
export interface ProbeCounters {
  /** Packets dropped by the delay-based limit. */
  dropsAqm: number;
  /** Probes sent, echoes of ours taken (samples), echoes sent for the peer's probes. */
  probesOut: number;
  probesAnswered: number;
  probesEchoed: number;
  /** Probe messages refused: malformed, an echo of no probe awaited, echoes over the rate limit. */
  probesBad: number;
}

/** Zero probe counters. */
export function zeroProbeCounters(): ProbeCounters {
  return { dropsAqm: 0, probesOut: 0, probesAnswered: 0, probesEchoed: 0, probesBad: 0 };
}

/** Adds `from`'s probe counters into `into` (lane totals). */
export function addProbeCounters(into: ProbeCounters, from: ProbeCounters): void {
  into.dropsAqm += from.dropsAqm; into.probesOut += from.probesOut; into.probesAnswered += from.probesAnswered;
  into.probesEchoed += from.probesEchoed; into.probesBad += from.probesBad;
}

/**
 * One link's probes (both roles) and its delay-based limit. `send` puts a message on the link's
 * compact channel (false if it could not); `clock` is a monotonic clock in ms (performance.now).
 * Nothing here allocates after construction.
 */
export class LinkAqm {
  readonly control: DelayControl;
  /** Set by the link: the peer echoes probes and the compact channel is up (probe and limit). */
  active = false;
  private bytesSinceProbe = PROBE_EVERY_BYTES;
  private lastProbeMs = -Infinity;
  private seq = 0;
  private readonly slotSeq = new Uint32Array(PROBE_SLOTS);
  private readonly slotSentMs = new Float64Array(PROBE_SLOTS).fill(-1);
  private readonly probe = Buffer.alloc(PROBE_LEN);
  private readonly echo = Buffer.alloc(PROBE_LEN);
  private echoWindowStart = -Infinity;
  private echoesInWindow = 0;

  constructor(
    settings: AqmSettings,
    private readonly counters: ProbeCounters,
    private readonly send: (msg: Buffer) => boolean,
    private readonly clock: () => number,
  ) {
    this.control = new DelayControl(settings);
  }

  /**
   * Per-packet, before a compact message of `length` bytes goes on the channel (only while active):
   * sends a probe when one is due; true if the packet is to be dropped (counted here).
   */
  beforeSend(length: number): boolean {
    this.bytesSinceProbe += length;
    const control = this.control;
    if (this.bytesSinceProbe < PROBE_EVERY_BYTES && !control.dropping) return false;
    const now = this.clock();
    if (this.bytesSinceProbe >= PROBE_EVERY_BYTES && now - this.lastProbeMs >= PROBE_MIN_SPACING_MS) this.sendProbe(now);
    if (length < AQM_MIN_DROP_BYTES || !control.dropDue(now)) return false;
    this.counters.dropsAqm++;
    return true;
  }

  /** A probe now, whatever was sent (path health, link-health.ts); false if it could not go. */
  probeNow(): boolean {
    const before = this.counters.probesOut;
    this.sendProbe(this.clock());
    return this.counters.probesOut !== before;
  }

  private sendProbe(now: number): void {
    this.bytesSinceProbe = 0;
    this.lastProbeMs = now;
    const seq = this.seq;
    this.seq = (seq + 1) >>> 0;
    writeProbe(this.probe, PROBE_TYPE, seq);
    if (!this.send(this.probe)) return;
    const slot = seq % PROBE_SLOTS;
    this.slotSeq[slot] = seq;
    this.slotSentMs[slot] = now;
    this.counters.probesOut++;
  }

  /** A probe or an echo from the peer (isProbeMessage): echoes the one, samples the other. */
  onMessage(msg: Buffer): void {
    const now = this.clock();
    if (msg[0] === PROBE_TYPE) {
      const seq = readProbe(msg, PROBE_TYPE);
      if (seq < 0) {
        this.counters.probesBad++;
        return;
      }
      if (now - this.echoWindowStart >= ECHO_WINDOW_MS) {
        this.echoWindowStart = now;
        this.echoesInWindow = 0;
      }
      if (++this.echoesInWindow > MAX_ECHOES_PER_WINDOW) {
        this.counters.probesBad++;
        return;
      }
      writeProbe(this.echo, PROBE_ECHO_TYPE, seq);
      if (this.send(this.echo)) this.counters.probesEchoed++;
      return;
    }
    const seq = msg[0] === PROBE_ECHO_TYPE ? readProbe(msg, PROBE_ECHO_TYPE) : -1;
    const slot = seq < 0 ? 0 : seq % PROBE_SLOTS;
    const sentMs = this.slotSentMs[slot]!;
    if (seq < 0 || sentMs < 0 || this.slotSeq[slot] !== seq) {
      this.counters.probesBad++;
      return;
    }
    this.slotSentMs[slot] = -1; // one sample per probe
    this.counters.probesAnswered++;
    if (this.active) this.control.sample(now - sentMs, now);
  }

  /** A packet to the peer was dropped by the channel's back-pressure (counted by the link). */
  backpressureDrop(): void {
    if (this.active && this.control.dropping) this.control.otherDrop(this.clock());
  }

  /** The link sent nothing for a while: the next packet probes at once, and nothing is dropped. */
  idle(): void {
    this.bytesSinceProbe = PROBE_EVERY_BYTES;
    this.control.idle();
  }
}
