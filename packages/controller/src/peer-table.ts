import type { Uid } from '@tincan/protocol';
import { bareJid, type ClaimTrust } from './membership.js';

/** A presence as the datapath reports it (presence event, or get_state peers[]). */
export interface PresenceInput {
  uid: Uid;
  jid: string;
  overlay: string | null;
  online: boolean;
  /** The node certificate and membership certificate its presence announced (online only). */
  cert?: string | undefined;
  member_cert?: string | undefined;
}

/** `trust`: what the admitted presence's key is trusted with (absent when admission checks no key). */
export type Admission = { ok: true; trust?: ClaimTrust } | { ok: false; reason: string; detail?: string };

/**
 * absent: no admitted node announces this UID (offline, unknown, or refused);
 * member: exactly one admitted full JID announces it;
 * conflict: two or more admitted full JIDs announce it (or another JID announces our own UID).
 */
export type PeerStatus = 'absent' | 'member' | 'conflict';

export interface Claim {
  jid: string;
  overlay: string | null;
  sinceMs: number;
  lastMs: number;
  /** The key admission trusted for this claim (null: admission checked none). */
  trust: ClaimTrust | null;
  /** The presence as admitted (to judge it again). */
  input: PresenceInput;
}

export interface Peer {
  readonly uid: Uid;
  /** Admitted, online presences announcing this UID, by full JID. */
  readonly claims: Map<string, Claim>;
  status: PeerStatus;
  /** The member's full JID while status is member. */
  jid: string | null;
  /** When the current member's presence appeared. */
  onlineSinceMs: number | null;
  /** The peer's virtual IPv4 address once verified (GroupVPN: uidFromIp4(ip4) === uid). */
  ip4: string | null;
  /** Last time local traffic wanted this peer (on-demand policy). */
  demandMs: number | null;
}

export interface PresenceChange {
  uid: Uid;
  before: PeerStatus;
  after: PeerStatus;
}

export type SenderCheck =
  | { ok: true; peer: Peer }
  | { ok: false; reason: 'unknown_sender' | 'not_admitted' | 'jid_mismatch' | 'address_conflict' };

export interface PeerTableOptions {
  localUid: Uid;
  /** Who may become a peer (GroupVPN: the same overlay; SocialVPN: mutual roster subscription; both: the key). */
  admit(p: PresenceInput): Admission;
  /** A presence was refused (to count and log it); `uid_taken` is the table's own refusal. */
  onRefused?(p: PresenceInput, reason: string, detail: string | undefined): void;
  /** Refused presences remembered (to explain refusals); the oldest is forgotten beyond this. */
  maxRefused?: number;
}

/**
 * The controller's view of the other nodes: presence, admission and who holds each UID. A UID is a
 * member when an admitted full JID announces it. The first admitted (JID, key) holds the UID: another
 * presence claiming it is refused (`uid_taken`), never a conflict that would unlink the holder, and is
 * judged again when the holder leaves. The same bare JID with the same key under another resource is
 * the same node (a new session): its new presence takes the claim over. Our own UID is never a peer's.
 */
export class PeerTable {
  private readonly peers = new Map<Uid, Peer>();
  /** Admitted full JID → the UID it announces (a JID announces one UID at a time). */
  private readonly jidToUid = new Map<string, Uid>();
  /** Refused full JID → why, and the presence (bounded). */
  private readonly refused = new Map<string, { uid: Uid; reason: string; input: PresenceInput }>();
  private ownJid: string | null = null;

  constructor(private readonly opts: PeerTableOptions) {}

  get(uid: Uid): Peer | undefined {
    return this.peers.get(uid);
  }

  /** The peer if it is a member (online, admitted, unambiguous). */
  member(uid: Uid): Peer | undefined {
    const p = this.peers.get(uid);
    return p?.status === 'member' ? p : undefined;
  }

  all(): IterableIterator<Peer> {
    return this.peers.values();
  }

  *members(): IterableIterator<Peer> {
    for (const p of this.peers.values()) if (p.status === 'member') yield p;
  }

  conflicts(): { uid: Uid; jids: string[]; local: boolean }[] {
    const out = [];
    for (const p of this.peers.values()) {
      if (p.status === 'conflict') out.push({ uid: p.uid, jids: [...this.effectiveClaims(p).keys()], local: p.uid === this.opts.localUid });
    }
    return out;
  }

  refusedCount(): number {
    return this.refused.size;
  }

  /** Whether a presence announcing `uid` is online but refused (not merely gone). */
  refusedUid(uid: Uid): boolean {
    for (const r of this.refused.values()) if (r.uid === uid) return true;
    return false;
  }

