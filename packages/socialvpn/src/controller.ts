import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import {
  SOCIAL_OVERLAY,
  SocialSignalExtras,
  UID_BYTES,
  ip6FromUid,
  numberToIp4,
  type EventOf,
  type LinkInfo,
  type Uid,
} from '@tincan/protocol';
import {
  AddressPool,
  DEFAULT_OVERLAY_TUNING,
  Membership,
  OverlayController,
  PersistentJsonFile,
  Subnet4,
  TrafficProfile,
  ZERO_REPAIR_COUNTERS,
  errorMessage,
  rpcErrorCode,
  systemClock,
  type Admission,
  type Clock,
  type DatapathSupervisor,
  type OverlayHostOptions,
  type OverlayPolicy,
  type OverlayTuning,
  type Peer,
  type PeerTable,
  type PresenceChange,
  type RefusalCounts,
  type Signaling,
} from '@tincan/controller';
import type { SocialVpnSettings } from './config.js';
import { Roster, bareJid } from './roster.js';
import { SocialLinkPolicy } from './social-policy.js';
import { loadSocialState, restoreSocialState, socialStateSnapshot, type Mapping, type SocialStateParts } from './state.js';
import type { SocialVpnCounters, SocialVpnMappingStatus, SocialVpnStatus } from './status.js';

export type { SocialVpnCounters, SocialVpnMappingStatus, SocialVpnStatus } from './status.js';

export type SocialVpnTuning = OverlayTuning;
export const DEFAULT_TUNING: SocialVpnTuning = DEFAULT_OVERLAY_TUNING;
/** Why signals were refused, by reason (not_friend, not_social, uid_of_other_jid, unknown_sender, …). */
export type { RefusalCounts };

/** `{config, client or connect, logger, clock, tuning, stateFile, statusFile (default STATE_DIR/socialvpn-status.json), random}`. */
export interface SocialVpnControllerOptions extends OverlayHostOptions {
  config: SocialVpnSettings;
  /** The state file: default `STATE_DIR/socialvpn-state.json`; null keeps the state in memory only. */
  stateFile?: string | null;
}

/** last_seen_ms of an online device is refreshed (and persisted) at most this often. */
const LAST_SEEN_STEP_MS = 600_000;
export const STATUS_FILE = 'socialvpn-status.json';
export const STATE_FILE = 'socialvpn-state.json';

/**
 * tincan-socialvpn's policy (paper §4.3, "social" VPN): the user's own private subnet; the peers are
 * the TinCan devices of the XMPP contacts with a mutual subscription, each mapped to the next free
 * address of that subnet (stable across restarts, kept in socialvpn-state.json) and translated by the
 * datapath on receive; links follow the "social profile": proactive with the devices this node talks
 * to often, on demand for the others. The node UID is random (not derived from an address: every
 * user's subnet is private) and persisted. Everything goes through the datapath RPC, and either side
 * can restart without the other tearing links down.
 */
export class SocialVpnController {
  readonly uid: Uid;
  readonly ip4: string;
  readonly ip6: string;
  readonly subnet: Subnet4;
  readonly core: OverlayController<SocialVpnCounters>;
  readonly peers: PeerTable;
  readonly signaling: Signaling;
  readonly supervisor: DatapathSupervisor;
  readonly roster = new Roster();
  readonly profile: TrafficProfile;
  readonly counters: SocialVpnCounters = {
    ...ZERO_REPAIR_COUNTERS,
    signals_received: 0, signals_malformed: 0, signals_unknown_type: 0, signals_bounced: 0, signals_refused: 0,
    signals_duplicate: 0, signals_stale: 0, glare_kept: 0, glare_yielded: 0, con_reject_sent: 0, offers: 0,
    offers_proactive: 0, links_up: 0, link_failures: 0, links_adopted: 0, links_trimmed_idle: 0,
    links_trimmed_lru: 0, links_trimmed_departed: 0, links_trimmed_unfriended: 0, links_trimmed_conflict: 0,
    orphan_links_trimmed: 0, uid_conflicts: 0, roster_updates: 0, mappings_created: 0, mappings_removed: 0,
    mappings_evicted: 0, address_pool_exhausted: 0, unmapped_packets: 0, unmapped_malformed: 0,
    unmapped_outside_subnet: 0, unmapped_not_friend: 0, unmapped_offline: 0, transit_dropped: 0,
    packets_reinjected: 0, datapath_restarts: 0,
  };
  readonly refusals: RefusalCounts;

