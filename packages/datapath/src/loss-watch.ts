/**
 * Whether a link's path loses packets, from its latency probes (aqm.ts): a probe and its echo are one
 * wire packet each way, so the share of probes whose echo never came back is the path's round-trip
 * loss rate. A super-packet (~26 wire packets as one SCTP message on an unreliable channel) is lost
 * whole when any of its wire packets is: at 2 % loss per packet ~40 % of them. While the path loses,
 * the link sends super-packets segmented (inside.ts), one wire packet each, so that a lost packet
 * costs only the segment it carried (docs/architecture.md, "Loss").
 *
 * Fed once a second (Link.sample) with the probe counters; nothing per packet. Probes still in flight
 * at a sample (under load several: one per 5 ms of the round trip) would count as lost: the caller says
 * how many may be, and that many are not.
 * A new link starts lossy, until its first LOSS_FIRST_PROBES probes come back with at most one missing
 * (checked at each echo, `firstEchoes`: about a second of its first bulk transfer on a clean path): on
 * a lossy path whole super-packets would mostly be lost, and with them the traffic that carries the
 * probes, so the loss would take seconds to show.
 */

/** Seconds of probe counts summed. */
export const LOSS_WINDOW_S = 5;
/**
 * Lossy from this round-trip loss share over the window (~0.25 % per wire packet each way, where ~6 %
 * of whole super-packets would be lost)…
 */
export const LOSS_ENTER_SHARE = 0.005;
/** …with at least this many probes lost (not one late echo)… */
export const LOSS_ENTER_PROBES = 3;
/** …and clean again at most this share (and one probe in flight), over a window of at least LOSS_MIN_PROBES probes. */
export const LOSS_EXIT_SHARE = 0.002;
export const LOSS_MIN_PROBES = 50;
/**
 * A new link is clean once this many probes (about a second of a bulk transfer: one per 64 KiB, at most
 * one per 5 ms) went out with at most one or two missing (in flight; firstEchoes). A link wrongly
 * cleared is found lossy by the window, seconds later.
 */
export const LOSS_FIRST_PROBES = 200;

export class LossWatch {
  /** The path lost packets lately, or nothing is known yet (per-packet readers: Link.lossy). */
  lossy = true;
  private readonly sent = new Float64Array(LOSS_WINDOW_S);
  private readonly answered = new Float64Array(LOSS_WINDOW_S);
  private slot = 0;
  private lastSent = -1;
  private lastAnswered = -1;
  /** No verdict yet: lossy until the first probes come back (firstEchoes) or a window says otherwise. */
  private unknown = true;

  /**
   * An echo came back (the cumulative counters after it): while there is no verdict yet, clean as
   * soon as LOSS_FIRST_PROBES probes went out and no more are missing than may be in flight, one or
   * two (more would clear lossy paths too often: at 4 % of the probes lost, ≤ 2 of 200 happens on ~1 %
   * of links; the window clears the others). Returns `lossy`.
   */
  firstEchoes(probesOut: number, probesAnswered: number, inFlight = 1): boolean {
    if (this.unknown && probesOut >= LOSS_FIRST_PROBES && probesOut - probesAnswered <= Math.min(2, Math.max(1, inFlight))) {
      this.unknown = false;
      this.lossy = false;
    }
    return this.lossy;
  }

  /**
   * One sample: the link's cumulative probe counters (probes sent, echoes taken) and how many probes
   * may be in flight now. Returns `lossy`.
   */
  sample(probesOut: number, probesAnswered: number, inFlight = 1): boolean {
    if (this.lastSent < 0 || probesOut < this.lastSent || probesAnswered < this.lastAnswered) {
      this.lastSent = probesOut;
      this.lastAnswered = probesAnswered;
      return this.lossy;
    }
    this.sent[this.slot] = probesOut - this.lastSent;
    this.answered[this.slot] = probesAnswered - this.lastAnswered;
    this.slot = (this.slot + 1) % LOSS_WINDOW_S;
    this.lastSent = probesOut;
    this.lastAnswered = probesAnswered;
    let sent = 0;
    let answered = 0;
    for (let i = 0; i < LOSS_WINDOW_S; i++) {
      sent += this.sent[i]!;
      answered += this.answered[i]!;
    }
    const lost = Math.max(0, sent - answered - Math.max(0, inFlight - 1));
    if (sent >= LOSS_FIRST_PROBES) this.unknown = false;
    if (!this.lossy) {
      if (lost >= LOSS_ENTER_PROBES && lost >= LOSS_ENTER_SHARE * sent) this.lossy = true;
    } else if (sent >= LOSS_MIN_PROBES && lost <= 1 + LOSS_EXIT_SHARE * sent) {
      this.lossy = false;
    }
    return this.lossy;
  }
}
