import { join } from 'node:path';
import type { Logger } from 'pino';
import {
  DEFAULT_IP6_PREFIX,
  FRAME_DST_OFFSET,
  FRAME_HEADER_LEN,
  UID_BYTES,
  ip6FromUid,
  ip6ToBytes,
  numberToIp4,
  parseControllerSignal,
  uidFromIp4,
  uidToBytes,
  type ConReq,
  type ConResp,
  type EventOf,
  type LinkInfo,
  type RpcEvent,
  type StateResult,
  type Uid,
} from '@tincan/protocol';
import {
  Backoff,
  DatapathSupervisor,
  FAILURE_REASONS,
  LinkPolicy,
  LogLimiter,
  PacketQueue,
  PeerTable,
  Signaling,
  StatusFile,
  Subnet4,
  errorMessage,
  systemClock,
  type Clock,
  type CloseReason,
  type DatapathPort,
  type LinkActivity,
  type PresenceChange,
  type TimerHandle,
} from '@tincan/controller';
import type { GroupVpnSettings } from './config.js';

export interface GroupVpnTuning {
  /** get_state every this often: liveness, presence and link sync, trimming. */
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
  /**
   * A member that goes offline on XMPP while its link is up keeps the link this long before it is
   * trimmed: an XMPP server restart takes every presence away for a few seconds, and the link does not
   * need the server. A peer that is really gone is trimmed after this, or earlier if its link goes down.
   */
  departGraceMs: number;
  /** Packets kept per peer while its link is made, and for how long. */
  queuePerPeer: number;
  queueMaxAgeMs: number;
  /** Refusal warnings: at most one per sender and reason per this. */
  warnIntervalMs: number;
}

export const DEFAULT_TUNING: GroupVpnTuning = {
  pollIntervalMs: 5_000,
  offerTimeoutMs: 15_000,
  connectTimeoutMs: 45_000,
  downGraceMs: 10_000,
  proactiveWaitMs: 5_000,
  demandWindowMs: 30_000,
  backoffInitialMs: 2_000,
  backoffMaxMs: 120_000,
  presenceGraceMs: 15_000,
  departGraceMs: 10_000,
  queuePerPeer: 8,
  queueMaxAgeMs: 10_000,
  warnIntervalMs: 60_000,
};

export interface GroupVpnControllerOptions {
  config: GroupVpnSettings;
  /** A connected datapath client (tests pass a fake). */
  client?: DatapathPort;
  /** Makes a client (reads the datapath's token): used at start and after the datapath restarts. */
  connect?: () => Promise<DatapathPort>;
  logger: Logger;
  clock?: Clock;
  tuning?: Partial<GroupVpnTuning>;
  /** The status file: default `STATE_DIR/groupvpn-status.json`; null for none (tests read status()). */
  statusFile?: string | null;
  /** Randomness for backoff jitter (tests pass a constant). */
  random?: () => number;
}

export interface GroupVpnCounters {
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
  links_up: number;
  link_failures: number;
  links_adopted: number;
  links_trimmed_idle: number;
  links_trimmed_lru: number;
  links_trimmed_departed: number;
  links_trimmed_conflict: number;
  orphan_links_trimmed: number;
  address_conflicts: number;
  unmapped_packets: number;
  unmapped_malformed: number;
  unmapped_outside_subnet: number;
  unmapped_not_member: number;
  transit_dropped: number;
  packets_reinjected: number;
  datapath_restarts: number;
}

/** Why signals were refused, by reason (unknown_sender, not_admitted, binding_mismatch, …). */
export type RefusalCounts = Record<string, number>;

export interface GroupVpnPeerStatus {
  uid: Uid;
  jid: string | null;
  ip4: string | null;
  status: 'absent' | 'member' | 'conflict';
  link: string;
  role: string | null;
  adopted: boolean;
  last_active_ms: number | null;
  failures: number;
  retry_at_ms: number | null;
}