  private readonly config: SocialVpnSettings;
  private readonly tuning: SocialVpnTuning;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly ownBare: string;
  private readonly pool: AddressPool;
  /** Friend device UID → its address in our subnet and owner (persisted). */
  private readonly mappings = new Map<Uid, Mapping>();
  /** The address the datapath has mapped to each UID (set_remote_ip sent). */
  private readonly dpMapped = new Map<Uid, string>();
  /** Online TinCan presences that admission refused (full JID → …): re-judged when the roster changes. */
  private readonly refusedPresences = new Map<string, { uid: Uid; overlay: string | null; reason: string }>();
  /** The social profile: which links are proactive, which the friend keeps. */
  private readonly links: SocialLinkPolicy;
  private readonly stateFile: PersistentJsonFile | null;
  private stateIsNew = false;
  /** Some link's traffic was counted in the get_state snapshot being applied. */
  private trafficSeen = false;

  constructor(opts: SocialVpnControllerOptions) {
    this.config = opts.config;
    this.tuning = { ...DEFAULT_TUNING, ...opts.tuning };
    this.clock = opts.clock ?? systemClock;
    this.log = opts.logger.child({ component: 'socialvpn' });
    this.ownBare = bareJid(opts.config.xmpp.jid);
    const [net = '', len = ''] = opts.config.subnet.split('/');
    const probe = new Subnet4(`${net}/${len}`);
    this.ip4 = opts.config.address ?? numberToIp4(probe.network + 1);
    this.subnet = new Subnet4(`${this.ip4}/${len}`);

    // The persisted state: UID, friends' addresses, roster, traffic history.
    const statePath = opts.stateFile === undefined ? join(opts.config.state_dir, STATE_FILE) : opts.stateFile;
    const saved = statePath === null ? null : loadSocialState(statePath);
    this.uid = saved?.uid ?? randomBytes(UID_BYTES).toString('hex');
    const sp = opts.config.social_profile;
    this.profile = new TrafficProfile(
      { halfLifeDays: sp.half_life_days, activeDayPackets: sp.active_day_packets },
      Object.fromEntries(Object.entries(saved?.traffic ?? {}).filter(([uid]) => uid !== this.uid)),
    );
    this.stateIsNew = saved === null;
    this.pool = new AddressPool(this.subnet, saved?.next_ip4);
    if (saved) restoreSocialState(saved, this.stateParts(), this.log);
    this.ip6 = ip6FromUid(this.uid);
    this.links = new SocialLinkPolicy({
      profile: this.profile,
      proactiveLinks: sp.proactive_links,
      minScore: sp.min_score,
      maxLinks: opts.config.max_links,
      idleTimeoutMs: opts.config.idle_timeout_s * 1000,
      demandWindowMs: this.tuning.demandWindowMs,
      proactiveWaitMs: this.tuning.proactiveWaitMs,
      log: this.log,
      jidOf: (uid) => this.mappings.get(uid)?.jid,
      online: (uid) => !!this.peers.member(uid),
    });
    this.stateFile = statePath === null ? null : new PersistentJsonFile(statePath, this.clock, this.log);

    const statusPath = opts.statusFile === undefined ? join(opts.config.state_dir, STATUS_FILE) : opts.statusFile;
    const membership = new Membership({
      ctl: 'socialvpn',
      stateDir: opts.trustDir !== undefined ? opts.trustDir : statePath === null ? null : opts.config.state_dir,
      ownBare: this.ownBare,
      members: opts.config.members,
      ca: null,
      clock: this.clock,
      log: this.log,
    });
    this.core = new OverlayController({
      membership,
      uid: this.uid,
      subnet: this.subnet,
      settings: opts.config,
      policy: this.overlayPolicy(),
      counters: this.counters,
      tuning: this.tuning,
      host: opts,
      log: this.log,
      clock: this.clock,
      statusPath,
      status: () => this.status(),
    });
    ({ peers: this.peers, signaling: this.signaling, supervisor: this.supervisor, refusals: this.refusals } = this.core);
  }

