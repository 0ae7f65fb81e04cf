import type { Uid } from '@tincan/protocol';

/**
 * The structured overlay for large groups (evio's Symphony-style ring is the reference):
 * members sit on a ring ordered by their UIDs; each links to its next `successors` members and to the
 * members n/2, n/4, n/8, … places further round the ring (about log2(n) long-distance links). The
 * distances are counted in ring positions rather than in UID space (Chord) or drawn at random
 * (Symphony), because every GroupVPN member sees the whole membership in XMPP presence: the graph is
 * then circulant, every member has the same number of links (no member after a wide gap in UID
 * space collects everyone's fingers), and any member is at most ceil(log2 n) hops away. Links are
 * undirected, so a pair is linked when either end wants it; both ends compute the same answer (from
 * the same membership; a short disagreement while presence settles only adds or delays a link).
 */
export class StructuredTopology {
  private uids: Uid[] = [];
  private key = '';
  private wantedSet = new Set<Uid>();

  constructor(
    readonly self: Uid,
    readonly successors = 2,
  ) {}

  /** Recomputes for a membership (self included or not); cheap when it has not changed. True if it had. */
  update(members: Iterable<Uid>): boolean {
    const all = new Set(members);
    all.add(this.self);
    const uids = [...all].sort();
    const key = uids.join();
    if (key === this.key) return false;
    this.key = key;
    this.uids = uids;
    const n = uids.length;
    const i = uids.indexOf(this.self);
    const wanted = new Set<Uid>();
    for (const d of this.offsets()) {
      wanted.add(uids[(i + d) % n]!);
      wanted.add(uids[(i - d + n) % n]!); // the members that want us
    }
    wanted.delete(this.self);
    this.wantedSet = wanted;
    return true;
  }

  /** Is the pair (self, uid) a structural link (wanted by either end)? */
  wants(uid: Uid): boolean {
    return this.wantedSet.has(uid);
  }

  /** Every structural neighbour of self. */
  wanted(): ReadonlySet<Uid> {
    return this.wantedSet;
  }

  /** Ring distances each member links forward: 1..successors, then n/2, n/4, … (rounded down). */
  private offsets(): Set<number> {
    const n = this.uids.length;
    const out = new Set<number>();
    for (let s = 1; s <= Math.min(this.successors, n - 1); s++) out.add(s);
    for (let d = Math.floor(n / 2); d >= 1; d = Math.floor(d / 2)) out.add(d);
    return out;
  }
}