  /** Our own full JID (from get_state): our own presence, reflected by the server, is ignored. */
  setOwnJid(jid: string | null, now: number): PresenceChange[] {
    if (jid === this.ownJid) return [];
    this.ownJid = jid;
    return [...this.peers.values()].map((p) => this.recompute(p, now)).filter((c) => c.before !== c.after);
  }

  /** Applies one presence; returns how UIDs' statuses changed (unchanged ones left out). */
  presence(ev: PresenceInput, now: number): PresenceChange[] {
    return this.apply(ev, now).filter((c) => c.before !== c.after);
  }

  private apply(ev: PresenceInput, now: number): PresenceChange[] {
    const p = this.ensure(ev.uid);
    const prevUid = this.jidToUid.get(ev.jid);
    const changes: PresenceChange[] = [];
    if (prevUid !== undefined && prevUid !== ev.uid) {
      // The same JID now announces another UID (its node was readdressed): drop the old claim.
      const old = this.peers.get(prevUid);
      if (old) {
        old.claims.delete(ev.jid);
        changes.push(this.recompute(old, now));
      }
      this.jidToUid.delete(ev.jid);
    }
    if (ev.online) {
      let admission = ev.uid === this.opts.localUid
        ? ({ ok: false, reason: 'uid_taken', detail: 'our own UID' } as const)
        : this.opts.admit(ev);
      if (admission.ok) {
        const trust = admission.trust ?? null;
        const holder = this.holderOtherThan(p, ev.jid);
        if (holder) {
          const same = holder.trust !== null && trust !== null && holder.trust.fingerprint === trust.fingerprint &&
            bareJid(holder.jid) === bareJid(ev.jid);
          if (same) {
            // The same node under another resource (a new session): the new presence takes over.
            p.claims.delete(holder.jid);
            this.jidToUid.delete(holder.jid);
          } else {
            admission = { ok: false, reason: 'uid_taken', detail: `held by ${holder.jid}` };
          }
        }
      }
      if (admission.ok) {
        const c = p.claims.get(ev.jid);
        p.claims.set(ev.jid, { jid: ev.jid, overlay: ev.overlay, sinceMs: c?.sinceMs ?? now, lastMs: now, trust: admission.trust ?? null, input: { ...ev } });
        this.jidToUid.set(ev.jid, ev.uid);
        this.refused.delete(ev.jid);
      } else {
        p.claims.delete(ev.jid);
        this.jidToUid.delete(ev.jid);
        this.refused.delete(ev.jid);
        this.refused.set(ev.jid, { uid: ev.uid, reason: admission.reason, input: { ...ev } });
        if (this.refused.size > (this.opts.maxRefused ?? 4096)) this.refused.delete(this.refused.keys().next().value as string);
        this.opts.onRefused?.(ev, admission.reason, admission.detail);
      }
    } else {
      p.claims.delete(ev.jid);
      if (this.jidToUid.get(ev.jid) === ev.uid) this.jidToUid.delete(ev.jid);
      this.refused.delete(ev.jid);
    }
    changes.push(this.recompute(p, now));
    if (p.status === 'absent' && ev.uid !== this.opts.localUid) {
      // The holder left: a presence refused because it held the UID is judged again.
      const waiting = [...this.refused.values()].find((r) => r.uid === ev.uid && r.reason === 'uid_taken' && r.input.jid !== ev.jid);
      if (waiting) changes.push(...this.apply(waiting.input, now));
    }
    return changes;
  }

  /** An effective claim on `p` by another JID than `jid` (the UID's holder), if any. */
  private holderOtherThan(p: Peer, jid: string): Claim | undefined {
    for (const c of this.effectiveClaims(p).values()) if (c.jid !== jid) return c;
    return undefined;
  }

  /**
   * Judges again the presences (admitted claims and refused ones) that `pred` selects: the roster, a
   * pin or a certificate's validity changed. Returns the status changes.
   */
  rejudge(pred: (input: PresenceInput, claim: Claim | null) => boolean, now: number): PresenceChange[] {
    const again: PresenceInput[] = [];
    for (const p of this.peers.values()) for (const c of p.claims.values()) if (pred(c.input, c)) again.push(c.input);
    for (const r of this.refused.values()) if (pred(r.input, null)) again.push(r.input);
    const changes: PresenceChange[] = [];
    for (const ev of again) changes.push(...this.apply({ ...ev, online: true }, now));
    return changes.filter((c) => c.before !== c.after);
  }