  /** Persists the state if it is new, attaches to the datapath (waiting for it) and starts the policy. */
  async start(): Promise<void> {
    this.log.info(
      {
        uid: this.uid, ip4: `${this.ip4}/${this.subnet.prefix}`, ip6: this.ip6, jid: this.config.xmpp.jid,
        friends_devices: this.mappings.size, new_identity: this.stateIsNew || undefined,
      },
      'starting',
    );
    if (this.stateFile) {
      // The UID must be on disk before the datapath's vNIC is bound to it.
      this.saveState('soon');
      await this.stateFile.flush();
      if (this.stateFile.lastError !== null) {
        throw new Error(`cannot write ${this.stateFile.path}: ${this.stateFile.lastError} (the node UID and friends' addresses are kept there)`);
      }
    }
    await this.core.start();
  }

  /** Stops the controller; links stay up in the datapath, and a restarted controller adopts them. */
  async stop(): Promise<void> {
    if (this.core.stopped) return;
    this.saveState('soon');
    await Promise.all([this.core.stop(), this.stateFile?.flush()]);
  }

  /** Writes the state file now (tests, tools); resolves when it is on disk. */
  async flushState(): Promise<void> {
    this.saveState('soon');
    await this.stateFile?.flush();
  }

  /** The hooks the core calls: SocialVPN's decisions. */
  private overlayPolicy(): OverlayPolicy {
    return {
      overlay: SOCIAL_OVERLAY,
      texts: {
        conflictLocal: 'UID conflict: another device announces our own node UID (a copied state directory?)',
        conflictRemote: 'UID conflict: two devices announce the same UID; neither is linked until one leaves',
        conflictResolved: 'UID conflict resolved',
        conflictTrim: 'UID conflict',
        memberLeft: 'friend device offline',
        departedTrim: 'the device left',
        roomForPeer: 'room for a link a friend asked for (least recently used)',
      },
      admit: (p) => this.admit(p),
      // ip4: our own address in our own subnet (the schema wants one; the friend ignores it).
      identity: (uid) => ({ overlay: SOCIAL_OVERLAY, ip4: this.ip4, proactive: this.links.isProactive(uid) }),
      prepare: (uid) => this.mapInDatapath(uid),
      datapathRestarted: () => {
        // Its links, mappings and XMPP session are gone; the roster and presences come again at login.
        this.dpMapped.clear();
        for (const uid of [...this.links.peerKeeps]) this.setPeerKeeps(uid, false);
        this.refusedPresences.clear();
      },
      foreignVnic: (node) =>
        `the datapath's vNIC belongs to node ${node.uid} (${node.ip4 ?? '?'}), not to this SocialVPN node ${this.uid} ` +
        '(another controller configured it, or socialvpn-state.json was replaced): restart the datapath',
      localIp4: () => `${this.ip4}/${this.subnet.prefix}`,
      syncedPresences: (state) => {
        const listed = new Set(state.peers.map((p) => `${p.uid} ${p.jid}`));
        for (const [jid, r] of this.refusedPresences) if (!listed.has(`${r.uid} ${jid}`)) this.refusedPresences.delete(jid);
      },
      adoptable: (link) => this.adoptable(link),
      adopted: (link) => this.adopted(link),
      observeLink: (link, now) => {
        if (this.observeTraffic(link, now)) this.trafficSeen = true;
      },
      syncedLinks: (now) => this.syncedLinks(now),
      idleVictims: (now) => this.links.idleVictims(this.core.linkActivity(), now),
      lruVictims: (room) => this.links.lruVictims(this.core.linkActivity(), room),
      beforeReconcile: () => this.refreshProactive(),
      presenceEvent: (e) => {
        if (!e.online && this.refusedPresences.get(e.jid)?.uid === e.uid) this.refusedPresences.delete(e.jid);
      },
      roster: (e) => this.onRoster(e),
      conflicted: () => void this.counters.uid_conflicts++,
      joined: (uid) => this.joined(uid),
      left: (uid) => {
        const m = this.mappings.get(uid);
        if (m) m.last_seen_ms = this.clock.now();
        this.unmapInDatapath(uid);
      },
      presenceChanged: (changes) => this.presenceChanged(changes),
      screen: (e) => {
        // Only a friend (mutual subscription), from the full JID whose presence announced that UID.
        if (!this.isTrusted(bareJid(e.jid))) return 'not_friend';
        const refused = this.refusedPresences.get(e.jid);
        return refused && refused.uid === e.uid ? refused.reason : null; // not_social, uid_of_other_jid
      },
      checkOffer: (_peer, uid) =>
        this.mappings.has(uid) ? null : { refusal: 'no_address', detail: `no free address in ${this.subnet.cidr}`, reject: 'no_address' },
      signalHandled: (uid, type, o, data) => {
        if (type === 'con_resp' ? o !== 'applied' : o !== 'answered' && o !== 'glare_yielded') return;
        const extras = SocialSignalExtras.safeParse(data);
        this.setPeerKeeps(uid, extras.success && extras.data.proactive === true);
      },
      ip4Owner: (dst) => {
        const uid = this.pool.ownerOf(dst);
        if (uid === undefined) this.counters.unmapped_not_friend++; // an address no friend device has
        return uid ?? null;
      },
      ip6Owner: (host) => {
        for (const uid of this.mappings.keys()) if (uid.startsWith(host)) return uid;
        this.counters.unmapped_not_friend++;
        return null;
      },
      demandPeer: (uid) => this.demandPeer(uid),
      ensureMapped: (uid) => {
        if (this.mappings.has(uid) && this.dpMapped.get(uid) === undefined) void this.mapInDatapath(uid).catch(() => undefined);
      },
      offerDelay: (peer, now, readyAt) => this.offerDelay(peer, now, readyAt),
      offered: (peer, now) => {
        if (!this.links.demanded(peer, now)) this.counters.offers_proactive++;
      },
      closed: (uid) => {
        this.setPeerKeeps(uid, false);
        // The mapping stays while the device is online: its next packets still name it (dst UID).
        if (!this.peers.member(uid)) this.unmapInDatapath(uid);
      },
    };
  }

