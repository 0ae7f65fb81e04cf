/**
 * Whether a link's path loses packets, from its latency probes (aqm.ts): a probe and its echo are one
 * wire packet each way, so the share of probes whose echo never came back is the path's round-trip
 * loss rate. A super-packet (~26 wire packets as one SCTP message on an unreliable channel) is lost
 * whole when any of its wire packets is: at 2 % loss per packet ~40 % of them. While the path loses,
 * the link sends super-packets segmented (inside.ts), one wire packet each, so that a lost packet
 * costs only the segment it carried (docs/architecture.md, "Loss").
 *
 * Probes carry consecutive sequence numbers and their echoes come back in order on one path, so at
 * each echo every probe numbered below it is settled: answered, or lost. Probes still in flight (under
 * load several: one per 5 ms of the round trip) are above the last echo and not judged yet. A probe
 * the link could not send (back-pressure) used a number too: the link reports it (probeNotSent).
 * Judged once a second (Link.sample) over the probes settled in the last LOSS_WINDOW_S seconds;
 * nothing per packet. Sequence numbers come only from echoes that aqm.ts matched to a probe it sent.
 *
 * A new link starts lossy until its first LOSS_FIRST_PROBES probes are settled with none lost: on a
 * lossy path whole super-packets would mostly be lost, and with them the traffic that carries the
 * probes, so the loss would take seconds to show.
 */

/** Seconds of settled probes judged at each sample. */
export const LOSS_WINDOW_S = 5;
/**
 * Lossy from this round-trip loss share over the window (~0.25 % per wire packet each way, where ~6 %
 * of whole super-packets would be lost)…
 */
export const LOSS_ENTER_SHARE = 0.005;
/** …with at least this many probes lost… */
export const LOSS_ENTER_PROBES = 3;
/**
 * …and clean again at most this share, over a window of at least LOSS_MIN_PROBES settled probes (fewer
 * would pass for clean by chance: 50 probes at 4 % lost come back whole once in 8).
 */
export const LOSS_EXIT_SHARE = 0.002;
export const LOSS_MIN_PROBES = 200;
/**
 * A new link is clean once this many probes (half a second of a bulk transfer: one per 64 KiB, at most
 * one per 5 ms) are settled, none lost. On a path losing 2 % each way (4 % of the probes) that happens
 * by chance on ~2 % of links, at 0.5 % (1 %) on ~1 in 3; the window finds those lossy later.
 */
export const LOSS_FIRST_PROBES = 100;
/** Probe numbers not sent remembered until settled (more, e.g. a long back-pressure, are forgotten). */
const NOT_SENT_SLOTS = 64;

export class LossWatch {
  /** The path lost packets lately, or nothing is known yet (per-packet readers: Link.lossy). */
  lossy = true;
  /** Probes numbered below `settledSeq` are settled; of them `answered` came back, `notSent` never went. */
  private settledSeq = 0;
  private answered = 0;
  private notSent = 0;
  /** Numbers of probes not sent, not yet settled (ascending; a ring). */
  private readonly notSentSeqs = new Float64Array(NOT_SENT_SLOTS);
  private notSentHead = 0;
  private notSentCount = 0;
  /** Settled probes sent and lost, cumulative, at the last LOSS_WINDOW_S + 1 samples (a ring). */
  private readonly sentAt = new Float64Array(LOSS_WINDOW_S + 1);
  private readonly lostAt = new Float64Array(LOSS_WINDOW_S + 1);
  private samples = 0;
  /** No verdict yet: lossy until the first probes are settled clean, or a window says otherwise. */
  private unknown = true;

  /** Probes sent and settled, and how many of them are lost. */
  private get settledSent(): number {
    return this.settledSeq - this.notSent;
  }

  private get lost(): number {
    return Math.max(0, this.settledSent - this.answered);
  }

  /** The link could not send probe `seq` (the number is used all the same). */
  probeNotSent(seq: number): void {
    if (seq < this.settledSeq) return;
    if (this.notSentCount === NOT_SENT_SLOTS) this.dropOldestNotSent();
    this.notSentSeqs[(this.notSentHead + this.notSentCount) % NOT_SENT_SLOTS] = seq;
    this.notSentCount++;
  }

  private dropOldestNotSent(): void {
    this.notSentHead = (this.notSentHead + 1) % NOT_SENT_SLOTS;
    this.notSentCount--;
  }

  /** The echo of probe `seq` came back (one aqm.ts matched to a probe it sent). Returns `lossy`. */
  echo(seq: number): boolean {
    this.answered++;
    if (seq >= this.settledSeq) {
      this.settledSeq = seq + 1;
      while (this.notSentCount > 0 && this.notSentSeqs[this.notSentHead]! < this.settledSeq) {
        this.dropOldestNotSent();
        this.notSent++;
      }
    }
    // (An echo below settledSeq came late, out of order: its probe had been counted lost; now it is not.)
    if (this.unknown && this.settledSent >= LOSS_FIRST_PROBES) {
      this.unknown = false;
      if (this.lost === 0) this.lossy = false;
    }
    return this.lossy;
  }

  /** Once a second: judges the probes settled over the window. Returns `lossy`. */
  sample(): boolean {
    const n = this.sentAt.length;
    const now = this.samples % n;
    this.sentAt[now] = this.settledSent;
    this.lostAt[now] = this.lost;
    this.samples++;
    if (this.samples < 2) return this.lossy;
    const from = (now + n - Math.min(this.samples - 1, LOSS_WINDOW_S)) % n;
    const sent = this.sentAt[now]! - this.sentAt[from]!;
    const lost = Math.max(0, this.lostAt[now]! - this.lostAt[from]!);
    if (!this.lossy) {
      if (lost >= LOSS_ENTER_PROBES && lost >= LOSS_ENTER_SHARE * sent) this.lossy = true;
    } else if (sent >= LOSS_MIN_PROBES && lost <= LOSS_EXIT_SHARE * sent) {
      this.lossy = false;
      this.unknown = false;
    }
    return this.lossy;
  }
}