export interface GroupVpnStatus {
  updated_ms: number;
  network_id: string;
  node: { uid: Uid; ip4: string; ip6: string; vnic: string };
  policy: { link_policy: string; max_links: number; idle_timeout_s: number };
  datapath: { status: string; restarts: number; outages: number; last_error: string | null };
  xmpp: { state: string; jid: string | null };
  conflicts: { uid: Uid; jids: string[]; local: boolean }[];
  links: number;
  peers: GroupVpnPeerStatus[];
  counters: GroupVpnCounters;
  refusals: RefusalCounts;
}

const ZERO_UID = Buffer.alloc(UID_BYTES);
const ULA_PREFIX = ip6ToBytes(DEFAULT_IP6_PREFIX).subarray(0, 8);
const IP_CACHE_MAX = 4096;
export const STATUS_FILE = 'groupvpn-status.json';

/**
 * tincan-groupvpn's policy (paper §4.3): one flat subnet; a node's UID is SHA-1 of its virtual IPv4
 * address; members are the nodes whose XMPP presence announces our network id; links are made
 * proactively or on demand, at most max_links, idle ones trimmed. Everything it does to the datapath
 * goes through the RPC, and it can be restarted (or its datapath can) without tearing links down.
 */
export class GroupVpnController {
  readonly uid: Uid;
  readonly ip4: string;
  readonly ip6: string;
  readonly subnet: Subnet4;
  readonly peers: PeerTable;
  readonly signaling: Signaling;
  readonly policy: LinkPolicy;
  readonly supervisor: DatapathSupervisor;
  readonly counters: GroupVpnCounters = {
    signals_received: 0, signals_malformed: 0, signals_unknown_type: 0, signals_bounced: 0, signals_refused: 0,
    signals_duplicate: 0, signals_stale: 0, glare_kept: 0, glare_yielded: 0, con_reject_sent: 0, offers: 0,
    links_up: 0, link_failures: 0, links_adopted: 0, links_trimmed_idle: 0, links_trimmed_lru: 0,
    links_trimmed_departed: 0, links_trimmed_conflict: 0, orphan_links_trimmed: 0, address_conflicts: 0,
    unmapped_packets: 0, unmapped_malformed: 0, unmapped_outside_subnet: 0, unmapped_not_member: 0,
    transit_dropped: 0, packets_reinjected: 0, datapath_restarts: 0,
  };
  readonly refusals: RefusalCounts = {};

  private readonly config: GroupVpnSettings;
  private readonly tuning: GroupVpnTuning;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly uidBytes: Buffer;
  private readonly backoff: Backoff;
  private readonly queue: PacketQueue;
  private readonly warnLimiter: LogLimiter;
  private readonly wakeups = new Map<Uid, { at: number; timer: TimerHandle }>();
  /** Members gone offline whose up link waits out departGraceMs. */
  private readonly departures = new Map<Uid, TimerHandle>();
  /** Last activity per link (traffic from get_state, link up, local demand). */
  private readonly activity = new Map<Uid, number>();
  /** Addresses we mapped in the datapath, per peer. */
  private readonly mapped = new Map<Uid, { ip4: string; ip6: string }>();
  private readonly ipCache = new Map<number, Uid>();
  private readonly statusFile: StatusFile | null;
  /** set_local_ip and register_svc done on the current datapath: the policy may act. */
  private ready = false;
  private xmppState = 'unregistered';
  private xmppJid: string | null = null;
  private xmppOnlineSince: number | null = null;
  /** Our XMPP session dropped because our local address went away: relink when it is back. */
  private networkChanged = false;
  private stopped = false;

