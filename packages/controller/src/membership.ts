/**
 * Admission beyond the roster gate (docs/security.md, "Membership: who gets in"): the `members`
 * filter (roster groups, JIDs, domains), the peer's key (a node certificate in its presence, checked
 * against a membership certificate when the network has a CA, else pinned on first use), and what the
 * key grants. The OverlayController asks it about every presence its policy admits.
 */
import { readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import {
  TrustAcceptRequest,
  TrustPins,
  pinKey,
  pinsFileName,
  trustAcceptPrefix,
  type MembersConfig,
  type MemberCertPayload,
  type RosterItem,
  type TrustController,
  type Uid,
} from '@tincan/protocol';
import type { Clock } from './clock.js';
import { certFingerprint, decodeMemberCert, verifyMemberCert } from './member-cert.js';
import { PersistentJsonFile, readStateFileSync } from './state-file.js';

/** What an admitted presence's key is trusted with. */
export interface ClaimTrust {
  /** The node certificate (base64 DER) and its SHA-256 fingerprint. */
  cert: string;
  fingerprint: string;
  /** With a CA: the subnets its membership certificate grants, and when it expires. */
  subnets: string[] | null;
  expiresMs: number | null;
}

export type MembershipVerdict =
  | { ok: true; trust: ClaimTrust }
  | { ok: false; reason: string; detail: string };

export interface MembershipOptions {
  ctl: TrustController;
  /** Where the pins live; null keeps them in memory (tests). */
  stateDir: string | null;
  /** Our own bare JID: our own account always passes the members filter. */
  ownBare: string;
  members?: MembersConfig | undefined;
  /** The network's membership CA, if it has one. */
  ca: { key: KeyObject; network: string } | null;
  clock: Clock;
  log: Logger;
}

/** Pins kept in all and per account (a member announcing ever new UIDs), and refused key changes remembered. */
const MAX_PINS = 65_536;
const MAX_PINS_PER_ACCOUNT = 1024;
const MAX_PENDING = 256;
/** A membership certificate expiring within this long is reported (status, log). */
export const EXPIRY_WARNING_MS = 7 * 86_400_000;

export interface MembershipStatus {
  mode: 'ca' | 'pinning';
  members: { groups: string[]; jids: string[]; domains: string[] } | null;
  roster_known: boolean;
  pinned: number;
  pending_keys: { jid: string; uid: Uid; fingerprint: string; pinned: string | null; first_ms: number; last_ms: number }[];
  pins_file: { path: string | null; last_error: string | null };
}

/** The bare JID of a JID, lower-cased as the datapath reports roster items: "bob@example.org". */
export function bareJid(jid: string): string {
  const slash = jid.indexOf('/');
  return (slash >= 0 ? jid.slice(0, slash) : jid).toLowerCase();
}

export class Membership {
  readonly mode: 'ca' | 'pinning';
  private readonly roster = new Map<string, { subscription: string; groups: string[] }>();
  private rosterKnown = false;
  private readonly pins: TrustPins;
  private readonly file: PersistentJsonFile | null;
  private readonly filter: { groups: Set<string>; jids: Set<string>; domains: Set<string> } | null;

  constructor(private readonly o: MembershipOptions) {
    this.mode = o.ca ? 'ca' : 'pinning';
    const m = o.members;
    this.filter =
      m && m.groups.length + m.jids.length + m.domains.length > 0
        ? { groups: new Set(m.groups), jids: new Set(m.jids.map((j) => j.toLowerCase())), domains: new Set(m.domains.map((d) => d.toLowerCase())) }
        : null;
    const path = o.stateDir === null ? null : join(o.stateDir, pinsFileName(o.ctl));
    const loaded =
      path === null
        ? null
        : readStateFileSync(path, (data) => {
            const r = TrustPins.safeParse(data);
            return r.success ? { ok: true, value: r.data } : { ok: false, problem: r.error.issues[0]?.message ?? 'invalid' };
          });
    this.pins = loaded ?? { version: 1, pins: {}, pending: {} };
    this.file = path === null ? null : new PersistentJsonFile(path, o.clock, o.log, { label: 'key pins file' });
  }

  /** Whether the members filter narrows anything (roster groups need the roster). */
  get filtering(): boolean {
    return this.filter !== null;
  }

  get ca(): { key: KeyObject; network: string } | null {
    return this.o.ca;
  }

  /** A roster event (or get_roster): the groups the members filter looks at. Returns true if anything changed. */
  applyRoster(items: readonly RosterItem[], full: boolean): boolean {
    const before = JSON.stringify([...this.roster]);
    if (full) this.roster.clear();
    for (const it of items) {
      const bare = it.jid.toLowerCase();
      if (it.subscription === 'remove') this.roster.delete(bare);
      else this.roster.set(bare, { subscription: it.subscription, groups: [...it.groups] });
    }
    if (full) this.rosterKnown = true;
    return JSON.stringify([...this.roster]) !== before;
  }

  /** The members filter: our own account, or any listed group, JID or domain. */
  private isMember(bare: string): boolean {
    const f = this.filter;
    if (f === null || bare === this.o.ownBare) return true;
    if (f.jids.has(bare)) return true;
    if (f.domains.has(bare.slice(bare.indexOf('@') + 1))) return true;
    const item = this.roster.get(bare);
    return item !== undefined && item.groups.some((g) => f.groups.has(g));
  }

  /**
   * Judges a presence the policy admitted (in the order of docs/security.md): members filter, then
   * the key. Never throws. A refused key change is recorded for `tincanctl trust accept`.
   */
  admit(p: { uid: Uid; jid: string; cert?: string | undefined; member_cert?: string | undefined }): MembershipVerdict {
    const bare = bareJid(p.jid);
    if (!this.isMember(bare)) {
      return { ok: false, reason: 'not_member', detail: this.rosterKnown || this.filter!.groups.size === 0 ? `${bare} is not in members` : 'roster not known yet' };
    }
    if (p.cert === undefined) return { ok: false, reason: 'no_cert', detail: 'the presence carries no node certificate' };
    const fingerprint = certFingerprint(p.cert);
    if (this.o.ca) {
      const now = this.o.clock.now();
      const v = verifyMemberCert(this.o.ca.key, p.member_cert, { network: this.o.ca.network, bareJid: bare, fingerprint, uid: p.uid, nowS: Math.floor(now / 1000) });
      if (!v.ok) return { ok: false, reason: v.problem, detail: v.detail };
      return { ok: true, trust: { cert: p.cert, fingerprint, subnets: v.payload.subnets, expiresMs: v.payload.exp * 1000 } };
    }
    const key = pinKey(bare, p.uid);
    const pin = this.pins.pins[key];
    const trust: ClaimTrust = { cert: p.cert, fingerprint, subnets: null, expiresMs: null };
    if (pin === undefined) {
      const keys = Object.keys(this.pins.pins);
      if (keys.length >= MAX_PINS) return { ok: false, reason: 'pins_full', detail: `${MAX_PINS} keys pinned already` };
      const prefix = `${bare} `;
      if (keys.filter((k) => k.startsWith(prefix)).length >= MAX_PINS_PER_ACCOUNT) {
        return { ok: false, reason: 'pins_full', detail: `${MAX_PINS_PER_ACCOUNT} keys pinned for ${bare} already` };
      }
      this.pins.pins[key] = { fingerprint, since_ms: this.o.clock.now() };
      delete this.pins.pending[key];
      this.o.log.info({ jid: bare, peer: p.uid.slice(0, 12), fingerprint }, 'first key seen for this member: pinned');
      this.save();
      return { ok: true, trust };
    }
    if (pin.fingerprint === fingerprint) {
      if (this.pins.pending[key]) {
        delete this.pins.pending[key];
        this.save();
      }
      return { ok: true, trust };
    }
    const now = this.o.clock.now();
    const prev = this.pins.pending[key];
    if (prev?.fingerprint !== fingerprint || prev.jid !== p.jid) {
      delete this.pins.pending[key];
      this.pins.pending[key] = { fingerprint, jid: p.jid, first_ms: prev?.fingerprint === fingerprint ? prev.first_ms : now, last_ms: now };
      const keys = Object.keys(this.pins.pending);
      if (keys.length > MAX_PENDING) delete this.pins.pending[keys[0]!];
      this.save();
    } else {
      prev.last_ms = now;
    }
    return {
      ok: false,
      reason: 'key_changed',
      detail: `pinned ${pin.fingerprint}, presented ${fingerprint}: \`tincanctl trust accept ${p.uid.slice(0, 12)}\` if the change is expected`,
    };
  }

  /** Accepts a refused key change (the pending fingerprint must match); true if a pin changed. */
  accept(key: string, fingerprint: string): boolean {
    const pending = this.pins.pending[key];
    if (!pending || pending.fingerprint !== fingerprint) {
      this.o.log.warn({ key, fingerprint }, 'trust accept: no such refused key change (ignored)');
      return false;
    }
    this.pins.pins[key] = { fingerprint, since_ms: this.o.clock.now() };
    delete this.pins.pending[key];
    this.o.log.warn({ key, fingerprint }, 'key change accepted by the operator: new key pinned');
    this.save();
    return true;
  }

  /**
   * Applies the accept requests tincanctl left in the state directory (each file once, then deleted).
   * Returns the pin keys whose key changed. A file that is not a request is deleted with a warning.
   */
  takeAcceptRequests(): string[] {
    if (this.o.stateDir === null) return [];
    const prefix = trustAcceptPrefix(this.o.ctl);
    let names: string[];
    try {
      names = readdirSync(this.o.stateDir).filter((n) => n.startsWith(prefix) && n.endsWith('.json'));
    } catch {
      return [];
    }
    const changed: string[] = [];
    for (const name of names.slice(0, 64)) {
      const path = join(this.o.stateDir, name);
      let req: TrustAcceptRequest | null = null;
      try {
        const r = TrustAcceptRequest.safeParse(JSON.parse(readFileSync(path, 'utf8')));
        if (r.success) req = r.data;
      } catch {
        req = null;
      }
      try {
        unlinkSync(path);
      } catch {
        // gone already (another controller on the same directory took it)
      }
      if (req === null) {
        this.o.log.warn({ path }, 'not a trust accept request: deleted');
        continue;
      }
      for (const a of req.accept) if (this.accept(a.key, a.fingerprint)) changed.push(a.key);
    }
    return changed;
  }

  status(): MembershipStatus {
    const f = this.filter;
    return {
      mode: this.mode,
      members: f ? { groups: [...f.groups], jids: [...f.jids], domains: [...f.domains] } : null,
      roster_known: this.rosterKnown,
      pinned: Object.keys(this.pins.pins).length,
      pending_keys: Object.entries(this.pins.pending).map(([key, p]) => {
        const [jid = '', uid = ''] = key.split(' ');
        return { jid, uid, fingerprint: p.fingerprint, pinned: this.pins.pins[key]?.fingerprint ?? null, first_ms: p.first_ms, last_ms: p.last_ms };
      }),
      pins_file: { path: this.file?.path ?? null, last_error: this.file?.lastError ?? null },
    };
  }

  async flush(): Promise<void> {
    await this.file?.flush();
  }

  private save(): void {
    this.file?.update(() => this.pins);
  }
}

/** Our own membership certificate, as the status file reports it. */
export interface OwnMemberCertStatus {
  expires_ms: number | null;
  subnets: string[];
  /** What is wrong with it (peers will refuse us), or null. */
  problem: string | null;
  /** Expires within EXPIRY_WARNING_MS: renew it. */
  warning: string | null;
}

/** Checks our own membership certificate as a peer would, for the status file and the log. */
export function ownMemberCertStatus(
  ca: { key: KeyObject; network: string },
  text: string | null,
  own: { bareJid: string; fingerprint: string | null; uid: Uid },
  nowMs: number,
): OwnMemberCertStatus {
  if (text === null) return { expires_ms: null, subnets: [], problem: 'no membership certificate (membership.cert_file)', warning: null };
  const decoded = decodeMemberCert(text);
  const payload: MemberCertPayload | null = decoded.ok ? decoded.payload : null;
  let problem: string | null = null;
  if (own.fingerprint !== null) {
    const v = verifyMemberCert(ca.key, text, { network: ca.network, bareJid: own.bareJid, fingerprint: own.fingerprint, uid: own.uid, nowS: Math.floor(nowMs / 1000) });
    if (!v.ok) problem = `${v.problem}: ${v.detail}`;
  } else if (!decoded.ok) {
    problem = `${decoded.problem}: ${decoded.detail}`;
  }
  const exp = payload ? payload.exp * 1000 : null;
  const left = exp === null ? null : exp - nowMs;
  const warning =
    left !== null && left > 0 && left <= EXPIRY_WARNING_MS ? `expires in ${Math.max(1, Math.round(left / 3_600_000))} h (${new Date(exp!).toISOString()}): renew it` : null;
  return { expires_ms: exp, subnets: payload?.subnets ?? [], problem, warning };
}
