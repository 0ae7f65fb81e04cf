import type { LinkHealth } from '@tincan/protocol';

/**
 * Whether an up link's path still carries, judged from the traffic itself (docs/architecture.md,
 * "Links that survive"). A path can die where neither end sees it: the NAT in front of one end takes
 * a new public address and forgets its mappings. libdatachannel notices ~13 s later (ICE consent and
 * SCTP heartbeats); a link with traffic pending notices here in about a second: while packets cross
 * the link and nothing came back for CHECK_AFTER_MS, the link sends latency probes (aqm.ts) each
 * tick; no answer to them and nothing else heard for SUSPECT_AFTER_MS makes it `suspect`. An idle
 * link is checked only on a hint (an XMPP session reset, a repair of another link, an address change).
 *
 * The states and what moves them are one table (HEALTH_TRANSITIONS); the monitor below only feeds it
 * inputs from the link's counters and a clock.
 */
export type HealthInput =
  /** Something came from the peer on this link (a packet, a probe, an echo). */
  | 'heard'
  /** Traffic is pending and nothing was heard for CHECK_AFTER_MS. */
  | 'silent'
  /** A hint from elsewhere that paths may have changed: check this one now. */
  | 'hint'
  /** Probes went out and nothing came back within the time allowed. */
  | 'no_answer'
  /** A new link to the peer is being made beside this one (create_link `repair`). */
  | 'repair'
  /** That new link failed; this one is still what the peer has. */
  | 'repair_failed';

export const HEALTH_TRANSITIONS: Readonly<Record<LinkHealth, Readonly<Partial<Record<HealthInput, LinkHealth>>>>> = {
  ok: { silent: 'checking', hint: 'checking', repair: 'repairing' },
  checking: { heard: 'ok', no_answer: 'suspect', repair: 'repairing' },
  suspect: { heard: 'ok', repair: 'repairing' },
  repairing: { heard: 'ok', repair_failed: 'suspect' },
};

/** States in which packets for the peer are held (bounded) instead of sent into a dead path. */
export function holdsPackets(state: LinkHealth): boolean {
  return state === 'suspect' || state === 'repairing';
}

export interface HealthTiming {
  /** How often the datapath ticks every link's monitor. */
  tickMs: number;
  /** Traffic within this window makes a link "active" (silence on it is worth a probe). */
  activeWindowMs: number;
  /** An active link from which nothing was heard for this long starts checking. */
  checkAfterMs: number;
  /** Nothing heard for this long, and probes out for at least answerWithinMs: suspect. */
  suspectAfterMs: number;
  answerWithinMs: number;
}

export const DEFAULT_HEALTH_TIMING: HealthTiming = {
  tickMs: 200,
  activeWindowMs: 2000,
  checkAfterMs: 400,
  suspectAfterMs: 1000,
  answerWithinMs: 600,
};

/**
 * One link's health: fed the link's counters each tick (plain numbers that only grow), it applies
 * HEALTH_TRANSITIONS and says when to probe. No allocation per tick.
 */
export class LinkHealthMonitor {
  state: LinkHealth = 'ok';
  private heardSeen = -1;
  private trafficSeen = -1;
  private lastHeardMs: number;
  private lastTrafficMs = -Infinity;
  private checkSinceMs = 0;

  constructor(
    private readonly timing: HealthTiming,
    now: number,
    private readonly onChange: (state: LinkHealth, input: HealthInput, before: LinkHealth) => void,
  ) {
    this.lastHeardMs = now;
  }

  /**
   * One tick at `now`: `heard` counts everything received from the peer so far, `traffic` packets
   * either way. Returns true when a probe should go out now.
   */
  tick(now: number, heard: number, traffic: number): boolean {
    if (heard !== this.heardSeen) {
      const first = this.heardSeen < 0;
      this.heardSeen = heard;
      if (!first) {
        this.lastHeardMs = now;
        this.apply('heard', now);
      }
    }
    if (traffic !== this.trafficSeen) {
      if (this.trafficSeen >= 0) this.lastTrafficMs = now;
      this.trafficSeen = traffic;
    }
    const t = this.timing;
    switch (this.state) {
      case 'ok':
        if (now - this.lastTrafficMs < t.activeWindowMs && now - this.lastHeardMs >= t.checkAfterMs) {
          this.apply('silent', now);
          return true;
        }
        return false;
      case 'checking':
        if (now - this.checkSinceMs >= t.answerWithinMs && now - this.lastHeardMs >= t.suspectAfterMs) this.apply('no_answer', now);
        return true;
      default:
        // suspect, repairing: keep asking the old path, so that its return is noticed.
        return true;
    }
  }

  /** Applies one input; false if the table has no transition for it in this state. */
  apply(input: HealthInput, now: number): boolean {
    const next = HEALTH_TRANSITIONS[this.state][input];
    if (next === undefined) return false;
    const before = this.state;
    this.state = next;
    if (next === 'checking') this.checkSinceMs = now;
    if (input === 'heard') this.lastHeardMs = now;
    this.onChange(next, input, before);
    return true;
  }
}