  /** The address of a friend's device in our subnet (null if it has none). */
  addressOf(uid: Uid): string | null {
    return this.mappings.get(uid)?.ip4 ?? null;
  }

  /** Whether the social profile links this device proactively now. */
  isProactive(uid: Uid): boolean {
    return this.links.isProactive(uid);
  }

  // --- state file -----------------------------------------------------------------------------------

  private stateParts(): SocialStateParts {
    return { uid: this.uid, subnet: this.subnet, ip4: this.ip4, pool: this.pool, mappings: this.mappings, roster: this.roster, profile: this.profile };
  }

  private saveState(urgency: 'soon' | 'later'): void {
    this.stateFile?.update(() => socialStateSnapshot(this.stateParts()), urgency);
  }

  // --- get_state ------------------------------------------------------------------------------------

  /** After a snapshot's links: last-seen times, traffic history pruning, the state file. */
  private syncedLinks(now: number): void {
    let seen = false;
    for (const p of this.peers.members()) {
      const m = this.mappings.get(p.uid);
      if (!m) continue;
      if (now - m.last_seen_ms >= LAST_SEEN_STEP_MS) {
        m.last_seen_ms = now;
        seen = true;
      }
      if (this.dpMapped.get(p.uid) !== m.ip4) void this.mapInDatapath(p.uid).catch(() => undefined);
    }
    let traffic = this.trafficSeen;
    this.trafficSeen = false;
    if (this.profile.pruneAll(now)) traffic = true;
    if (traffic || seen) this.saveState('later'); // history and last-seen times: no hurry
  }

  /** Counts a link's new traffic into its device's history; true if there was any. */
  private observeTraffic(link: LinkInfo, now: number): boolean {
    if (!this.mappings.has(link.uid)) return false;
    const st = link.stats;
    return this.profile.observe(
      link.uid,
      { created_ms: link.created_ms, bytes: st.bytes_in + st.bytes_out, packets: st.packets_in + st.packets_out },
      now,
    );
  }

  /**
   * An up link found in the datapath (controller restart) may be adopted: only a device we have an
   * address for, owned by someone who is still a friend, and (if the datapath knows the link's JID)
   * by that very JID. Anything else is trimmed.
   */
  private adoptable(link: LinkInfo): Record<string, unknown> | null {
    const m = this.mappings.get(link.uid);
    if (!m || !this.isTrusted(m.jid)) return null;
    if (link.jid !== null && bareJid(link.jid) !== m.jid) return null;
    return { jid: m.jid, ip4: m.ip4 };
  }

