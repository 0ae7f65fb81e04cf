import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import {
  DEFAULT_IP6_PREFIX,
  FRAME_DST_OFFSET,
  FRAME_HEADER_LEN,
  SOCIAL_OVERLAY,
  SocialSignalExtras,
  SocialVpnState,
  UID_BYTES,
  ip6FromUid,
  ip6ToBytes,
  numberToIp4,
  parseControllerSignal,
  uidToBytes,
  type EventOf,
  type LinkInfo,
  type RpcEvent,
  type StateResult,
  type Uid,
} from '@tincan/protocol';
import {
  AddressPool,
  Backoff,
  DatapathSupervisor,
  FAILURE_REASONS,
  LogLimiter,
  PacketQueue,
  PeerTable,
  PersistentJsonFile,
  Signaling,
  StatusFile,
  Subnet4,
  TrafficProfile,
  errorMessage,
  readStateFileSync,
  systemClock,
  type Admission,
  type Clock,
  type CloseReason,
  type DatapathPort,
  type DayTraffic,
  type PresenceChange,
  type SignalOutcome,
  type TimerHandle,
} from '@tincan/controller';
import type { SocialVpnSettings } from './config.js';
import { Roster, bareJid } from './roster.js';

export interface SocialVpnTuning {
  /** get_state every this often: liveness, presence and link sync, traffic, trimming. */
  pollIntervalMs: number;
  /** Our offer gets this long for a con_resp. */
  offerTimeoutMs: number;
  /** Exchanged descriptions get this long to become an up link. */
  connectTimeoutMs: number;
  /** An up link that went "down" gets this long to recover before it is trimmed. */
  downGraceMs: number;
  /** Proactive: the higher UID waits this long for the lower UID's offer. */
  proactiveWaitMs: number;
  /** On-demand: a packet keeps wanting a link (and its retries) for this long. */
  demandWindowMs: number;
  /** Retry backoff after a failed link: first delay and ceiling. */
  backoffInitialMs: number;
  backoffMaxMs: number;
  /** A presence missing from get_state for this long (while XMPP is online) counts as gone. */
  presenceGraceMs: number;
  /** Packets kept per peer while its link is made, and for how long. */
  queuePerPeer: number;
  queueMaxAgeMs: number;
  /** Refusal warnings: at most one per sender and reason per this. */
  warnIntervalMs: number;
}

export const DEFAULT_TUNING: SocialVpnTuning = {
  pollIntervalMs: 5_000,
  offerTimeoutMs: 15_000,
  connectTimeoutMs: 45_000,
  downGraceMs: 10_000,
  proactiveWaitMs: 5_000,
  demandWindowMs: 30_000,
  backoffInitialMs: 2_000,
  backoffMaxMs: 120_000,
  presenceGraceMs: 15_000,
  queuePerPeer: 8,
  queueMaxAgeMs: 10_000,
  warnIntervalMs: 60_000,
};

export interface SocialVpnControllerOptions {
  config: SocialVpnSettings;
  /** A connected datapath client (tests pass a fake). */
  client?: DatapathPort;
  /** Makes a client (reads the datapath's token): used at start and after the datapath restarts. */
  connect?: () => Promise<DatapathPort>;
  logger: Logger;
  clock?: Clock;
  tuning?: Partial<SocialVpnTuning>;
  /** The state file: default `STATE_DIR/socialvpn-state.json`; null keeps the state in memory only. */
  stateFile?: string | null;
  /** The status file: default `STATE_DIR/socialvpn-status.json`; null for none (tests read status()). */
  statusFile?: string | null;
  /** Randomness for backoff jitter (tests pass a constant). */
  random?: () => number;
}

export interface SocialVpnCounters {
  signals_received: number;
  signals_malformed: number;
  signals_unknown_type: number;
  signals_bounced: number;
  signals_refused: number;
  signals_duplicate: number;
  signals_stale: number;
  glare_kept: number;
  glare_yielded: number;
  con_reject_sent: number;
  offers: number;
  offers_proactive: number;
  links_up: number;
  link_failures: number;
  links_adopted: number;
  links_trimmed_idle: number;
  links_trimmed_lru: number;
  links_trimmed_departed: number;
  links_trimmed_unfriended: number;
  links_trimmed_conflict: number;
  orphan_links_trimmed: number;
  uid_conflicts: number;
  roster_updates: number;
  mappings_created: number;
  mappings_removed: number;
  mappings_evicted: number;
  address_pool_exhausted: number;
  unmapped_packets: number;
  unmapped_malformed: number;
  unmapped_outside_subnet: number;
  unmapped_not_friend: number;
  unmapped_offline: number;
  transit_dropped: number;
  packets_reinjected: number;
  datapath_restarts: number;
}

/** Why signals were refused, by reason (not_friend, not_social, uid_of_other_jid, unknown_sender, …). */
export type RefusalCounts = Record<string, number>;

/** One friend device and its address in our subnet (tincanctl shows these). */
export interface SocialVpnMappingStatus {
  uid: Uid;
  /** The friend (bare JID) the device belongs to. */
  jid: string;
  /** The device's full JID while it is online. */
  device_jid: string | null;
  /** The device's address in *our* subnet (the datapath translates its packets to it). */
  ip4: string;
  ip6: string;
  status: 'online' | 'offline' | 'conflict';
  link: string;
  role: string | null;
  adopted: boolean;
  /** The social profile links this device proactively (a frequent friend). */
  proactive: boolean;
  /** The friend's controller asked to keep the link (it links us proactively). */
  peer_keeps: boolean;
  score: number;
  traffic_today: DayTraffic;
  active_days: number;
  last_active_ms: number | null;
  since_ms: number;
  last_seen_ms: number;
  failures: number;
  retry_at_ms: number | null;
}

