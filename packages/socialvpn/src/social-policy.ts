import type { Logger } from 'pino';
import type { Uid } from '@tincan/protocol';
import type { LinkActivity, Peer, TrafficProfile } from '@tincan/controller';

export interface SocialLinkPolicyOptions {
  profile: TrafficProfile;
  /** social_profile.proactive_links and min_score. */
  proactiveLinks: number;
  minScore: number;
  maxLinks: number;
  /** idle_timeout_s in ms; 0 = never. */
  idleTimeoutMs: number;
  demandWindowMs: number;
  proactiveWaitMs: number;
  log: Logger;
  /** The friend (bare JID) a device belongs to, and whether it is online: for the log. */
  jidOf(uid: Uid): string | undefined;
  online(uid: Uid): boolean;
}

/**
 * The "social profile" link decisions, SocialVPN's counterpart of LinkPolicy: proactive links with
 * the online friend devices this node talks to often (top proactive_links by activity score),
 * on demand for the others; links a friend keeps proactively are not idle-trimmed, and are
 * LRU-trimmed only after on-demand ones; our own proactive links never are.
 */
export class SocialLinkPolicy {
  /** Links the peer asked to keep (its con_req / con_resp said proactive). */
  readonly peerKeeps = new Set<Uid>();
  /** Devices linked proactively now. */
  private proactive = new Set<Uid>();

  constructor(private readonly o: SocialLinkPolicyOptions) {}

  isProactive(uid: Uid): boolean {
    return this.proactive.has(uid);
  }

  forget(uid: Uid): void {
    this.proactive.delete(uid);
    this.peerKeeps.delete(uid);
  }

  /** Recomputes the proactive set among `candidates` (online friend devices); returns the new ones. */
  refresh(candidates: Uid[], now: number): Uid[] {
    const { profile, log } = this.o;
    const next = profile.top(candidates, this.o.proactiveLinks, this.o.minScore, now) as Set<Uid>;
    for (const uid of next) {
      if (!this.proactive.has(uid)) log.info({ peer: uid.slice(0, 12), jid: this.o.jidOf(uid), score: profile.score(uid, now) }, 'frequent friend device: proactive link');
    }
    for (const uid of this.proactive) {
      if (!next.has(uid) && this.o.online(uid)) log.info({ peer: uid.slice(0, 12), score: profile.score(uid, now) }, 'no longer a frequent friend device: on demand');
    }
    const added = [...next].filter((u) => !this.proactive.has(u));
    this.proactive = next;
    return added;
  }

  /** Local traffic wanted this peer recently. */
  demanded(peer: Peer, now: number): boolean {
    return peer.demandMs !== null && now - peer.demandMs < this.o.demandWindowMs;
  }

  /** How long to wait before offering to `peer` (a trusted device), or null if no link is wanted. */
  offerDelay(localUid: Uid, peer: Peer, now: number, readyAt: number): number | null {
    const demand = this.demanded(peer, now);
    if (!demand && !this.proactive.has(peer.uid)) return null;
    // Proactive glare avoidance (as GroupVPN's): the lower UID offers; the higher waits for its offer.
    if (demand || localUid <= peer.uid) return 0;
    return Math.max(0, Math.max(peer.onlineSinceMs ?? 0, readyAt) + this.o.proactiveWaitMs - now);
  }

  /** Up on-demand links idle for longer than the idle timeout (proactive and peer-kept links stay). */
  idleVictims(links: readonly LinkActivity[], now: number): Uid[] {
    const limit = this.o.idleTimeoutMs;
    if (limit <= 0) return [];
    const out: Uid[] = [];
    for (const l of links) {
      if (l.state !== 'up' || this.proactive.has(l.uid) || this.peerKeeps.has(l.uid)) continue;
      if (now - l.lastActiveMs > limit) out.push(l.uid);
    }
    return out;
  }

  /**
   * Up links to trim, least recently used first, so that `room` more fit under max_links: on-demand
   * links first, then links a friend keeps; never our own proactive ones.
   */
  lruVictims(links: readonly LinkActivity[], room: number): Uid[] {
    const excess = links.length + room - this.o.maxLinks;
    if (excess <= 0) return [];
    const rank = (l: LinkActivity) => (this.peerKeeps.has(l.uid) ? 1 : 0);
    return links
      .filter((l) => l.state === 'up' && !this.proactive.has(l.uid))
      .sort((a, b) => rank(a) - rank(b) || a.lastActiveMs - b.lastActiveMs || (a.uid < b.uid ? -1 : 1))
      .slice(0, excess)
      .map((l) => l.uid);
  }
}