  private adopted(link: LinkInfo): void {
    const m = this.mappings.get(link.uid)!;
    if (m.peer_keeps) this.links.peerKeeps.add(link.uid);
    const ip6 = ip6FromUid(link.uid);
    if (link.ip4.includes(m.ip4) && link.ip6.includes(ip6)) {
      this.dpMapped.set(link.uid, m.ip4);
    } else {
      void this.mapInDatapath(link.uid).catch((err: unknown) => {
        this.log.warn({ peer: link.uid.slice(0, 12), err: errorMessage(err) }, 'cannot map an adopted link');
      });
    }
  }

  // --- trust: roster and admission ----------------------------------------------------------------

  /** A friend (mutual subscription), or this account's own other devices (own_devices). */
  private isTrusted(bare: string): boolean {
    return this.roster.isFriend(bare) || (this.config.own_devices && bare === this.ownBare);
  }

  /** Who may be a peer: a SocialVPN device of a friend, announcing a UID no other friend owns. */
  private admit(p: { uid: Uid; jid: string; overlay: string | null }): Admission {
    const reason = this.admissionProblem(p);
    if (reason === null) {
      this.refusedPresences.delete(p.jid);
      return { ok: true };
    }
    this.refusedPresences.delete(p.jid);
    this.refusedPresences.set(p.jid, { uid: p.uid, overlay: p.overlay, reason });
    if (this.refusedPresences.size > 4096) this.refusedPresences.delete(this.refusedPresences.keys().next().value as string);
    return { ok: false, reason };
  }

  private admissionProblem(p: { uid: Uid; jid: string; overlay: string | null }): string | null {
    if (p.overlay !== SOCIAL_OVERLAY) return 'not_social';
    const bare = bareJid(p.jid);
    if (!this.isTrusted(bare)) return 'not_friend';
    const m = this.mappings.get(p.uid);
    if (m && m.jid !== bare) return 'uid_of_other_jid';
    return null;
  }

  private onRoster(e: EventOf<'roster'>): void {
    const now = this.clock.now();
    this.counters.roster_updates++;
    const { added, removed } = this.roster.apply(e, now);
    this.log.info(
      { full: e.full, items: e.items.length, friends: this.roster.mutual().length, added: added.length ? added : undefined, removed: removed.length ? removed : undefined },
      e.full ? 'roster received' : 'roster changed',
    );
    // A contact who is no longer a friend loses links and addresses at once; sweep every mapping, so
    // that a removal missed while the controller was down is caught by the next full roster.
    const gone = new Set<string>(removed);
    for (const m of this.mappings.values()) if (!this.isTrusted(m.jid)) gone.add(m.jid);
    for (const bare of gone) if (!this.isTrusted(bare)) this.unfriend(bare);
    for (const bare of new Set([...added, ...gone])) this.readmit(bare);
    this.saveState('soon');
    this.refreshProactive();
    this.core.reconcileAll();
    this.core.markDirty();
  }

  /** `bare` is no longer a friend: trim its devices' links, unmap and forget their addresses. */
  private unfriend(bare: string): void {
    for (const [uid, m] of [...this.mappings]) {
      if (m.jid !== bare) continue;
      if (this.signaling.state(uid) !== 'idle') {
        this.counters.links_trimmed_unfriended++;
        this.signaling.trim(uid, `${bare} is no longer a friend (roster)`);
      }
      this.removeMapping(uid, 'no longer a friend');
    }
  }

  private removeMapping(uid: Uid, why: string): void {
    const m = this.mappings.get(uid);
    if (!m) return;
    this.unmapInDatapath(uid);
    this.mappings.delete(uid);
    this.pool.release(uid);
    this.profile.forget(uid);
    this.links.forget(uid);
    this.core.queue.drop(uid);
    this.core.cancelWake(uid);
    this.core.backoff.reset(uid);
    this.counters.mappings_removed++;
    this.log.info({ peer: uid.slice(0, 12), jid: m.jid, ip4: m.ip4, why }, 'friend device unmapped');
    this.saveState('soon');
  }

  /** Judges the presences of `bare`'s devices again (the roster changed). */
  private readmit(bare: string): void {
    this.core.handlePresence(this.peers.rejudge((p) => bareJid(p.jid) === bare, this.clock.now()));
  }

  // --- addresses ------------------------------------------------------------------------------------