export interface SocialVpnStatus {
  updated_ms: number;
  mode: 'social';
  node: { uid: Uid; jid: string; ip4: string; ip6: string; subnet: string; vnic: string };
  policy: {
    link_policy: 'social-profile';
    max_links: number;
    idle_timeout_s: number;
    proactive_links: number;
    min_score: number;
    half_life_days: number;
    active_day_packets: number;
    own_devices: boolean;
  };
  datapath: { status: string; restarts: number; outages: number; last_error: string | null };
  xmpp: { state: string; jid: string | null };
  roster: { source: string; updated_ms: number | null; contacts: number; friends: string[] };
  addresses: { used: number; capacity: number };
  links: number;
  mappings: SocialVpnMappingStatus[];
  /** Online TinCan devices that announce a UID claimed by two JIDs at once (none is linked). */
  conflicts: { uid: Uid; jids: string[]; local: boolean }[];
  state_file: { path: string | null; last_error: string | null };
  counters: SocialVpnCounters;
  refusals: RefusalCounts;
}

interface Mapping {
  /** The owner: the friend's bare JID. */
  jid: string;
  ip4: string;
  since_ms: number;
  last_seen_ms: number;
  peer_keeps?: boolean;
}

/** last_seen_ms of an online device is refreshed (and persisted) at most this often. */
const LAST_SEEN_STEP_MS = 600_000;

