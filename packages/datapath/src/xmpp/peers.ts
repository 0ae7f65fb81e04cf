/**
 * The datapath's table of online TinCan peers (paper §5.3: "a list of online peers along with the
 * timestamp of their last XMPP broadcast message"), keyed by full JID. Pure: methods return the
 * presence changes to report, the session emits them.
 */
import type { ParsedJid } from './codec.js';

export interface PeerRecord {
  /** Full JID. */
  jid: string;
  bare: string;
  uid: string;
  overlay: string | null;
  /** Capabilities announced in its presence. */
  caps: string[];
  /** The node certificate announced in its presence (base64 DER), null when none or unreadable. */
  cert: string | null;
  /** The membership certificate announced in its presence, null when none or not of the right form. */
  memberCert: string | null;
  /** Wall-clock time (ms since the epoch) of the last presence or accepted signal from this JID. */
  lastHeardMs: number;
  /** Known from before our last reconnect and not re-announced since. */
  stale: boolean;
}

export interface PresenceChange {
  jid: string;
  uid: string;
  overlay: string | null;
  online: boolean;
  /** What the peer announced (online changes only). */
  caps?: string[];
  cert?: string | null;
  memberCert?: string | null;
}

export class PeerTable {
  readonly #byJid = new Map<string, PeerRecord>();

  constructor(private readonly now: () => number = Date.now) {}

  /**
   * An available TinCan presence: reports the peer on first sight or when what it announces (uid,
   * overlay, caps, certificate) changes.
   */
  available(
    jid: ParsedJid,
    uid: string,
    overlay: string | null,
    caps: string[] = [],
    cert: string | null = null,
    memberCert: string | null = null,
  ): PresenceChange[] {
    const prev = this.#byJid.get(jid.full);
    const rec: PeerRecord = { jid: jid.full, bare: jid.bare, uid, overlay, caps, cert, memberCert, lastHeardMs: this.now(), stale: false };
    this.#byJid.set(jid.full, rec);
    if (
      prev && prev.uid === uid && prev.overlay === overlay && prev.caps.join(' ') === caps.join(' ') &&
      prev.cert === cert && prev.memberCert === memberCert
    ) {
      return [];
    }
    const out: PresenceChange[] = [];
    if (prev && prev.uid !== uid) out.push({ jid: prev.jid, uid: prev.uid, overlay: prev.overlay, online: false });
    out.push({ jid: rec.jid, uid, overlay, online: true, caps, cert, memberCert });
    return out;
  }

  /** Unavailable (or error) presence; a bare JID takes all of that account's resources offline. */
  unavailable(jid: ParsedJid): PresenceChange[] {
    const gone = jid.resource
      ? [this.#byJid.get(jid.full)].filter((r): r is PeerRecord => r !== undefined)
      : [...this.#byJid.values()].filter((r) => r.bare === jid.bare);
    for (const r of gone) this.#byJid.delete(r.jid);
    return gone.map((r) => ({ jid: r.jid, uid: r.uid, overlay: r.overlay, online: false }));
  }

  heard(fullJid: string): void {
    const rec = this.#byJid.get(fullJid);
    if (rec) rec.lastHeardMs = this.now();
  }

  uidOf(fullJid: string): string | undefined {
    return this.#byJid.get(fullJid)?.uid;
  }

  /** The JID a UID was last heard from (fresh entries before stale ones). */
  jidOfUid(uid: string): string | undefined {
    let best: PeerRecord | undefined;
    for (const r of this.#byJid.values()) {
      if (r.uid !== uid) continue;
      if (!best || (best.stale && !r.stale) || (best.stale === r.stale && r.lastHeardMs >= best.lastHeardMs)) best = r;
    }
    return best?.jid;
  }

  /** Our session dropped: keep what we knew, to be confirmed after the reconnect. */
  markAllStale(): void {
    for (const r of this.#byJid.values()) r.stale = true;
  }

  /** After a reconnect's grace period: whoever didn't re-announce is gone. */
  dropStale(): PresenceChange[] {
    const out: PresenceChange[] = [];
    for (const r of [...this.#byJid.values()]) {
      if (!r.stale) continue;
      this.#byJid.delete(r.jid);
      out.push({ jid: r.jid, uid: r.uid, overlay: r.overlay, online: false });
    }
    return out;
  }

  clear(): void {
    this.#byJid.clear();
  }

  list(): PeerRecord[] {
    return [...this.#byJid.values()].map((r) => ({ ...r, caps: [...r.caps] }));
  }

  get size(): number {
    return this.#byJid.size;
  }
}