  /** The device's address in our subnet, allocated (and persisted) on first sight. */
  private ensureMapping(uid: Uid, bare: string): string | null {
    const now = this.clock.now();
    const have = this.mappings.get(uid);
    if (have) {
      have.last_seen_ms = now;
      return have.ip4;
    }
    let ip4 = this.pool.allocate(uid);
    if (ip4 === null) {
      // The subnet is full: give up the address of the device seen longest ago that holds nothing now.
      const victim = [...this.mappings]
        .filter(([u]) => !this.peers.member(u) && this.signaling.state(u) === 'idle')
        .sort(([, a], [, b]) => a.last_seen_ms - b.last_seen_ms)[0];
      if (victim) {
        this.counters.mappings_evicted++;
        this.removeMapping(victim[0], `the subnet is full: its address goes to a device of ${bare}`);
        ip4 = this.pool.allocate(uid);
      }
    }
    if (ip4 === null) {
      this.counters.address_pool_exhausted++;
      const gate = this.core.warnLimiter.allow('pool exhausted');
      if (gate.ok) this.log.warn({ subnet: this.subnet.cidr, peer: uid.slice(0, 12), jid: bare, suppressed: gate.suppressed || undefined }, 'no free address in the subnet for a friend device: use a larger subnet');
      return null;
    }
    this.mappings.set(uid, { jid: bare, ip4, since_ms: now, last_seen_ms: now });
    this.counters.mappings_created++;
    this.log.info({ peer: uid.slice(0, 12), jid: bare, ip4 }, 'friend device mapped');
    this.saveState('soon');
    return ip4;
  }

  /** Tells the datapath the device's address in our subnet, with translation (idempotent). */
  private async mapInDatapath(uid: Uid): Promise<void> {
    const m = this.mappings.get(uid);
    if (!m) throw new Error(`no address for ${uid.slice(0, 12)} in ${this.subnet.cidr}`);
    if (this.dpMapped.get(uid) === m.ip4) return;
    const old = this.dpMapped.get(uid);
    this.dpMapped.set(uid, m.ip4);
    const ip6 = ip6FromUid(uid);
    try {
      if (old !== undefined) await this.supervisor.call('set_remote_ip', { uid, ip4: old, remove: true });
      await this.supervisor.call('set_remote_ip', { uid, ip4: m.ip4, ip6, translate: true });
    } catch (err) {
      if (this.dpMapped.get(uid) === m.ip4) this.dpMapped.delete(uid);
      throw err;
    }
  }

  private unmapInDatapath(uid: Uid): void {
    const ip4 = this.dpMapped.get(uid);
    if (ip4 === undefined) return;
    this.dpMapped.delete(uid);
    this.supervisor
      .call('set_remote_ip', { uid, ip4, ip6: ip6FromUid(uid), remove: true })
      .catch((err: unknown) => this.log.debug({ peer: uid.slice(0, 12), err: errorMessage(err) }, 'cannot unmap'));
  }

  // --- presence -------------------------------------------------------------------------------------

  /** A friend device came online: it gets (or keeps) its address in our subnet. */
  private joined(uid: Uid): void {
    const short = uid.slice(0, 12);
    const peer = this.peers.get(uid);
    const bare = peer?.jid ? bareJid(peer.jid) : null;
    const ip4 = bare ? this.ensureMapping(uid, bare) : null;
    this.log.info({ peer: short, jid: peer?.jid, ip4 }, 'friend device online');
    if (ip4) void this.mapInDatapath(uid).catch((err: unknown) => this.log.debug({ peer: short, err: errorMessage(err) }, 'cannot map'));
    this.core.backoff.reset(uid);
  }

  private presenceChanged(changes: PresenceChange[]): void {
    if (!changes.some((c) => c.after === 'member' || (c.before === 'member' && c.after === 'absent'))) return;
    this.refreshProactive();
    for (const c of changes) if (c.after === 'member') this.core.reconcile(c.uid);
  }

  // --- signals and packets --------------------------------------------------------------------------

  private setPeerKeeps(uid: Uid, keeps: boolean): void {
    if (keeps) this.links.peerKeeps.add(uid);
    else this.links.peerKeeps.delete(uid);
    const m = this.mappings.get(uid);
    if (m && (m.peer_keeps ?? false) !== keeps) {
      if (keeps) m.peer_keeps = true;
      else delete m.peer_keeps;
      this.saveState('soon');
    }
  }