const ZERO_UID = Buffer.alloc(UID_BYTES);
const ULA_PREFIX = ip6ToBytes(DEFAULT_IP6_PREFIX).subarray(0, 8);
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
  readonly peers: PeerTable;
  readonly signaling: Signaling;
  readonly supervisor: DatapathSupervisor;
  readonly roster = new Roster();
  readonly profile: TrafficProfile;
  readonly counters: SocialVpnCounters = {
    signals_received: 0, signals_malformed: 0, signals_unknown_type: 0, signals_bounced: 0, signals_refused: 0,
    signals_duplicate: 0, signals_stale: 0, glare_kept: 0, glare_yielded: 0, con_reject_sent: 0, offers: 0,
    offers_proactive: 0, links_up: 0, link_failures: 0, links_adopted: 0, links_trimmed_idle: 0,
    links_trimmed_lru: 0, links_trimmed_departed: 0, links_trimmed_unfriended: 0, links_trimmed_conflict: 0,
    orphan_links_trimmed: 0, uid_conflicts: 0, roster_updates: 0, mappings_created: 0, mappings_removed: 0,
    mappings_evicted: 0, address_pool_exhausted: 0, unmapped_packets: 0, unmapped_malformed: 0,
    unmapped_outside_subnet: 0, unmapped_not_friend: 0, unmapped_offline: 0, transit_dropped: 0,
    packets_reinjected: 0, datapath_restarts: 0,
  };
  readonly refusals: RefusalCounts = {};

  private readonly config: SocialVpnSettings;
  private readonly tuning: SocialVpnTuning;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly uidBytes: Buffer;
  private readonly ownBare: string;
  private readonly pool: AddressPool;
  private readonly backoff: Backoff;
  private readonly queue: PacketQueue;
  private readonly warnLimiter: LogLimiter;
  /** Friend device UID → its address in our subnet and owner (persisted). */
  private readonly mappings = new Map<Uid, Mapping>();
  /** The address the datapath has mapped to each UID (set_remote_ip sent). */
  private readonly dpMapped = new Map<Uid, string>();
  /** Online TinCan presences that admission refused (full JID → …): re-judged when the roster changes. */
  private readonly refusedPresences = new Map<string, { uid: Uid; overlay: string | null; reason: string }>();
  /** Devices linked proactively now (the social profile's top frequent ones among online friends). */
  private proactive = new Set<Uid>();
  /** Links the peer asked to keep (its con_req / con_resp said proactive). */
  private readonly peerKeeps = new Set<Uid>();
  private readonly wakeups = new Map<Uid, { at: number; timer: TimerHandle }>();
  /** Last activity per link (traffic from get_state, link up, local demand). */
  private readonly activity = new Map<Uid, number>();
  private readonly stateFile: PersistentJsonFile | null;
  private readonly statusFile: StatusFile | null;
  private stateIsNew = false;
  private ready = false;
  private xmppState = 'unregistered';
  private xmppJid: string | null = null;
  private xmppOnlineSince: number | null = null;
  private stopped = false;

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
    const saved = statePath === null ? null : this.loadState(statePath);
    this.uid = saved?.uid ?? randomBytes(UID_BYTES).toString('hex');
    const sp = opts.config.social_profile;
    this.profile = new TrafficProfile(
      { halfLifeDays: sp.half_life_days, activeDayPackets: sp.active_day_packets },
      Object.fromEntries(Object.entries(saved?.traffic ?? {}).filter(([uid]) => uid !== this.uid)),
    );
    this.stateIsNew = saved === null;
    this.pool = new AddressPool(this.subnet, saved?.next_ip4);
    if (saved) this.restoreState(saved);
    this.uidBytes = uidToBytes(this.uid);
    this.ip6 = ip6FromUid(this.uid);
    this.stateFile = statePath === null ? null : new PersistentJsonFile(statePath, this.clock, this.log);

    const t = this.tuning;
    this.backoff = new Backoff({ initialMs: t.backoffInitialMs, maxMs: t.backoffMaxMs, ...(opts.random ? { random: opts.random } : {}) });
    this.queue = new PacketQueue({ perPeer: t.queuePerPeer, maxAgeMs: t.queueMaxAgeMs });
    this.warnLimiter = new LogLimiter(this.clock, t.warnIntervalMs);
    this.peers = new PeerTable({ localUid: this.uid, admit: (p) => this.admit(p) });
    this.supervisor = new DatapathSupervisor({
      ...(opts.client ? { client: opts.client } : {}),
      ...(opts.connect ? { connect: opts.connect } : {}),
      clock: this.clock,
      logger: opts.logger.child({ component: 'datapath' }),
      pollIntervalMs: t.pollIntervalMs,
      handlers: {
        onEvent: (e) => this.onEvent(e),
        onPacket: (f) => this.onPacket(f),
        attach: (state, restarted, seq) => this.attach(state, restarted, seq),
        onState: (state, seq) => this.sync(state, seq),
        onUnreachable: () => this.markDirty(),
      },
    });
    const rpc = { call: this.supervisor.call.bind(this.supervisor) } as Pick<DatapathPort, 'call'>;
    this.signaling = new Signaling({
      localUid: this.uid,
      rpc,
      clock: this.clock,
      logger: opts.logger.child({ component: 'signaling' }),
      offerTimeoutMs: t.offerTimeoutMs,
      connectTimeoutMs: t.connectTimeoutMs,
      downGraceMs: t.downGraceMs,
      seq: () => this.supervisor.seq,
      hooks: {
        identity: (uid) => {
          // ip4: our own address in our own subnet (the schema wants one; the friend ignores it).
          const id = { overlay: SOCIAL_OVERLAY, ip4: this.ip4, proactive: this.proactive.has(uid) };
          return id;
        },
        ice: () => ({ stun: this.config.stun, turn: this.config.turn }),
        prepare: (uid) => this.mapInDatapath(uid),
        onUp: (uid) => this.onLinkUp(uid),
        onClosed: (uid, reason, detail) => this.onLinkClosed(uid, reason, detail),
      },
    });
    const statusPath = opts.statusFile === undefined ? join(opts.config.state_dir, STATUS_FILE) : opts.statusFile;
    this.statusFile = statusPath === null ? null : new StatusFile(statusPath, this.clock, this.log);
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
    await this.supervisor.start();
  }

  /** Stops the controller; links stay up in the datapath, and a restarted controller adopts them. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.markDirty();
    this.saveState('soon');
    this.supervisor.stop();
    this.signaling.stop();
    for (const w of this.wakeups.values()) this.clock.clearTimeout(w.timer);
    this.wakeups.clear();
    await Promise.all([this.statusFile?.flush(), this.stateFile?.flush()]);
  }

  /** Writes the state file now (tests, tools); resolves when it is on disk. */
  async flushState(): Promise<void> {
    this.saveState('soon');
    await this.stateFile?.flush();
  }

  /** The address of a friend's device in our subnet (null if it has none). */
  addressOf(uid: Uid): string | null {
    return this.mappings.get(uid)?.ip4 ?? null;
  }

  /** Whether the social profile links this device proactively now. */
  isProactive(uid: Uid): boolean {
    return this.proactive.has(uid);
  }

  // --- state file -----------------------------------------------------------------------------------

  private loadState(path: string): SocialVpnState | null {
    return readStateFileSync(path, (data) => {
      const r = SocialVpnState.safeParse(data);
      if (r.success) return { ok: true, value: r.data };
      const first = r.error.issues[0];
      return { ok: false, problem: first ? `${first.path.map(String).join('.') || '(top level)'}: ${first.message}` : 'invalid' };
    });
  }

  private restoreState(s: SocialVpnState): void {
    if (s.subnet !== this.subnet.cidr || s.address !== this.ip4) {
      this.log.warn(
        { was: `${s.address} in ${s.subnet}`, now: `${this.ip4} in ${this.subnet.cidr}` },
        'the subnet or own address changed: friends\' addresses that do not fit any more get new ones',
      );
    }
    const entries = Object.entries(s.mappings).sort(([, a], [, b]) => a.since_ms - b.since_ms);
    for (const [uid, m] of entries) {
      if (uid === this.uid || !this.pool.assign(uid, m.ip4)) {
        this.log.warn({ peer: uid.slice(0, 12), jid: m.jid, ip4: m.ip4 }, 'a stored address does not fit the subnet: the device gets a new one');
        continue;
      }
      this.mappings.set(uid, { ...m, jid: bareJid(m.jid) });
    }
    if (s.roster) this.roster.load(s.roster.items, s.roster.updated_ms);
  }

  private stateSnapshot(): SocialVpnState {
    const mappings: SocialVpnState['mappings'] = {};
    for (const [uid, m] of [...this.mappings].sort(([a], [b]) => (a < b ? -1 : 1))) mappings[uid] = { ...m };
    return {
      version: 1,
      uid: this.uid,
      subnet: this.subnet.cidr,
      address: this.ip4,
      next_ip4: this.pool.cursor,
      mappings,
      roster: this.roster.updatedMs === null ? null : { updated_ms: this.roster.updatedMs, items: this.roster.toJSON() },
      traffic: this.profile.toJSON(),
    };
  }

  private saveState(urgency: 'soon' | 'later'): void {
    this.stateFile?.update(() => this.stateSnapshot(), urgency);
  }

  // --- attaching to the datapath ------------------------------------------------------------------

  private async attach(state: StateResult, restarted: boolean, seq: number): Promise<void> {
    this.ready = false;
    if (restarted) {
      this.counters.datapath_restarts++;
      // Its links, mappings and XMPP session are gone; the roster and presences come again at login.
      this.dpMapped.clear();
      this.activity.clear();
      for (const uid of [...this.peerKeeps]) this.setPeerKeeps(uid, false);
      this.signaling.reset('the datapath restarted');
      this.handlePresence(this.peers.clear(this.clock.now()));
      this.refusedPresences.clear();
    }
    if (state.node.uid !== null && state.node.uid !== this.uid) {
      throw new Error(
        `the datapath's vNIC belongs to node ${state.node.uid} (${state.node.ip4 ?? '?'}), not to this SocialVPN node ${this.uid} ` +
          '(another controller configured it, or socialvpn-state.json was replaced): restart the datapath',
      );
    }
    await this.supervisor.call('set_local_ip', {
      uid: this.uid,
      name: this.config.vnic.name,
      ip4: `${this.ip4}/${this.subnet.prefix}`,
      ip6: `${this.ip6}/64`,
      mtu: this.config.vnic.mtu,
    });
    await this.supervisor.call('register_svc', { xmpp: this.config.xmpp, overlay: SOCIAL_OVERLAY });
    this.ready = true;
    this.sync(state, seq);
  }

  /** One get_state snapshot: presence, links (adopt, lose, orphan), traffic, trimming, policy. */
  private sync(state: StateResult, seq: number): void {
    if (this.stopped) return;
    const now = this.clock.now();
    this.xmppJid = state.xmpp.jid;
    this.handlePresence(this.peers.setOwnJid(state.xmpp.jid, now));
    this.setXmppState(state.xmpp.state, now);
    if (state.xmpp.state === 'online') {
      const settled = this.xmppOnlineSince !== null && now - this.xmppOnlineSince > this.tuning.presenceGraceMs;
      this.handlePresence(this.peers.syncOnline(state.peers, now, this.tuning.presenceGraceMs, settled));
      const listed = new Set(state.peers.map((p) => `${p.uid} ${p.jid}`));
      for (const [jid, r] of this.refusedPresences) if (!listed.has(`${r.uid} ${jid}`)) this.refusedPresences.delete(jid);
    }

    let traffic = false;
    const inState = new Set<Uid>();
    for (const link of state.links) {
      inState.add(link.uid);
      const s = this.signaling.session(link.uid);
      const untracked = !s || (s.state === 'idle' && s.idleSeq < seq && s.trimsInFlight === 0);
      if (untracked) {
        if (link.state === 'up' && this.adopt(link, now)) {
          if (this.observeTraffic(link, now)) traffic = true;
          continue;
        }
        this.log.info({ peer: link.uid.slice(0, 12), state: link.state }, 'trimming a link no session owns');
        this.counters.orphan_links_trimmed++;
        this.signaling.trimOrphan(link.uid);
        continue;
      }
      if (s.state === 'idle') continue;
      this.noteActivity(link);
      if (this.observeTraffic(link, now)) traffic = true;
      if (s.state === 'up' && (link.state === 'failed' || link.state === 'down')) {
        this.signaling.handleLinkEvent(link.uid, link.state, 'seen in get_state');
      }
    }
    for (const s of [...this.signaling.all()]) {
      if (s.state !== 'idle' && s.linkSeq !== null && s.linkSeq < seq && !inState.has(s.uid)) {
        this.signaling.lost(s.uid, 'the datapath no longer has this link');
      }
    }
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
    if (this.profile.pruneAll(now)) traffic = true;
    if (traffic || seen) this.saveState('later'); // history and last-seen times: no hurry

    for (const uid of this.idleVictims(now)) {
      this.counters.links_trimmed_idle++;
      this.signaling.trim(uid, `idle for more than ${this.config.idle_timeout_s} s`);
    }
    for (const uid of this.lruVictims(0)) {
      this.counters.links_trimmed_lru++;
      this.signaling.trim(uid, `more than max_links (${this.config.max_links}) links: least recently used`);
    }
    this.queue.expire(now);
    this.forgetGone();
    this.refreshProactive();
    this.reconcileAll();
    this.markDirty();
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

  /** Drops the records of peers that are gone and hold nothing (bounded memory under churn). */
  private forgetGone(): void {
    for (const p of [...this.peers.all()]) {
      if (p.status !== 'absent' || this.wakeups.has(p.uid)) continue;
      const s = this.signaling.session(p.uid);
      if (s && s.state !== 'idle') continue;
      this.signaling.forget(p.uid);
      this.peers.forget(p.uid);
      this.backoff.reset(p.uid);
      this.queue.drop(p.uid);
    }
    for (const s of [...this.signaling.all()]) {
      if (s.state === 'idle' && !this.peers.get(s.uid) && !this.wakeups.has(s.uid)) this.signaling.forget(s.uid);
    }
  }

  /**
   * Takes over an up link found in the datapath (controller restart): only a device we have an
   * address for, owned by someone who is still a friend, and (if the datapath knows the link's JID)
   * by that very JID. Anything else is trimmed.
   */
  private adopt(link: LinkInfo, now: number): boolean {
    const m = this.mappings.get(link.uid);
    const peer = this.peers.get(link.uid);
    if (!m || link.uid === this.uid || peer?.status === 'conflict' || !this.isTrusted(m.jid)) return false;
    if (link.jid !== null && bareJid(link.jid) !== m.jid) return false;
    this.signaling.adopt(link.uid, link.connected_ms ?? now);
    this.noteActivity(link);
    if (m.peer_keeps) this.peerKeeps.add(link.uid);
    const ip6 = ip6FromUid(link.uid);
    if (link.ip4.includes(m.ip4) && link.ip6.includes(ip6)) {
      this.dpMapped.set(link.uid, m.ip4);
    } else {
      void this.mapInDatapath(link.uid).catch((err: unknown) => {
        this.log.warn({ peer: link.uid.slice(0, 12), err: errorMessage(err) }, 'cannot map an adopted link');
      });
    }
    this.counters.links_adopted++;
    this.log.info({ peer: link.uid.slice(0, 12), jid: m.jid, ip4: m.ip4 }, 'adopted a link that was already up');
    return true;
  }

  private noteActivity(link: LinkInfo): void {
    const t = Math.max(link.last_rx_ms ?? 0, link.last_tx_ms ?? 0, link.connected_ms ?? link.created_ms);
    this.activity.set(link.uid, Math.max(t, this.activity.get(link.uid) ?? 0));
  }

  private lastActive(uid: Uid): number {
    const s = this.signaling.session(uid);
    return this.activity.get(uid) ?? s?.upSinceMs ?? s?.sinceMs ?? 0;
  }

  private setXmppState(state: string, now: number): void {
    if (state === this.xmppState) return;
    this.xmppState = state;
    if (state === 'online') {
      this.xmppOnlineSince = now;
      this.reconcileAll();
    } else {
      this.xmppOnlineSince = null;
    }
    this.markDirty();
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
    this.reconcileAll();
    this.markDirty();
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
    this.proactive.delete(uid);
    this.peerKeeps.delete(uid);
    this.queue.drop(uid);
    this.cancelWake(uid);
    this.backoff.reset(uid);
    this.counters.mappings_removed++;
    this.log.info({ peer: uid.slice(0, 12), jid: m.jid, ip4: m.ip4, why }, 'friend device unmapped');
    this.saveState('soon');
  }

  /** Judges the presences of `bare`'s devices again (the roster changed). */
  private readmit(bare: string): void {
    const now = this.clock.now();
    const again: { uid: Uid; jid: string; overlay: string | null; online: true }[] = [];
    for (const p of this.peers.all()) {
      for (const c of p.claims.values()) if (bareJid(c.jid) === bare) again.push({ uid: p.uid, jid: c.jid, overlay: c.overlay, online: true });
    }
    for (const [jid, r] of this.refusedPresences) {
      if (bareJid(jid) === bare) again.push({ uid: r.uid, jid, overlay: r.overlay, online: true });
    }
    for (const ev of again) this.handlePresence(this.peers.presence(ev, now));
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
      const gate = this.warnLimiter.allow('pool exhausted');
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

  // --- events ---------------------------------------------------------------------------------------

  private onEvent(e: RpcEvent): void {
    if (this.stopped) return;
    const now = this.clock.now();
    switch (e.event) {
      case 'presence':
        if (!e.online && this.refusedPresences.get(e.jid)?.uid === e.uid) this.refusedPresences.delete(e.jid);
        this.handlePresence(this.peers.presence(e, now));
        break;
      case 'signal':
        this.onSignal(e);
        break;
      case 'link':
        this.signaling.handleLinkEvent(e.uid, e.state, e.reason);
        this.markDirty();
        break;
      case 'xmpp':
        if (e.state === 'connecting') this.log.debug('XMPP session connecting');
        else this.log.info({ state: e.state, reason: e.reason }, `XMPP session ${e.state}`);
        this.setXmppState(e.state, now);
        break;
      case 'roster':
        this.onRoster(e);
        break;
    }
  }

  private handlePresence(changes: PresenceChange[]): void {
    let changed = false;
    for (const c of changes) {
      const short = c.uid.slice(0, 12);
      if (c.after === 'conflict') {
        this.counters.uid_conflicts++;
        const conflict = this.peers.conflicts().find((x) => x.uid === c.uid);
        this.log.error(
          { uid: c.uid, jids: conflict?.jids, local: c.uid === this.uid },
          c.uid === this.uid
            ? 'UID conflict: another device announces our own node UID (a copied state directory?)'
            : 'UID conflict: two devices announce the same UID; neither is linked until one leaves',
        );
        if (this.signaling.state(c.uid) !== 'idle') {
          this.counters.links_trimmed_conflict++;
          this.signaling.trim(c.uid, 'UID conflict');
        }
        this.queue.drop(c.uid);
      } else if (c.before === 'conflict') {
        this.log.warn({ uid: c.uid, now: c.after }, 'UID conflict resolved');
      }
      if (c.after === 'member') {
        const peer = this.peers.get(c.uid);
        const bare = peer?.jid ? bareJid(peer.jid) : null;
        const ip4 = bare ? this.ensureMapping(c.uid, bare) : null;
        this.log.info({ peer: short, jid: peer?.jid, ip4 }, 'friend device online');
        if (ip4) void this.mapInDatapath(c.uid).catch((err: unknown) => this.log.debug({ peer: short, err: errorMessage(err) }, 'cannot map'));
        this.backoff.reset(c.uid);
        changed = true;
      } else if (c.before === 'member' && c.after === 'absent') {
        this.log.info({ peer: short }, 'friend device offline');
        if (this.signaling.state(c.uid) !== 'idle') {
          this.counters.links_trimmed_departed++;
          this.signaling.trim(c.uid, 'the device left');
        }
        const m = this.mappings.get(c.uid);
        if (m) m.last_seen_ms = this.clock.now();
        this.unmapInDatapath(c.uid);
        this.queue.drop(c.uid);
        this.backoff.reset(c.uid);
        this.cancelWake(c.uid);
        changed = true;
      }
    }
    if (changed) {
      this.refreshProactive();
      for (const c of changes) if (c.after === 'member') this.reconcile(c.uid);
    }
    if (changes.length) this.markDirty();
  }

  private refuse(e: EventOf<'signal'>, reason: string, detail?: string): void {
    this.counters.signals_refused++;
    this.refusals[reason] = (this.refusals[reason] ?? 0) + 1;
    const gate = this.warnLimiter.allow(`${reason} ${e.jid}`);
    if (gate.ok) {
      this.log.warn({ jid: e.jid, uid: e.uid, type: e.type, reason, detail, suppressed: gate.suppressed || undefined }, 'signal refused');
    }
  }

  private onSignal(e: EventOf<'signal'>): void {
    this.counters.signals_received++;
    if (e.uid === this.uid) {
      this.counters.signals_bounced++; // our own signal, bounced or reflected back
      return;
    }
    const parsed = parseControllerSignal(e.type, e.data);
    if (!parsed.ok) {
      if (parsed.unknownType) this.counters.signals_unknown_type++;
      else this.counters.signals_malformed++;
      const gate = this.warnLimiter.allow(`garbage ${e.jid}`);
      if (gate.ok) this.log.warn({ jid: e.jid, type: e.type, problem: parsed.reason, suppressed: gate.suppressed || undefined }, 'unusable signal ignored');
      return;
    }
    // Only a friend (mutual subscription), from the full JID whose presence announced that UID.
    if (!this.isTrusted(bareJid(e.jid))) {
      this.refuse(e, 'not_friend');
      return;
    }
    const refused = this.refusedPresences.get(e.jid);
    if (refused && refused.uid === e.uid) {
      this.refuse(e, refused.reason); // its presence was refused: not_social, uid_of_other_jid
      return;
    }
    const sender = this.peers.verifySender(e.uid, e.jid);
    if (!sender.ok) {
      this.refuse(e, sender.reason);
      return;
    }
    if (parsed.type === 'con_reject') {
      this.countOutcome(this.signaling.handleConReject(e.uid, parsed.msg));
      this.markDirty();
      return;
    }
    const msg = parsed.msg;
    if (msg.overlay !== SOCIAL_OVERLAY) {
      this.refuse(e, 'overlay_mismatch', `overlay ${JSON.stringify(msg.overlay)}`);
      if (parsed.type === 'con_req') this.reject(e.uid, 'overlay_mismatch', msg.attempt);
      return;
    }
    if (!this.mappings.has(e.uid)) {
      this.refuse(e, 'no_address', `no free address in ${this.subnet.cidr}`);
      if (parsed.type === 'con_req') this.reject(e.uid, 'no_address', msg.attempt);
      return;
    }
    const extras = SocialSignalExtras.safeParse(e.data);
    const keeps = extras.success && extras.data.proactive === true;
    if (parsed.type === 'con_resp') {
      const o = this.signaling.handleConResp(e.uid, parsed.msg);
      if (o === 'applied') this.setPeerKeeps(e.uid, keeps);
      this.countOutcome(o);
      this.markDirty();
      return;
    }
    // con_req: room for one more link?
    if (this.signaling.state(e.uid) === 'idle' && this.signaling.activeCount() >= this.config.max_links) {
      const victims = this.lruVictims(1);
      if (victims.length === 0) {
        this.reject(e.uid, 'max_links', msg.attempt);
        return;
      }
      for (const v of victims) {
        this.counters.links_trimmed_lru++;
        this.signaling.trim(v, 'room for a link a friend asked for (least recently used)');
      }
    }
    this.cancelWake(e.uid);
    const o = this.signaling.handleConReq(e.uid, parsed.msg);
    if (o === 'answered' || o === 'glare_yielded') this.setPeerKeeps(e.uid, keeps);
    this.countOutcome(o);
    this.markDirty();
  }

  private setPeerKeeps(uid: Uid, keeps: boolean): void {
    if (keeps) this.peerKeeps.add(uid);
    else this.peerKeeps.delete(uid);
    const m = this.mappings.get(uid);
    if (m && (m.peer_keeps ?? false) !== keeps) {
      if (keeps) m.peer_keeps = true;
      else delete m.peer_keeps;
      this.saveState('soon');
    }
  }

  private countOutcome(o: SignalOutcome): void {
    if (o === 'duplicate') this.counters.signals_duplicate++;
    else if (o === 'stale') this.counters.signals_stale++;
    else if (o === 'glare_kept') this.counters.glare_kept++;
    else if (o === 'glare_yielded') this.counters.glare_yielded++;
  }

  private reject(uid: Uid, reason: string, attempt: string): void {
    this.counters.con_reject_sent++;
    this.supervisor
      .call('send_signal', { uid, type: 'con_reject', data: { reason, attempt } })
      .catch((err: unknown) => this.log.debug({ peer: uid.slice(0, 12), err: errorMessage(err) }, 'cannot send con_reject'));
  }

  // --- unmapped packets (on-demand trigger) -------------------------------------------------------

  /**
   * A frame [src UID][dst UID or zeros][IP packet] the datapath could not send on a link. Only our
   * own packets to a friend device's address start a link; transit frames (another node's packets,
   * e.g. from a friend of a friend through a common friend) are never forwarded.
   */
  private onPacket(frame: Buffer): void {
    if (this.stopped) return;
    this.counters.unmapped_packets++;
    if (frame.length < FRAME_HEADER_LEN + 20) {
      this.counters.unmapped_malformed++;
      return;
    }
    if (frame.compare(this.uidBytes, 0, UID_BYTES, 0, UID_BYTES) !== 0) {
      this.counters.transit_dropped++;
      return;
    }
    const uid = this.destinationUid(frame);
    if (uid === null) return;
    if (!this.mappings.has(uid)) {
      this.counters.unmapped_not_friend++;
      return;
    }
    const peer = this.peers.member(uid);
    if (!peer) {
      this.counters.unmapped_offline++;
      return;
    }
    const now = this.clock.now();
    peer.demandMs = now;
    const copy = Buffer.from(frame);
    uidToBytes(uid).copy(copy, FRAME_DST_OFFSET);
    if (this.signaling.state(uid) === 'up') {
      // The link is up but the datapath lacked the mapping (or the channel was not open): fix, forward.
      this.activity.set(uid, now);
      if (this.dpMapped.get(uid) === undefined) void this.mapInDatapath(uid).catch(() => undefined);
      this.counters.packets_reinjected++;
      this.supervisor.sendPacket(copy);
      return;
    }
    this.queue.push(uid, copy, now);
    this.reconcile(uid);
  }

  /** The device a frame is for: its dst UID, or looked up from the IPv4 / IPv6 destination. */
  private destinationUid(frame: Buffer): Uid | null {
    if (frame.compare(ZERO_UID, 0, UID_BYTES, FRAME_DST_OFFSET, FRAME_DST_OFFSET + UID_BYTES) !== 0) {
      return frame.subarray(FRAME_DST_OFFSET, FRAME_DST_OFFSET + UID_BYTES).toString('hex');
    }
    const ipOff = FRAME_HEADER_LEN;
    const version = frame[ipOff]! >> 4;
    if (version === 4) {
      const dst = frame.readUInt32BE(ipOff + 16);
      if (!this.subnet.isPeerHost(dst)) {
        this.counters.unmapped_outside_subnet++; // broadcast, multicast, our own, or not ours
        return null;
      }
      const uid = this.pool.ownerOf(dst);
      if (uid === undefined) this.counters.unmapped_not_friend++; // an address no friend device has
      return uid ?? null;
    }
    if (version === 6 && frame.length >= ipOff + 40) {
      const d = ipOff + 24;
      if (frame.compare(ULA_PREFIX, 0, 8, d, d + 8) !== 0) {
        this.counters.unmapped_outside_subnet++;
        return null;
      }
      const host = frame.subarray(d + 8, d + 16).toString('hex');
      for (const uid of this.mappings.keys()) if (uid.startsWith(host)) return uid;
      this.counters.unmapped_not_friend++;
      return null;
    }
    this.counters.unmapped_malformed++;
    return null;
  }

  // --- policy: the social profile -----------------------------------------------------------------

  /** Recomputes which online friend devices are linked proactively (top K by activity score). */
  private refreshProactive(): void {
    const now = this.clock.now();
    const sp = this.config.social_profile;
    const candidates = [...this.peers.members()].map((p) => p.uid).filter((u) => this.mappings.has(u));
    const next = this.profile.top(candidates, sp.proactive_links, sp.min_score, now) as Set<Uid>;
    for (const uid of next) {
      if (!this.proactive.has(uid)) this.log.info({ peer: uid.slice(0, 12), jid: this.mappings.get(uid)?.jid, score: this.profile.score(uid, now) }, 'frequent friend device: proactive link');
    }
    for (const uid of this.proactive) {
      if (!next.has(uid) && this.peers.member(uid)) this.log.info({ peer: uid.slice(0, 12), score: this.profile.score(uid, now) }, 'no longer a frequent friend device: on demand');
    }
    const added = [...next].filter((u) => !this.proactive.has(u));
    this.proactive = next;
    for (const uid of added) this.reconcile(uid);
  }

  private wants(uid: Uid, demandMs: number | null, now: number): boolean {
    if (this.proactive.has(uid)) return true;
    return demandMs !== null && now - demandMs < this.tuning.demandWindowMs;
  }

  /** Makes the link to `uid` if the policy wants it and nothing is under way; otherwise waits. */
  private reconcile(uid: Uid): void {
    if (this.stopped || !this.ready) return;
    const peer = this.peers.member(uid);
    if (!peer || this.signaling.state(uid) !== 'idle') return;
    const m = this.mappings.get(uid);
    if (!m || !this.isTrusted(m.jid)) return;
    const now = this.clock.now();
    if (!this.wants(uid, peer.demandMs, now)) return;
    const readyAt = this.backoff.readyAt(uid);
    const demand = peer.demandMs !== null && now - peer.demandMs < this.tuning.demandWindowMs;
    // Proactive glare avoidance (as GroupVPN's): the lower UID offers; the higher waits for its offer.
    let delay = 0;
    if (!demand && this.uid > uid) delay = Math.max(0, Math.max(peer.onlineSinceMs ?? 0, readyAt) + this.tuning.proactiveWaitMs - now);
    const wait = Math.max(readyAt - now, delay);
    if (wait > 0) {
      this.wake(uid, wait);
      return;
    }
    if (this.signaling.activeCount() >= this.config.max_links) {
      const victims = this.lruVictims(1);
      if (victims.length === 0) return;
      for (const v of victims) {
        this.counters.links_trimmed_lru++;
        this.signaling.trim(v, 'room for a new link (least recently used)');
      }
    }
    this.cancelWake(uid);
    if (this.signaling.connect(uid)) {
      this.counters.offers++;
      if (!demand) this.counters.offers_proactive++;
    }
  }

  private reconcileAll(): void {
    for (const p of [...this.peers.members()]) this.reconcile(p.uid);
  }

  /** Up on-demand links idle for longer than idle_timeout_s (proactive and peer-kept links stay). */
  private idleVictims(now: number): Uid[] {
    const limit = this.config.idle_timeout_s * 1000;
    if (limit <= 0) return [];
    const out: Uid[] = [];
    for (const s of this.signaling.all()) {
      if (s.state !== 'up' || this.proactive.has(s.uid) || this.peerKeeps.has(s.uid)) continue;
      if (now - this.lastActive(s.uid) > limit) out.push(s.uid);
    }
    return out;
  }

  /**
   * Up links to trim, least recently used first, so that `room` more fit under max_links: on-demand
   * links first, then links a friend keeps; never our own proactive ones.
   */
  private lruVictims(room: number): Uid[] {
    const excess = this.signaling.activeCount() + room - this.config.max_links;
    if (excess <= 0) return [];
    const up = [...this.signaling.all()].filter((s) => s.state === 'up' && !this.proactive.has(s.uid)).map((s) => s.uid);
    const rank = (u: Uid) => (this.peerKeeps.has(u) ? 1 : 0);
    return up
      .sort((a, b) => rank(a) - rank(b) || this.lastActive(a) - this.lastActive(b) || (a < b ? -1 : 1))
      .slice(0, excess);
  }

  private wake(uid: Uid, ms: number): void {
    const at = this.clock.now() + ms;
    const w = this.wakeups.get(uid);
    if (w && w.at <= at) return;
    if (w) this.clock.clearTimeout(w.timer);
    const timer = this.clock.setTimeout(() => {
      this.wakeups.delete(uid);
      this.reconcile(uid);
    }, ms);
    this.wakeups.set(uid, { at, timer });
  }

  private cancelWake(uid: Uid): void {
    const w = this.wakeups.get(uid);
    if (w) {
      this.clock.clearTimeout(w.timer);
      this.wakeups.delete(uid);
    }
  }

  // --- signaling hooks ------------------------------------------------------------------------------

  private onLinkUp(uid: Uid): void {
    const now = this.clock.now();
    this.counters.links_up++;
    this.backoff.reset(uid);
    this.activity.set(uid, now);
    if (this.mappings.has(uid) && this.dpMapped.get(uid) === undefined) void this.mapInDatapath(uid).catch(() => undefined);
    const frames = this.queue.take(uid, now);
    for (const f of frames) this.supervisor.sendPacket(f);
    this.counters.packets_reinjected += frames.length;
    this.markDirty();
  }

  private onLinkClosed(uid: Uid, reason: CloseReason, detail: string): void {
    this.activity.delete(uid);
    this.setPeerKeeps(uid, false);
    // The mapping stays while the device is online: its next packets still name it (dst UID).
    if (!this.peers.member(uid)) this.unmapInDatapath(uid);
    const now = this.clock.now();
    if (FAILURE_REASONS.has(reason)) {
      this.counters.link_failures++;
      const delay = this.backoff.fail(uid, now);
      this.log.info({ peer: uid.slice(0, 12), reason, detail, retry_in_ms: delay }, 'link failed');
      this.wake(uid, delay);
    } else if (reason === 'lost') {
      this.wake(uid, 0);
    } else {
      // Trimmed by policy: on demand, only new traffic brings it back (proactive: reconcile does).
      const peer = this.peers.get(uid);
      if (peer) peer.demandMs = null;
      this.queue.drop(uid);
    }
    this.markDirty();
  }

  // --- status -----------------------------------------------------------------------------------------

  status(): SocialVpnStatus {
    const now = this.clock.now();
    const mappings: SocialVpnMappingStatus[] = [];
    for (const [uid, m] of this.mappings) {
      const p = this.peers.get(uid);
      const s = this.signaling.session(uid);
      const retry = this.backoff.readyAt(uid);
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
        proactive: this.proactive.has(uid),
        peer_keeps: this.peerKeeps.has(uid),
        score: this.profile.score(uid, now),
        traffic_today: sum.today,
        active_days: sum.active_days,
        last_active_ms: this.activity.get(uid) ?? null,
        since_ms: m.since_ms,
        last_seen_ms: m.last_seen_ms,
        failures: this.backoff.failures(uid),
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
      datapath: {
        status: this.supervisor.status,
        restarts: this.supervisor.restarts,
        outages: this.supervisor.outages,
        last_error: this.supervisor.lastError,
      },
      xmpp: { state: this.xmppState, jid: this.xmppJid },
      roster: { source: this.roster.source, updated_ms: this.roster.updatedMs, contacts: this.roster.size, friends: this.roster.mutual().sort() },
      addresses: { used: this.pool.size, capacity: this.pool.capacity },
      links: this.signaling.activeCount(),
      mappings,
      conflicts: this.peers.conflicts(),
      state_file: { path: this.stateFile?.path ?? null, last_error: this.stateFile?.lastError ?? null },
      counters: { ...this.counters },
      refusals: { ...this.refusals },
    };
  }

  private markDirty(): void {
    this.statusFile?.update(() => this.status());
  }
}
