import type { LinkPolicyName, Uid } from '@tincan/protocol';
import type { Peer } from './peer-table.js';
import type { SessionState } from './signaling.js';

export interface LinkPolicyOptions {
  mode: LinkPolicyName;
  /** At most this many links (made or being made). */
  maxLinks: number;
  /** Up links with no traffic for this long are trimmed (on-demand only); 0 = never. */
  idleTimeoutMs: number;
  /** On-demand: traffic to a peer keeps wanting a link for this long (retries included). */
  demandWindowMs?: number;
  /** Proactive: the higher UID waits this long for the lower one's offer before offering itself. */
  proactiveWaitMs?: number;
}

export interface LinkActivity {
  uid: Uid;
  state: SessionState;
  /** Last traffic (or link up, or demand) on this link, in clock milliseconds. */
  lastActiveMs: number;
}

/**
 * Which peers to link to and which links to trim (paper §4.3). Proactive: every member, as soon as it
 * is online. On-demand: a member that local traffic wants (an unmapped packet to its address), with
 * idle links trimmed. Both: at most maxLinks, trimming the least recently used first.
 */
export class LinkPolicy {
  mode: LinkPolicyName;
  maxLinks: number;
  idleTimeoutMs: number;
  readonly demandWindowMs: number;
  readonly proactiveWaitMs: number;

  constructor(opts: LinkPolicyOptions) {
    this.mode = opts.mode;
    this.maxLinks = opts.maxLinks;
    this.idleTimeoutMs = opts.idleTimeoutMs;
    this.demandWindowMs = opts.demandWindowMs ?? 30_000;
    this.proactiveWaitMs = opts.proactiveWaitMs ?? 5_000;
  }

  /** A config reload: new limits and mode, for the next decisions (links already made stay). */
  update(opts: Pick<LinkPolicyOptions, 'mode' | 'maxLinks' | 'idleTimeoutMs'>): void {
    this.mode = opts.mode;
    this.maxLinks = opts.maxLinks;
    this.idleTimeoutMs = opts.idleTimeoutMs;
  }

  /** Does the policy want a link to this member now? */
  wants(peer: Peer, now: number): boolean {
    if (this.mode === 'proactive') return true;
    return peer.demandMs !== null && now - peer.demandMs < this.demandWindowMs;
  }

  /**
   * Proactive glare avoidance: the lower UID offers at once; the higher one waits for that offer and
   * offers itself only if none came (the other side's glare rule sorts out a race). The wait counts
   * from the peer's arrival, or from `retryAtMs` (when both may retry after a failure). Returns how
   * long to wait (0: go). On-demand offers at once: the traffic is here now.
   */
  offerDelay(localUid: Uid, peer: Peer, now: number, retryAtMs = 0): number {
    if (this.mode !== 'proactive' || localUid < peer.uid) return 0;
    const since = Math.max(peer.onlineSinceMs ?? 0, retryAtMs);
    return Math.max(0, since + this.proactiveWaitMs - now);
  }

  /** Up links idle for longer than the idle timeout (on-demand only). */
  idleVictims(links: readonly LinkActivity[], now: number): Uid[] {
    if (this.mode !== 'on-demand' || this.idleTimeoutMs <= 0) return [];
    return links.filter((l) => l.state === 'up' && now - l.lastActiveMs > this.idleTimeoutMs).map((l) => l.uid);
  }

  /**
   * Links to trim, least recently used first, so that `room` more fit under maxLinks. Only up links
   * are trimmed (one being made is not judged yet); the result may be short if there are too few.
   */
  lruVictims(links: readonly LinkActivity[], room = 0): Uid[] {
    const active = links.filter((l) => l.state !== 'idle').length;
    const excess = active + room - this.maxLinks;
    if (excess <= 0) return [];
    return links
      .filter((l) => l.state === 'up')
      .sort((a, b) => a.lastActiveMs - b.lastActiveMs || (a.uid < b.uid ? -1 : 1))
      .slice(0, excess)
      .map((l) => l.uid);
  }
}