  /**
   * The online friend device an unmapped packet of ours may start a link to. Transit frames (another
   * node's packets, e.g. from a friend of a friend through a common friend) never get here.
   */
  private demandPeer(uid: Uid): Peer | null {
    if (!this.mappings.has(uid)) {
      this.counters.unmapped_not_friend++;
      return null;
    }
    const peer = this.peers.member(uid);
    if (!peer) this.counters.unmapped_offline++;
    return peer ?? null;
  }

  // --- policy: the social profile -----------------------------------------------------------------

  /** Recomputes which online friend devices are linked proactively; links the new ones. */
  private refreshProactive(): void {
    const candidates = [...this.peers.members()].map((p) => p.uid).filter((u) => this.mappings.has(u));
    for (const uid of this.links.refresh(candidates, this.clock.now())) this.core.reconcile(uid);
  }

  /** How long to wait before offering to a friend device the policy wants a link to; null: none. */
  private offerDelay(peer: Peer, now: number, readyAt: number): number | null {
    const m = this.mappings.get(peer.uid);
    if (!m || !this.isTrusted(m.jid)) return null;
    return this.links.offerDelay(this.uid, peer, now, readyAt);
  }

  // --- status -----------------------------------------------------------------------------------------

  status(): SocialVpnStatus {
    const now = this.clock.now();
    const mappings: SocialVpnMappingStatus[] = [];
    for (const [uid, m] of this.mappings) {
      const p = this.peers.get(uid);
      const s = this.signaling.session(uid);
      const retry = this.core.backoff.readyAt(uid);
      const sum = this.profile.summary(uid, now);
      mappings.push({
        uid,
        jid: m.jid,
        device_jid: p?.status === 'member' ? p.jid : null,
        ip4: m.ip4,
        ip6: ip6FromUid(uid),
        status: p?.status === 'member' ? 'online' : p?.status === 'conflict' ? 'conflict' : 'offline',
        link: s?.state ?? 'idle',
        role: s?.role ?? null,
        adopted: s?.adopted ?? false,
        proactive: this.links.isProactive(uid),
        peer_keeps: this.links.peerKeeps.has(uid),
        score: this.profile.score(uid, now),
        traffic_today: sum.today,
        active_days: sum.active_days,
        last_active_ms: this.core.activity.get(uid) ?? null,
        since_ms: m.since_ms,
        last_seen_ms: m.last_seen_ms,
        failures: this.core.backoff.failures(uid),
        retry_at_ms: retry > now ? retry : null,
      });
    }
    mappings.sort((a, b) => (a.jid < b.jid ? -1 : a.jid > b.jid ? 1 : a.ip4 < b.ip4 ? -1 : 1));
    const sp = this.config.social_profile;
    return {
      updated_ms: now,
      mode: 'social',
      node: {
        uid: this.uid,
        jid: this.config.xmpp.jid,
        ip4: `${this.ip4}/${this.subnet.prefix}`,
        ip6: `${this.ip6}/64`,
        subnet: this.subnet.cidr,
        vnic: this.config.vnic.name,
      },
      policy: {
        link_policy: 'social-profile',
        max_links: this.config.max_links,
        idle_timeout_s: this.config.idle_timeout_s,
        proactive_links: sp.proactive_links,
        min_score: sp.min_score,
        half_life_days: sp.half_life_days,
        active_day_packets: sp.active_day_packets,
        own_devices: this.config.own_devices,
      },
      datapath: this.core.datapathStatus(),
      xmpp: this.core.xmppStatus(),
      roster: { source: this.roster.source, updated_ms: this.roster.updatedMs, contacts: this.roster.size, friends: this.roster.mutual().sort() },
      addresses: { used: this.pool.size, capacity: this.pool.capacity },
      links: this.signaling.activeCount(),
      mappings,
      conflicts: this.peers.conflicts(),
      state_file: { path: this.stateFile?.path ?? null, last_error: this.stateFile?.lastError ?? null },
      counters: { ...this.counters },
      refusals: { ...this.refusals },
      trickle: { ...this.signaling.trickleCounters },
      membership: { ...this.core.membership.status(), refusals: { ...this.core.admissionRefusals } },
    };
  }

}