  constructor(opts: GroupVpnControllerOptions) {
    this.config = opts.config;
    this.tuning = { ...DEFAULT_TUNING, ...opts.tuning };
    this.clock = opts.clock ?? systemClock;
    this.log = opts.logger.child({ component: 'groupvpn' });
    this.subnet = new Subnet4(opts.config.vnic.ip4);
    this.ip4 = this.subnet.address;
    this.uid = uidFromIp4(this.ip4);
    this.uidBytes = uidToBytes(this.uid);
    this.ip6 = ip6FromUid(this.uid);
    const t = this.tuning;
    this.backoff = new Backoff({ initialMs: t.backoffInitialMs, maxMs: t.backoffMaxMs, ...(opts.random ? { random: opts.random } : {}) });
    this.queue = new PacketQueue({ perPeer: t.queuePerPeer, maxAgeMs: t.queueMaxAgeMs });
    this.warnLimiter = new LogLimiter(this.clock, t.warnIntervalMs);
    this.policy = new LinkPolicy({
      mode: opts.config.link_policy,
      maxLinks: opts.config.max_links,
      idleTimeoutMs: opts.config.idle_timeout_s * 1000,
      demandWindowMs: t.demandWindowMs,
      proactiveWaitMs: t.proactiveWaitMs,
    });
    const networkId = opts.config.network_id;
    this.peers = new PeerTable({
      localUid: this.uid,
      admit: (p) => (p.overlay === networkId ? { ok: true } : { ok: false, reason: `overlay ${JSON.stringify(p.overlay)}` }),
    });
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
        identity: () => ({ overlay: networkId, ip4: this.ip4 }),
        ice: () => ({ stun: this.config.stun, turn: this.config.turn }),
        prepare: (uid, msg) => this.prepare(uid, msg),
        onUp: (uid) => this.onLinkUp(uid),
        onClosed: (uid, reason, detail) => this.onLinkClosed(uid, reason, detail),
      },
    });
    const statusPath = opts.statusFile === undefined ? join(opts.config.state_dir, STATUS_FILE) : opts.statusFile;
    this.statusFile = statusPath === null ? null : new StatusFile(statusPath, this.clock, this.log);
  }

  /** Attaches to the datapath (waiting for it if need be) and starts the policy loop. */
  async start(): Promise<void> {
    this.log.info(
      { network: this.config.network_id, uid: this.uid, ip4: this.config.vnic.ip4, ip6: this.ip6, policy: this.config.link_policy },
      'starting',
    );
    await this.supervisor.start();
  }

  /**
   * Stops the controller. Links stay up: the datapath keeps forwarding without its controller, and a
   * restarted controller adopts them.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.markDirty();
    this.supervisor.stop();
    this.signaling.stop();
    for (const w of this.wakeups.values()) this.clock.clearTimeout(w.timer);
    this.wakeups.clear();
    for (const t of this.departures.values()) this.clock.clearTimeout(t);
    this.departures.clear();
    await this.statusFile?.flush();
  }

  // --- attaching to the datapath ------------------------------------------------------------------

  private async attach(state: StateResult, restarted: boolean, seq: number): Promise<void> {
    this.ready = false;
    if (restarted) {
      this.counters.datapath_restarts++;
      // Its links, mappings and XMPP session are gone; presences will be announced again.
      this.mapped.clear();
      this.activity.clear();
      this.signaling.reset('the datapath restarted');
      this.handlePresence(this.peers.clear(this.clock.now()));
    }
    if (state.node.uid !== null && state.node.uid !== this.uid) {
      throw new Error(
        `the datapath's vNIC belongs to node ${state.node.uid} (${state.node.ip4 ?? '?'}), not to ${this.config.vnic.ip4}: ` +
          'another controller configured it, or the config changed; restart the datapath',
      );
    }
    await this.supervisor.call('set_local_ip', {
      uid: this.uid,
      name: this.config.vnic.name,
      ip4: this.config.vnic.ip4,
      ip6: `${this.ip6}/64`,
      mtu: this.config.vnic.mtu,
    });
    await this.supervisor.call('register_svc', { xmpp: this.config.xmpp, overlay: this.config.network_id });
    this.ready = true;
    this.sync(state, seq);
  }

  /** One get_state snapshot: presence, links (adopt, lose, orphan), activity, trimming, policy. */
  private sync(state: StateResult, seq: number): void {
    if (this.stopped) return;
    const now = this.clock.now();
    this.xmppJid = state.xmpp.jid;
    this.handlePresence(this.peers.setOwnJid(state.xmpp.jid, now));
    this.setXmppState(state.xmpp.state, now);
    if (state.xmpp.state === 'online') {
      // Presences missing from the datapath's list are gone, but only once XMPP has been online long
      // enough for everyone's presence to arrive again after a reconnect.
      const settled = this.xmppOnlineSince !== null && now - this.xmppOnlineSince > this.tuning.presenceGraceMs;
      this.handlePresence(this.peers.syncOnline(state.peers, now, this.tuning.presenceGraceMs, settled));
    }

    const inState = new Set<Uid>();
    for (const link of state.links) {
      inState.add(link.uid);
      const s = this.signaling.session(link.uid);
      const untracked = !s || (s.state === 'idle' && s.idleSeq < seq && s.trimsInFlight === 0);
      if (untracked) {
        if (link.state === 'up' && this.adopt(link, now)) continue;
        this.log.info({ peer: link.uid.slice(0, 12), state: link.state }, 'trimming a link no session owns');
        this.counters.orphan_links_trimmed++;
        this.signaling.trimOrphan(link.uid);
        continue;
      }
      if (s.state === 'idle') continue;
      this.noteActivity(link);
      if (s.state === 'up' && (link.state === 'failed' || link.state === 'down')) {
        this.signaling.handleLinkEvent(link.uid, link.state, 'seen in get_state');
      }
    }
    for (const s of [...this.signaling.all()]) {
      if (s.state !== 'idle' && s.linkSeq !== null && s.linkSeq < seq && !inState.has(s.uid)) {
        this.signaling.lost(s.uid, 'the datapath no longer has this link');
      }
    }

    const links = this.linkActivity();
    for (const uid of this.policy.idleVictims(links, now)) {
      this.counters.links_trimmed_idle++;
      this.trimForPolicy(uid, `idle for more than ${this.config.idle_timeout_s} s`);
    }
    for (const uid of this.policy.lruVictims(this.linkActivity())) {
      this.counters.links_trimmed_lru++;
      this.trimForPolicy(uid, `more than max_links (${this.config.max_links}) links: least recently used`);
    }
    this.queue.expire(now);
    this.forgetGone();
    this.reconcileAll();
    this.markDirty();
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

  /** Takes over an up link found in the datapath (controller restart); false if it must go. */
  private adopt(link: LinkInfo, now: number): boolean {
    const ip4 = link.ip4.find((ip) => this.subnet.isPeerAddress(ip) && uidFromIp4(ip) === link.uid);
    const peer = this.peers.get(link.uid);
    if (!ip4 || peer?.status === 'conflict' || link.uid === this.uid) return false;
    this.signaling.adopt(link.uid, link.connected_ms ?? now);
    this.peers.record(link.uid).ip4 = ip4;
    this.noteActivity(link);
    const ip6 = ip6FromUid(link.uid);
    this.mapped.set(link.uid, { ip4, ip6 });
    if (!link.ip6.includes(ip6)) {
      this.supervisor.call('set_remote_ip', { uid: link.uid, ip4, ip6 }).catch((err: unknown) => {
        this.log.warn({ peer: link.uid.slice(0, 12), err: errorMessage(err) }, 'cannot map an adopted link');
      });
    }
    this.counters.links_adopted++;
    this.log.info({ peer: link.uid.slice(0, 12), ip4 }, 'adopted a link that was already up');
    return true;
  }

  private noteActivity(link: LinkInfo): void {
    const t = Math.max(link.last_rx_ms ?? 0, link.last_tx_ms ?? 0, link.connected_ms ?? link.created_ms);
    this.activity.set(link.uid, Math.max(t, this.activity.get(link.uid) ?? 0));
  }

  private linkActivity(): LinkActivity[] {
    const out: LinkActivity[] = [];
    for (const s of this.signaling.all()) {
      if (s.state === 'idle') continue;
      out.push({ uid: s.uid, state: s.state, lastActiveMs: this.activity.get(s.uid) ?? s.upSinceMs ?? s.sinceMs });
    }
    return out;
  }

  private setXmppState(state: string, now: number): void {
    if (state === this.xmppState) return;
    this.xmppState = state;
    if (state === 'online') {
      this.xmppOnlineSince = now;
      if (this.networkChanged) {
        // Mobility: our address changed. The peers still send to the old one, so every link is
        // made again (new ICE candidates) now that signaling works, instead of waiting for ICE
        // consent to fail (~30 s) and a retry.
        this.networkChanged = false;
        for (const s of [...this.signaling.all()]) {
          if (s.state === 'up') {
            this.log.info({ peer: s.uid.slice(0, 12) }, 'local address changed: making the link again');
            this.signaling.relink(s.uid, 'local address changed');
          }
        }
      }
      this.reconcileAll();
    } else {
      this.xmppOnlineSince = null;
    }
    this.markDirty();
  }

  // --- events ---------------------------------------------------------------------------------------

  private onEvent(e: RpcEvent): void {
    if (this.stopped) return;
    const now = this.clock.now();
    switch (e.event) {
      case 'presence':
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
        if (e.state === 'offline' && e.reason?.startsWith('network:')) this.networkChanged = true;
        this.setXmppState(e.state, now);
        break;
      case 'roster':
        break; // GroupVPN admits by network id, not by roster
    }
  }

  private handlePresence(changes: PresenceChange[]): void {
    for (const c of changes) {
      const short = c.uid.slice(0, 12);
      if (c.after === 'conflict') {
        this.counters.address_conflicts++;
        const conflict = this.peers.conflicts().find((x) => x.uid === c.uid);
        this.log.error(
          { uid: c.uid, jids: conflict?.jids, local: c.uid === this.uid },
          c.uid === this.uid
            ? 'address conflict: another node announces our own address'
            : 'address conflict: two nodes announce the same address; neither is linked until one leaves',
        );
        if (this.signaling.state(c.uid) !== 'idle') {
          this.counters.links_trimmed_conflict++;
          this.signaling.trim(c.uid, 'address conflict');
        }
        this.queue.drop(c.uid);
      } else if (c.before === 'conflict') {
        this.log.warn({ uid: c.uid, now: c.after }, 'address conflict resolved');
      }
      if (c.after === 'member') {
        this.log.info({ peer: short, jid: this.peers.get(c.uid)?.jid }, 'member online');
        this.cancelDeparture(c.uid);
        this.backoff.reset(c.uid);
        this.reconcile(c.uid);
      } else if (c.before === 'member' && c.after === 'absent') {
        this.log.info({ peer: short }, 'member offline');
        const st = this.signaling.state(c.uid);
        if (st === 'up' && this.tuning.departGraceMs > 0) {
          this.scheduleDeparture(c.uid);
        } else if (st !== 'idle') {
          this.counters.links_trimmed_departed++;
          this.trimForPolicy(c.uid, 'the peer left');
        }
        this.queue.drop(c.uid);
        this.backoff.reset(c.uid);
        this.cancelWake(c.uid);
      }
    }
    if (changes.length) this.markDirty();
  }

  private refuse(e: EventOf<'signal'>, reason: string, detail?: string): void {
    this.counters.signals_refused++;
    this.refusals[reason] = (this.refusals[reason] ?? 0) + 1;
    const gate = this.warnLimiter.allow(`${reason} ${e.jid}`);
    if (gate.ok) {
      this.log.warn(
        { jid: e.jid, uid: e.uid, type: e.type, reason, detail, suppressed: gate.suppressed || undefined },
        'signal refused',
      );
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
    if (msg.overlay !== this.config.network_id) {
      this.refuse(e, 'overlay_mismatch', `overlay ${JSON.stringify(msg.overlay)}`);
      if (parsed.type === 'con_req') this.reject(e.uid, 'overlay_mismatch', msg.attempt);
      return;
    }
    if (!this.subnet.isPeerAddress(msg.ip4) || uidFromIp4(msg.ip4) !== e.uid) {
      // The paper's binding: a GroupVPN node's UID is SHA-1 of its virtual address.
      this.refuse(e, 'binding_mismatch', `ip4 ${msg.ip4} does not belong to UID ${e.uid.slice(0, 12)} in ${this.subnet.cidr}`);
      if (parsed.type === 'con_req') this.reject(e.uid, 'address_mismatch', msg.attempt);
      return;
    }
    sender.peer.ip4 = msg.ip4;
    if (parsed.type === 'con_resp') {
      this.countOutcome(this.signaling.handleConResp(e.uid, parsed.msg));
      this.markDirty();
      return;
    }
    // con_req: room for one more link?
    if (this.signaling.state(e.uid) === 'idle' && this.signaling.activeCount() >= this.config.max_links) {
      const victims = this.policy.mode === 'on-demand' ? this.policy.lruVictims(this.linkActivity(), 1) : [];
      if (victims.length === 0) {
        this.reject(e.uid, 'max_links', msg.attempt);
        return;
      }
      for (const v of victims) {
        this.counters.links_trimmed_lru++;
        this.trimForPolicy(v, 'room for a link the peer asked for (least recently used)');
      }
    }
    this.cancelWake(e.uid);
    this.countOutcome(this.signaling.handleConReq(e.uid, parsed.msg));
    this.markDirty();
  }

  private countOutcome(o: ReturnType<Signaling['handleConReq']>): void {
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

  /** A frame [src UID][dst UID or zeros][IP packet] the datapath could not send on a link. */
  private onPacket(frame: Buffer): void {
    if (this.stopped) return;
    this.counters.unmapped_packets++;
    if (frame.length < FRAME_HEADER_LEN + 20) {
      this.counters.unmapped_malformed++;
      return;
    }
    if (frame.compare(this.uidBytes, 0, UID_BYTES, 0, UID_BYTES) !== 0) {
      this.counters.transit_dropped++; // transit for another node: GroupVPN does no overlay routing
      return;
    }
    const uid = this.destinationUid(frame);
    if (uid === null) return;
    const peer = this.peers.member(uid);
    if (!peer) {
      this.counters.unmapped_not_member++;
      return;
    }
    const now = this.clock.now();
    peer.demandMs = now;
    const copy = Buffer.from(frame);
    uidToBytes(uid).copy(copy, FRAME_DST_OFFSET);
    if (this.signaling.state(uid) === 'up') {
      // The link is up but the datapath lacked a mapping (or the channel was not open): fix and forward.
      this.activity.set(uid, now);
      if (peer.ip4 && !this.mapped.has(uid)) void this.map(uid, peer.ip4).catch(() => undefined);
      this.counters.packets_reinjected++;
      this.supervisor.sendPacket(copy);
      return;
    }
    this.queue.push(uid, copy, now);
    this.reconcile(uid);
  }

  /** The peer a frame is for: its dst UID, or derived from the IPv4 / IPv6 destination address. */
  private destinationUid(frame: Buffer): Uid | null {
    if (frame.compare(ZERO_UID, 0, UID_BYTES, FRAME_DST_OFFSET, FRAME_DST_OFFSET + UID_BYTES) !== 0) {
      return frame.subarray(FRAME_DST_OFFSET, FRAME_DST_OFFSET + UID_BYTES).toString('hex');
    }
    const ipOff = FRAME_HEADER_LEN;
    const version = frame[ipOff]! >> 4;
    if (version === 4) {
      const dst = frame.readUInt32BE(ipOff + 16);
      if (!this.subnet.isPeerHost(dst)) {
        this.counters.unmapped_outside_subnet++; // broadcast, multicast, or not ours
        return null;
      }
      let uid = this.ipCache.get(dst);
      if (uid === undefined) {
        uid = uidFromIp4(numberToIp4(dst));
        if (this.ipCache.size >= IP_CACHE_MAX) this.ipCache.clear();
        this.ipCache.set(dst, uid);
      }
      return uid;
    }
    if (version === 6 && frame.length >= ipOff + 40) {
      const d = ipOff + 24;
      if (frame.compare(ULA_PREFIX, 0, 8, d, d + 8) !== 0) {
        this.counters.unmapped_outside_subnet++;
        return null;
      }
      const host = frame.subarray(d + 8, d + 16).toString('hex');
      for (const p of this.peers.members()) if (p.uid.startsWith(host)) return p.uid;
      this.counters.unmapped_not_member++;
      return null;
    }
    this.counters.unmapped_malformed++;
    return null;
  }

  // --- policy -----------------------------------------------------------------------------------------

  /** Makes the link to `uid` if the policy wants it and nothing is under way; otherwise waits. */
  private reconcile(uid: Uid): void {
    if (this.stopped || !this.ready) return;
    const peer = this.peers.member(uid);
    if (!peer || this.signaling.state(uid) !== 'idle') return;
    const now = this.clock.now();
    if (!this.policy.wants(peer, now)) return;
    const readyAt = this.backoff.readyAt(uid);
    const wait = Math.max(readyAt - now, this.policy.offerDelay(this.uid, peer, now, readyAt));
    if (wait > 0) {
      this.wake(uid, wait);
      return;
    }
    if (this.signaling.activeCount() >= this.config.max_links) {
      // On demand, traffic is waiting: make room. Proactive links never push each other out.
      const victims = this.policy.mode === 'on-demand' ? this.policy.lruVictims(this.linkActivity(), 1) : [];
      if (victims.length === 0) return;
      for (const v of victims) {
        this.counters.links_trimmed_lru++;
        this.trimForPolicy(v, 'room for a new link (least recently used)');
      }
    }
    this.cancelWake(uid);
    if (this.signaling.connect(uid)) this.counters.offers++;
  }

  private reconcileAll(): void {
    for (const p of [...this.peers.members()]) this.reconcile(p.uid);
  }

  private trimForPolicy(uid: Uid, why: string): void {
    this.signaling.trim(uid, why);
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

  /** Trims the up link of a member gone offline unless it comes back within departGraceMs. */
  private scheduleDeparture(uid: Uid): void {
    if (this.departures.has(uid)) return;
    this.log.info({ peer: uid.slice(0, 12), grace_ms: this.tuning.departGraceMs }, 'peer offline on XMPP: keeping its up link for a grace period');
    this.departures.set(uid, this.clock.setTimeout(() => {
      this.departures.delete(uid);
      if (this.stopped || this.peers.member(uid) || this.signaling.state(uid) === 'idle') return;
      this.counters.links_trimmed_departed++;
      this.trimForPolicy(uid, 'the peer left');
      this.markDirty();
    }, this.tuning.departGraceMs));
  }

  private cancelDeparture(uid: Uid): void {
    const t = this.departures.get(uid);
    if (t !== undefined) {
      this.clock.clearTimeout(t);
      this.departures.delete(uid);
    }
  }

  private cancelWake(uid: Uid): void {
    const w = this.wakeups.get(uid);
    if (w) {
      this.clock.clearTimeout(w.timer);
      this.wakeups.delete(uid);
    }
  }

  // --- signaling hooks ------------------------------------------------------------------------------

  private async prepare(uid: Uid, msg: ConReq | ConResp): Promise<void> {
    await this.map(uid, msg.ip4);
  }

  private async map(uid: Uid, ip4: string): Promise<void> {
    const m = this.mapped.get(uid);
    if (m?.ip4 === ip4) return;
    const ip6 = ip6FromUid(uid);
    this.mapped.set(uid, { ip4, ip6 });
    try {
      await this.supervisor.call('set_remote_ip', { uid, ip4, ip6 });
    } catch (err) {
      if (this.mapped.get(uid)?.ip4 === ip4) this.mapped.delete(uid);
      throw err;
    }
  }

  private onLinkUp(uid: Uid): void {
    const now = this.clock.now();
    this.counters.links_up++;
    this.backoff.reset(uid);
    this.activity.set(uid, now);
    const peer = this.peers.get(uid);
    if (peer?.ip4 && !this.mapped.has(uid)) void this.map(uid, peer.ip4).catch(() => undefined);
    const frames = this.queue.take(uid, now);
    for (const f of frames) this.supervisor.sendPacket(f);
    this.counters.packets_reinjected += frames.length;
    this.markDirty();
  }

  private onLinkClosed(uid: Uid, reason: CloseReason, detail: string): void {
    const m = this.mapped.get(uid);
    if (m) {
      this.mapped.delete(uid);
      this.supervisor
        .call('set_remote_ip', { uid, ip4: m.ip4, ip6: m.ip6, remove: true })
        .catch((err: unknown) => this.log.debug({ peer: uid.slice(0, 12), err: errorMessage(err) }, 'cannot unmap'));
    }
    this.activity.delete(uid);
    const now = this.clock.now();
    if (FAILURE_REASONS.has(reason)) {
      this.counters.link_failures++;
      const delay = this.backoff.fail(uid, now);
      this.log.info({ peer: uid.slice(0, 12), reason, detail, retry_in_ms: delay }, 'link failed');
      this.wake(uid, delay);
    } else if (reason === 'lost') {
      this.wake(uid, 0);
    } else {
      // Trimmed by policy: on demand, only new traffic brings it back.
      const peer = this.peers.get(uid);
      if (peer) peer.demandMs = null;
      this.queue.drop(uid);
    }
    this.markDirty();
  }

  // --- status -----------------------------------------------------------------------------------------

  status(): GroupVpnStatus {
    const peers: GroupVpnPeerStatus[] = [];
    const uids = new Set<Uid>([...[...this.peers.all()].map((p) => p.uid), ...[...this.signaling.all()].map((s) => s.uid)]);
    for (const uid of uids) {
      if (uid === this.uid) continue;
      const p = this.peers.get(uid);
      const s = this.signaling.session(uid);
      if ((!p || p.status === 'absent') && (!s || s.state === 'idle')) continue;
      const retry = this.backoff.readyAt(uid);
      peers.push({
        uid,
        jid: p?.jid ?? null,
        ip4: p?.ip4 ?? null,
        status: p?.status ?? 'absent',
        link: s?.state ?? 'idle',
        role: s?.role ?? null,
        adopted: s?.adopted ?? false,
        last_active_ms: this.activity.get(uid) ?? null,
        failures: this.backoff.failures(uid),
        retry_at_ms: retry > this.clock.now() ? retry : null,
      });
    }
    peers.sort((a, b) => (a.uid < b.uid ? -1 : 1));
    return {
      updated_ms: this.clock.now(),
      network_id: this.config.network_id,
      node: { uid: this.uid, ip4: this.config.vnic.ip4, ip6: `${this.ip6}/64`, vnic: this.config.vnic.name },
      policy: { link_policy: this.config.link_policy, max_links: this.config.max_links, idle_timeout_s: this.config.idle_timeout_s },
      datapath: {
        status: this.supervisor.status,
        restarts: this.supervisor.restarts,
        outages: this.supervisor.outages,
        last_error: this.supervisor.lastError,
      },
      xmpp: { state: this.xmppState, jid: this.xmppJid },
      conflicts: this.peers.conflicts(),
      links: this.signaling.activeCount(),
      peers,
      counters: { ...this.counters },
      refusals: { ...this.refusals },
    };
  }

  private markDirty(): void {
    this.statusFile?.update(() => this.status());
  }
}