  /** The key admission trusts for the member `uid` (null: not a member, or no key checked). */
  trustOf(uid: Uid): ClaimTrust | null {
    const p = this.peers.get(uid);
    if (p?.status !== 'member' || p.jid === null) return null;
    return p.claims.get(p.jid)?.trust ?? null;
  }

  /**
   * Reconciles with the datapath's list of online peers (get_state): claims missing from it for longer
   * than `graceMs` go offline; listed ones not known yet come online. Returns the status changes.
   */
  syncOnline(
    list: readonly { uid: Uid; jid: string; overlay: string | null; cert?: string | undefined; member_cert?: string | undefined }[],
    now: number,
    graceMs: number,
    removeMissing = true,
  ): PresenceChange[] {
    const changes: PresenceChange[] = [];
    const listed = new Set(list.map((e) => `${e.uid} ${e.jid}`));
    for (const p of removeMissing ? this.peers.values() : []) {
      for (const c of [...p.claims.values()]) {
        if (!listed.has(`${p.uid} ${c.jid}`) && now - c.lastMs > graceMs) {
          changes.push(...this.apply({ uid: p.uid, jid: c.jid, overlay: c.overlay, online: false }, now));
        }
      }
    }
    for (const e of list) {
      const p = this.peers.get(e.uid);
      const claim = p?.claims.get(e.jid);
      if (claim) claim.lastMs = Math.max(claim.lastMs, now);
      else if (!this.refused.has(e.jid) || this.refused.get(e.jid)!.uid !== e.uid) {
        changes.push(...this.apply({ uid: e.uid, jid: e.jid, overlay: e.overlay, cert: e.cert, member_cert: e.member_cert, online: true }, now));
      }
    }
    return changes.filter((c) => c.before !== c.after);
  }

  /** Marks every presence offline (e.g. the XMPP account changed); returns the status changes. */
  clear(now: number): PresenceChange[] {
    const changes: PresenceChange[] = [];
    for (const p of this.peers.values()) {
      p.claims.clear();
      changes.push(this.recompute(p, now));
    }
    this.jidToUid.clear();
    this.refused.clear();
    return changes.filter((c) => c.before !== c.after);
  }

  /** Is a signal from (uid, full jid) from a member? */
  verifySender(uid: Uid, jid: string): SenderCheck {
    const p = this.peers.get(uid);
    if (p?.status === 'member') return p.jid === jid ? { ok: true, peer: p } : { ok: false, reason: 'jid_mismatch' };
    if (p?.status === 'conflict') return { ok: false, reason: 'address_conflict' };
    if (this.refused.has(jid)) return { ok: false, reason: 'not_admitted' };
    return { ok: false, reason: 'unknown_sender' };
  }

  /** Forgets an absent peer's record (its verified address and demand too). */
  forget(uid: Uid): void {
    const p = this.peers.get(uid);
    if (p && p.claims.size === 0) this.peers.delete(uid);
  }

  /** The record of `uid`, made (absent) if there is none: to note a verified address. */
  record(uid: Uid): Peer {
    return this.ensure(uid);
  }

  private ensure(uid: Uid): Peer {
    let p = this.peers.get(uid);
    if (!p) {
      p = { uid, claims: new Map(), status: 'absent', jid: null, onlineSinceMs: null, ip4: null, demandMs: null };
      this.peers.set(uid, p);
    }
    return p;
  }

  /** Claims that count: never our own JID; on our own UID, nothing until we know our JID. */
  private effectiveClaims(p: Peer): Map<string, Claim> {
    if (p.uid === this.opts.localUid && this.ownJid === null) return new Map();
    if (this.ownJid === null || !p.claims.has(this.ownJid)) return p.claims;
    const m = new Map(p.claims);
    m.delete(this.ownJid);
    return m;
  }

  private recompute(p: Peer, _now: number): PresenceChange {
    const before = p.status;
    const claims = this.effectiveClaims(p);
    if (p.uid === this.opts.localUid) {
      p.status = claims.size > 0 ? 'conflict' : 'absent';
      p.jid = null;
      p.onlineSinceMs = null;
    } else if (claims.size === 0) {
      p.status = 'absent';
      p.jid = null;
      p.onlineSinceMs = null;
    } else if (claims.size === 1) {
      const c = claims.values().next().value as Claim;
      if (p.status !== 'member' || p.jid !== c.jid) p.onlineSinceMs = c.sinceMs;
      p.status = 'member';
      p.jid = c.jid;
    } else {
      p.status = 'conflict';
      p.jid = null;
      p.onlineSinceMs = null;
    }
    return { uid: p.uid, before, after: p.status };
  }
}
