import type { Logger } from 'pino';
import {
  DEFAULT_IP6_PREFIX,
  FRAME_DST_OFFSET,
  FRAME_HEADER_LEN,
  UID_BYTES,
  ip6FromUid,
  ip6ToBytes,
  parseControllerSignal,
  pinKey,
  sdpFingerprint,
  uidToBytes,
  type EventOf,
  type LinkHealth,
  type LinkInfo,
  type RpcEvent,
  type RpcResults,
  type StateResult,
  type Uid,
  type XmppAccount,
} from '@tincan/protocol';
import { Backoff } from './backoff.js';
import { xmppAccountFor } from './config-loader.js';
import type { Clock, TimerHandle } from './clock.js';
import { errorMessage, rpcErrorCode, type DatapathPort } from './datapath-port.js';
import { DatapathSupervisor } from './datapath-supervisor.js';
import { PacketQueue } from './packet-queue.js';
import type { OverlayCounters, OverlayHostOptions, OverlayPolicy, OverlaySettings, OverlayTuning, RefusalCounts } from './overlay-policy.js';
import { PeerTable, type PresenceChange, type PresenceInput } from './peer-table.js';
import { bareJid, type Membership } from './membership.js';
import type { LinkActivity } from './link-policy.js';
import { LogLimiter } from './rate-limit.js';
import { FAILURE_REASONS, Signaling, type CloseReason, type SignalOutcome } from './signaling.js';
import { StatusFile } from './status-file.js';
import type { Subnet4 } from './subnet.js';

export interface OverlayControllerOptions<C extends OverlayCounters> {
  uid: Uid;
  subnet: Subnet4;
  settings: OverlaySettings;
  policy: OverlayPolicy;
  counters: C;
  tuning: OverlayTuning;
  /** The controller's own options: client or connect, root logger, random. */
  host: OverlayHostOptions;
  /** The controller's logger (a child of host.logger); signaling and datapath get their own. */
  log: Logger;
  clock: Clock;
  /** The status file path, or null for none. */
  statusPath: string | null;
  status: () => unknown;
  /** Admission beyond the policy's: members filter, keys (pins or membership CA). */
  membership: Membership;
  /** Our membership certificate, announced in presence (register_svc member_cert), or null. */
  memberCert?: string | null;
}

const ZERO_UID = Buffer.alloc(UID_BYTES);
const ULA_PREFIX = ip6ToBytes(DEFAULT_IP6_PREFIX).subarray(0, 8);

/**
 * The machinery GroupVPN and SocialVPN share: the datapath supervisor (attach, poll, restarts),
 * event dispatch, signaling sessions (con_req / con_resp / con_reject, glare, retries with backoff),
 * unmapped packets (on-demand trigger, queue and re-injection), link bookkeeping (adoption after a
 * controller restart, idle / LRU trimming), counters and the status file. What is a peer, which
 * address it has and which links are wanted is the OverlayPolicy's.
 */
export class OverlayController<C extends OverlayCounters> {
  readonly uid: Uid;
  readonly ip6: string;
  readonly peers: PeerTable;
  readonly signaling: Signaling;
  readonly supervisor: DatapathSupervisor;
  readonly counters: C;
  readonly refusals: RefusalCounts = {};
  /** Presences refused, by reason (not_member, no_cert, key_changed, uid_taken, member_cert_…, and the policy's). */
  readonly admissionRefusals: RefusalCounts = {};
  readonly membership: Membership;
  /** The certificate last handed to the datapath per peer (set_peer_cert). */
  private readonly peerCertsSent = new Map<Uid, string>();
  readonly backoff: Backoff;
  readonly queue: PacketQueue;
  readonly warnLimiter: LogLimiter;
  /** Last activity per link (traffic from get_state, link up, local demand). */
  readonly activity = new Map<Uid, number>();
  /** Per link: packets in + out that were not the controllers' own (see noteActivity). */
  private readonly packetsSeen = new Map<Uid, number>();

  private readonly subnet: Subnet4;
  private readonly settings: OverlaySettings;
  private readonly policy: OverlayPolicy;
  private readonly tuning: OverlayTuning;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly uidBytes: Buffer;
  private readonly wakeups = new Map<Uid, { at: number; timer: TimerHandle }>();
  /**
   * Members gone offline whose up link waits out departGraceMs; `epoch`: xmppEpoch when the wait
   * began (a departure counts only if our own session stayed up meanwhile).
   */
  private readonly departures = new Map<Uid, { timer: TimerHandle; epoch: number }>();
  /** Bumped each time our XMPP session stops being online: presences seen before are not evidence after. */
  private xmppEpoch = 0;
  /** Links whose path stopped answering (link_health suspect), with why; repaired while XMPP is online. */
  private readonly suspects = new Map<Uid, string>();
  /** A failed repair's retry, per peer. */
  private readonly repairRetries = new Map<Uid, TimerHandle>();
  /** Last packet received on each link (get_state last_rx_ms): a link that carries is no departure. */
  private readonly lastRx = new Map<Uid, number>();
  /** Our XMPP session dropped because our local address went away: relink when it is back. */
  private networkChanged = false;
  private readonly statusFile: StatusFile | null;
  private readonly statusOf: () => unknown;
  private readonly memberCert: string | null;
  /** set_local_ip and register_svc done on the current datapath: the policy may act. */
  private ready = false;
  private xmppState = 'unregistered';
  /** The RPC sequence number when the last xmpp event came: an older get_state's session state is stale. */
  private xmppEventSeq = -1;
  private xmppJid: string | null = null;
  private xmppOnlineSince: number | null = null;
  private halted = false;

  constructor(opts: OverlayControllerOptions<C>) {
    this.uid = opts.uid;
    this.uidBytes = uidToBytes(this.uid);
    this.ip6 = ip6FromUid(this.uid);
    this.subnet = opts.subnet;
    this.settings = opts.settings;
    this.policy = opts.policy;
    this.counters = opts.counters;
    this.tuning = opts.tuning;
    this.clock = opts.clock;
    this.log = opts.log;
    this.statusOf = opts.status;
    this.memberCert = opts.memberCert ?? null;
    const t = this.tuning;
    const host = opts.host;
    this.backoff = new Backoff({ initialMs: t.backoffInitialMs, maxMs: t.backoffMaxMs, ...(host.random ? { random: host.random } : {}) });
    this.queue = new PacketQueue({ perPeer: t.queuePerPeer, maxAgeMs: t.queueMaxAgeMs });
    this.warnLimiter = new LogLimiter(this.clock, t.warnIntervalMs);
    this.membership = opts.membership;
    this.peers = new PeerTable({
      localUid: this.uid,
      admit: (p) => {
        const r = this.policy.admit(p);
        return r.ok ? this.membership.admit(p) : r;
      },
      onRefused: (p, reason, detail) => this.presenceRefused(p, reason, detail),
    });
    this.supervisor = new DatapathSupervisor({
      ...(host.client ? { client: host.client } : {}),
      ...(host.connect ? { connect: host.connect } : {}),
      clock: this.clock,
      logger: host.logger.child({ component: 'datapath' }),
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
      logger: host.logger.child({ component: 'signaling' }),
      offerTimeoutMs: t.offerTimeoutMs,
      connectTimeoutMs: t.connectTimeoutMs,
      downGraceMs: t.downGraceMs,
      trickle: t.trickle,
      seq: () => this.supervisor.seq,
      hooks: {
        identity: (uid) => this.policy.identity(uid),
        ice: () => ({ stun: this.settings.stun, turn: this.settings.turn }),
        prepare: (uid, msg) => this.policy.prepare(uid, msg),
        onUp: (uid) => this.onLinkUp(uid),
        onClosed: (uid, reason, detail) => this.onLinkClosed(uid, reason, detail),
        jid: (uid) => this.peers.member(uid)?.jid ?? null,
        onRepaired: (uid) => this.onRepaired(uid),
        onRepairFailed: (uid, detail) => this.onRepairFailed(uid, detail),
      },
    });
    this.statusFile = opts.statusPath === null ? null : new StatusFile(opts.statusPath, this.clock, this.log);
  }

  get stopped(): boolean {
    return this.halted;
  }

  /** Attaches to the datapath (waiting for it if need be) and starts the policy loop. */
  async start(): Promise<void> {
    await this.supervisor.start();
  }

  /** Stops; links stay up in the datapath, and a restarted controller adopts them. */
  async stop(): Promise<void> {
    if (this.halted) return;
    this.halted = true;
    this.markDirty();
    this.supervisor.stop();
    this.signaling.stop();
    for (const w of this.wakeups.values()) this.clock.clearTimeout(w.timer);
    this.wakeups.clear();
    for (const d of this.departures.values()) this.clock.clearTimeout(d.timer);
    this.departures.clear();
    for (const t of this.repairRetries.values()) this.clock.clearTimeout(t);
    this.repairRetries.clear();
    await Promise.all([this.statusFile?.flush(), this.membership.flush()]);
  }

  /** The status file is out of date (rewritten soon, at most so often). */
  markDirty(): void {
    this.statusFile?.update(this.statusOf);
  }

  // --- attaching to the datapath ------------------------------------------------------------------

  private async attach(state: StateResult, restarted: boolean, seq: number): Promise<void> {
    this.ready = false;
    if (restarted) {
      this.counters.datapath_restarts++;
      // Its links, mappings and XMPP session are gone; presences will be announced again.
      this.policy.datapathRestarted();
      this.activity.clear();
      this.packetsSeen.clear();
      this.peerCertsSent.clear();
      this.signaling.reset('the datapath restarted');
      this.handlePresence(this.peers.clear(this.clock.now()));
    }
    if (state.node.uid !== null && state.node.uid !== this.uid) throw new Error(this.policy.foreignVnic(state.node));
    await this.supervisor.call('set_local_ip', {
      uid: this.uid,
      name: this.settings.vnic.name,
      ip4: this.policy.localIp4(),
      ip6: `${this.ip6}/64`,
      mtu: this.settings.vnic.mtu,
    });
    await this.registerSvc();
    await this.fetchRoster();
    await this.policy.attached?.();
    this.ready = true;
    this.sync(state, seq);
  }

  /** One get_state snapshot: presence, links (adopt, lose, orphan), activity, trimming, policy. */
  private sync(state: StateResult, seq: number): void {
    if (this.halted) return;
    const now = this.clock.now();
    const policy = this.policy;
    this.xmppJid = state.xmpp.jid;
    this.handlePresence(this.peers.setOwnJid(state.xmpp.jid, now));
    if (seq > this.xmppEventSeq) this.setXmppState(state.xmpp.state, now);
    if (state.xmpp.state === 'online') {
      // Presences missing from the datapath's list are gone, but only once XMPP has been online long
      // enough for everyone's presence to arrive again after a reconnect.
      const settled = this.xmppOnlineSince !== null && now - this.xmppOnlineSince > this.tuning.presenceGraceMs;
      // What peers announced before we (re)started, so that no presence event told us: learned from
      // presences new to us only, or every poll would undo what a failed link made us forget.
      for (const p of state.peers) if (p.caps && !this.peers.get(p.uid)?.claims.has(p.jid)) this.signaling.peerAnnounced(p.uid, p.caps);
      this.handlePresence(this.peers.syncOnline(state.peers, now, this.tuning.presenceGraceMs, settled));
      policy.syncedPresences?.(state);
    }

    const inState = new Set<Uid>();
    for (const link of state.links) {
      inState.add(link.uid);
      const s = this.signaling.session(link.uid);
      const untracked = !s || (s.state === 'idle' && s.idleSeq < seq && s.trimsInFlight === 0);
      if (untracked) {
        if (link.state === 'up' && this.adopt(link, now)) {
          policy.observeLink?.(link, now);
          continue;
        }
        this.log.info({ peer: link.uid.slice(0, 12), state: link.state }, 'trimming a link no session owns');
        this.counters.orphan_links_trimmed++;
        this.signaling.trimOrphan(link.uid);
        continue;
      }
      if (s.state === 'idle') continue;
      // Traffic other than the controllers' own messages: a link that carries is no departure.
      if (this.noteActivity(link) && link.last_rx_ms !== null) this.lastRx.set(link.uid, link.last_rx_ms);
      policy.observeLink?.(link, now);
      if (s.state === 'up' && (link.state === 'failed' || link.state === 'down')) {
        this.signaling.handleLinkEvent(link.uid, link.state, 'seen in get_state');
      }
    }
    for (const s of [...this.signaling.all()]) {
      if (s.state !== 'idle' && s.linkSeq !== null && s.linkSeq < seq && !inState.has(s.uid)) {
        this.signaling.lost(s.uid, 'the datapath no longer has this link');
      }
    }
    policy.syncedLinks?.(now);

    for (const uid of policy.idleVictims(now)) {
      this.counters.links_trimmed_idle++;
      this.signaling.trim(uid, `idle for more than ${this.settings.idle_timeout_s} s`);
    }
    for (const uid of policy.lruVictims(0)) {
      this.counters.links_trimmed_lru++;
      this.signaling.trim(uid, `more than max_links (${this.settings.max_links}) links: least recently used`);
    }
    policy.synced?.(state, now);
    this.rejudgeKeys(now);
    this.queue.expire(now);
    this.forgetGone();
    this.syncPeerCerts();
    policy.beforeReconcile?.();
    this.reconcileAll();
    this.markDirty();
  }

  /** Drops the records of peers that are gone and hold nothing (bounded memory under churn). */
  private forgetGone(): void {
    for (const p of [...this.peers.all()]) {
      if (p.status !== 'absent' || this.wakeups.has(p.uid)) continue;
      const s = this.signaling.session(p.uid);
      if (s && s.state !== 'idle') continue;
      this.forgetPeerCert(p.uid);
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
    if (link.uid === this.uid || this.peers.get(link.uid)?.status === 'conflict') return false;
    const fields = this.policy.adoptable(link);
    if (fields === null) return false;
    this.signaling.adopt(link.uid, link.connected_ms ?? now);
    this.noteActivity(link);
    this.policy.adopted(link);
    this.policy.linkUp?.(link.uid);
    this.counters.links_adopted++;
    this.log.info({ peer: link.uid.slice(0, 12), ...fields }, 'adopted a link that was already up');
    return true;
  }

  /** Notes a link's last activity; false if nothing but the controllers' own messages crossed it since the last look. */
  private noteActivity(link: LinkInfo): boolean {
    const t = Math.max(link.last_rx_ms ?? 0, link.last_tx_ms ?? 0, link.connected_ms ?? link.created_ms);
    const own = this.policy.controlPackets?.(link.uid);
    if (own !== undefined) {
      // The controllers' own messages on the link (routing) are not traffic: only count the link as
      // active when more packets crossed it than those.
      const others = link.stats.packets_in + link.stats.packets_out - own;
      const before = this.packetsSeen.get(link.uid);
      this.packetsSeen.set(link.uid, others);
      if (before !== undefined && others <= before) return false;
    }
    this.activity.set(link.uid, Math.max(t, this.activity.get(link.uid) ?? 0));
    return true;
  }

  /** Every active session (not idle) and when it was last active (traffic, up, or attempt start). */
  linkActivity(): LinkActivity[] {
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
      // Signaling works again: offers sent into the dying session go again, repairs wait no longer.
      this.signaling.resendOffers();
      for (const uid of [...this.suspects.keys()]) this.startRepair(uid);
      if (this.networkChanged) {
        // Mobility: our address changed. The peers still send to the old one, so every link is
        // made again (new ICE candidates) now that signaling works, instead of waiting for ICE
        // consent to fail (~30 s) and a retry.
        this.networkChanged = false;
        for (const sess of [...this.signaling.all()]) {
          if (sess.state === 'up') {
            this.log.info({ peer: sess.uid.slice(0, 12) }, 'local address changed: making the link again');
            this.signaling.relink(sess.uid, 'local address changed');
          }
        }
      }
      this.reconcileAll();
    } else {
      this.xmppOnlineSince = null;
      this.xmppEpoch++;
    }
    this.markDirty();
  }

  /**
   * register_svc with our capabilities in presence. A datapath older than `caps` refuses the field
   * (bad_request): register without it then; our peers' first offers to us wait for gathering, as
   * they did before.
   */
  private async registerSvc(): Promise<void> {
    try {
      await this.registerAccount(xmppAccountFor(this.settings.xmpp));
    } catch (err) {
      // A password file the datapath cannot read (it runs as another user): the password itself, in
      // the authenticated session.
      if (this.settings.xmpp.password_file === undefined || rpcErrorCode(err) !== 'bad_request' || !errorMessage(err).includes('password_file')) throw err;
      this.log.warn({ err: errorMessage(err) }, 'the datapath cannot read the XMPP password file: sending it the password');
      await this.registerAccount(xmppAccountFor(this.settings.xmpp, true));
    }
  }

  private async registerAccount(xmpp: XmppAccount): Promise<void> {
    const base = { xmpp, overlay: this.policy.overlay, ...(this.memberCert !== null ? { member_cert: this.memberCert } : {}) };
    const caps = this.signaling.caps();
    try {
      await this.supervisor.call('register_svc', { ...base, ...(caps.length > 0 ? { caps } : {}) });
    } catch (err) {
      if (caps.length === 0 || rpcErrorCode(err) !== 'bad_request' || !errorMessage(err).includes('caps')) throw err;
      this.log.warn({ err: errorMessage(err) }, 'the datapath takes no capabilities (an older version): presence announces none');
      await this.supervisor.call('register_svc', base);
    }
  }

  // --- events ---------------------------------------------------------------------------------------

  private onEvent(e: RpcEvent): void {
    if (this.halted) return;
    const now = this.clock.now();
    switch (e.event) {
      case 'presence':
        if (e.online && e.caps) this.signaling.peerAnnounced(e.uid, e.caps);
        this.policy.presenceEvent?.(e);
        this.handlePresence(this.peers.presence(e, now));
        break;
      case 'signal':
        this.onSignal(e);
        break;
      case 'link':
        this.signaling.handleLinkEvent(e.uid, e.state, e.reason, e.repair === true);
        this.markDirty();
        break;
      case 'link_health':
        this.onLinkHealth(e.uid, e.health, e.reason ?? e.health);
        break;
      case 'candidate':
        this.signaling.handleLocalCandidate(e.uid, e.candidate ?? null);
        break;
      case 'xmpp':
        this.xmppEventSeq = this.supervisor.seq;
        if (e.state === 'connecting') this.log.debug('XMPP session connecting');
        else this.log.info({ state: e.state, reason: e.reason }, `XMPP session ${e.state}`);
        if (e.state === 'offline' && e.reason?.startsWith('network:')) this.networkChanged = true;
        this.setXmppState(e.state, now);
        break;
      case 'roster':
        this.onRoster(e, now);
        break;
    }
  }

  /** Applies presence changes: conflicts, members joining and leaving. */
  handlePresence(changes: PresenceChange[]): void {
    const texts = this.policy.texts;
    for (const c of changes) {
      if (c.after === 'conflict') {
        this.policy.conflicted(c.uid);
        const conflict = this.peers.conflicts().find((x) => x.uid === c.uid);
        const local = c.uid === this.uid;
        this.log.error({ uid: c.uid, jids: conflict?.jids, local }, local ? texts.conflictLocal : texts.conflictRemote);
        if (this.signaling.state(c.uid) !== 'idle') {
          this.counters.links_trimmed_conflict++;
          this.signaling.trim(c.uid, texts.conflictTrim);
        }
        this.queue.drop(c.uid);
      } else if (c.before === 'conflict') {
        this.log.warn({ uid: c.uid, now: c.after }, texts.conflictResolved);
      }
      if (c.after === 'member') {
        this.cancelDeparture(c.uid);
        this.sendPeerCert(c.uid);
        this.policy.joined(c.uid);
      } else if (c.before === 'member' && c.after === 'absent') {
        this.log.info({ peer: c.uid.slice(0, 12) }, texts.memberLeft);
        // Gone from XMPP: its link gets a grace period (a server restart); refused (a key change, an
        // expired certificate, a roster change): trimmed at once.
        const linked = this.signaling.state(c.uid) === 'up' || this.signaling.repairing(c.uid);
        if (linked && this.tuning.departGraceMs > 0 && !this.peers.refusedUid(c.uid)) this.scheduleDeparture(c.uid);
        else this.departed(c.uid);
      }
    }
    this.policy.presenceChanged?.(changes);
    if (changes.length) this.markDirty();
  }

  /** A member left: its link is trimmed and everything kept for it dropped. */
  private departed(uid: Uid): void {
    if (this.signaling.state(uid) !== 'idle') {
      this.counters.links_trimmed_departed++;
      this.signaling.trim(uid, this.policy.texts.departedTrim);
    }
    this.policy.left?.(uid);
    this.queue.drop(uid);
    this.backoff.reset(uid);
    this.cancelWake(uid);
  }

  /**
   * A member gone offline keeps its up link for departGraceMs; then it is trimmed only on evidence
   * that it left (departureDoubt). XMPP bootstraps links, it does not keep them: without evidence the
   * link stays and the question is asked again a grace period later.
   */
  private scheduleDeparture(uid: Uid, again = false): void {
    if (this.departures.has(uid)) return;
    if (!again) this.log.info({ peer: uid.slice(0, 12), grace_ms: this.tuning.departGraceMs }, 'peer offline on XMPP: keeping its up link for a grace period');
    const timer = this.clock.setTimeout(() => {
      const d = this.departures.get(uid);
      this.departures.delete(uid);
      if (this.halted || this.peers.member(uid) || d === undefined) return;
      const linked = this.signaling.state(uid) !== 'idle';
      const doubt = linked ? this.departureDoubt(uid, d.epoch) : null;
      if (doubt !== null) {
        this.counters.departures_deferred++;
        this.log.info({ peer: uid.slice(0, 12), why: doubt }, 'peer offline on XMPP, but no evidence it left: its link stays');
        this.scheduleDeparture(uid, true);
        return;
      }
      this.departed(uid);
      this.markDirty();
    }, this.tuning.departGraceMs);
    // Evidence needs our session up from here on: asked while it is down, the next check doubts again.
    this.departures.set(uid, { timer, epoch: this.xmppState === 'online' ? this.xmppEpoch : -1 });
  }

  /**
   * Why a member's missing presence is no evidence that it left, or null if it is: our own session
   * was not up throughout (presence unknown: a server on its way down announces everyone
   * unavailable), or its link still carries traffic.
   */
  private departureDoubt(uid: Uid, epoch: number): string | null {
    if (this.xmppState !== 'online') return 'our XMPP session is down: presence unknown';
    if (epoch !== this.xmppEpoch) return 'our XMPP session dropped since its presence went';
    const rx = this.lastRx.get(uid);
    if (rx !== undefined && this.clock.now() - rx < this.tuning.departGraceMs) return 'its link carries traffic';
    return null;
  }

  private cancelDeparture(uid: Uid): void {
    const d = this.departures.get(uid);
    if (d !== undefined) {
      this.clock.clearTimeout(d.timer);
      this.departures.delete(uid);
    }
  }

  // --- repairs (a link whose path stopped answering) ------------------------------------------------

  private onLinkHealth(uid: Uid, health: LinkHealth, reason: string): void {
    if (health === 'suspect') {
      if (!this.suspects.has(uid)) this.counters.links_suspect++;
      this.suspects.set(uid, reason);
      this.startRepair(uid);
    } else if (health === 'ok') {
      this.suspects.delete(uid);
      this.cancelRepairRetry(uid);
    }
    this.markDirty();
  }

  /** Repairs a suspect link now if signaling works (else when XMPP is back: setXmppState). */
  private startRepair(uid: Uid): void {
    const reason = this.suspects.get(uid);
    if (this.halted || !this.ready || reason === undefined || this.xmppState !== 'online') return;
    this.cancelRepairRetry(uid);
    if (this.signaling.repair(uid, `path ${reason}`)) this.counters.repairs_started++;
  }

  private onRepaired(uid: Uid): void {
    const now = this.clock.now();
    this.counters.links_repaired++;
    this.suspects.delete(uid);
    this.cancelRepairRetry(uid);
    this.backoff.reset(uid);
    this.activity.set(uid, now);
    this.policy.ensureMapped(uid);
    const frames = this.queue.take(uid, now);
    for (const f of frames) this.supervisor.sendPacket(f);
    this.counters.packets_reinjected += frames.length;
    this.markDirty();
  }

  private onRepairFailed(uid: Uid, detail: string): void {
    this.counters.repairs_failed++;
    if (this.suspects.has(uid) && !this.repairRetries.has(uid)) {
      const delay = this.backoff.fail(uid, this.clock.now());
      this.log.info({ peer: uid.slice(0, 12), detail, retry_in_ms: delay }, 'repair failed: trying again later');
      this.repairRetries.set(uid, this.clock.setTimeout(() => {
        this.repairRetries.delete(uid);
        this.startRepair(uid);
      }, delay));
    }
    this.markDirty();
  }

  private cancelRepairRetry(uid: Uid): void {
    const t = this.repairRetries.get(uid);
    if (t !== undefined) {
      this.clock.clearTimeout(t);
      this.repairRetries.delete(uid);
    }
  }

  /** Counts and (rate-limited) logs a refused signal. */
  refuse(e: EventOf<'signal'>, reason: string, detail?: string): void {
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
    const screened = this.policy.screen?.(e) ?? null;
    if (screened !== null) {
      this.refuse(e, screened);
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
    if (parsed.type === 'con_cand') {
      // Bound to a con_req / con_resp by its attempt id, whose identity was checked.
      this.countOutcome(this.signaling.handleConCand(e.uid, parsed.msg));
      return;
    }
    const msg = parsed.msg;
    const trust = sender.peer.claims.get(e.jid)?.trust ?? null;
    const sdpFp = sdpFingerprint(msg.description.sdp);
    const problem =
      msg.overlay !== this.policy.overlay
        ? { refusal: 'overlay_mismatch', detail: `overlay ${JSON.stringify(msg.overlay)}`, reject: 'overlay_mismatch' }
        : trust !== null && sdpFp !== trust.fingerprint
          ? { refusal: 'fingerprint_mismatch', detail: `description for key ${sdpFp ?? 'none'}, trusted ${trust.fingerprint}`, reject: 'fingerprint_mismatch' }
          : this.policy.checkOffer(sender.peer, e.uid, msg);
    if (problem !== null) {
      this.refuse(e, problem.refusal, problem.detail);
      if (parsed.type === 'con_req') this.reject(e.uid, e.jid, problem.reject, msg.attempt);
      return;
    }
    if (parsed.type === 'con_resp') {
      const o = this.signaling.handleConResp(e.uid, parsed.msg);
      this.policy.signalHandled?.(e.uid, 'con_resp', o, e.data);
      this.countOutcome(o);
      this.markDirty();
      return;
    }
    // con_req: room for one more link?
    if (this.signaling.state(e.uid) === 'idle' && this.signaling.activeCount() >= this.settings.max_links) {
      const victims = this.policy.lruVictims(1);
      if (victims.length === 0) {
        this.reject(e.uid, e.jid, 'max_links', msg.attempt);
        return;
      }
      for (const v of victims) {
        this.counters.links_trimmed_lru++;
        this.signaling.trim(v, this.policy.texts.roomForPeer);
      }
    }
    this.cancelWake(e.uid);
    const o = this.signaling.handleConReq(e.uid, parsed.msg);
    this.policy.signalHandled?.(e.uid, 'con_req', o, e.data);
    this.countOutcome(o);
    this.markDirty();
  }

  private countOutcome(o: SignalOutcome): void {
    if (o === 'duplicate') this.counters.signals_duplicate++;
    else if (o === 'stale') this.counters.signals_stale++;
    else if (o === 'glare_kept') this.counters.glare_kept++;
    else if (o === 'glare_yielded') this.counters.glare_yielded++;
  }

  /** Rejects a con_req; to the sender's full JID (a verified member's), never by UID. */
  private reject(uid: Uid, jid: string, reason: string, attempt: string): void {
    this.counters.con_reject_sent++;
    this.supervisor
      .call('send_signal', { jid, type: 'con_reject', data: { reason, attempt } })
      .catch((err: unknown) => this.log.debug({ peer: uid.slice(0, 12), err: errorMessage(err) }, 'cannot send con_reject'));
  }

  // --- membership -----------------------------------------------------------------------------------

  /** Counts and (rate-limited) logs a refused presence. */
  private presenceRefused(p: PresenceInput, reason: string, detail: string | undefined): void {
    this.admissionRefusals[reason] = (this.admissionRefusals[reason] ?? 0) + 1;
    const gate = this.warnLimiter.allow(`presence ${reason} ${p.jid}`);
    if (!gate.ok) return;
    const fields = { jid: p.jid, peer: p.uid.slice(0, 12), reason, detail, suppressed: gate.suppressed || undefined };
    if (reason === 'key_changed' || reason === 'uid_taken' || reason.startsWith('member_cert_') || reason === 'no_member_cert') {
      this.log.error(fields, 'presence refused: not admitted');
    } else {
      this.log.warn(fields, 'presence refused: not admitted');
    }
  }

  /** The whole roster or a push: the members filter's groups, then the policy (SocialVPN: friends). */
  private onRoster(e: EventOf<'roster'>, now: number): void {
    if (this.membership.applyRoster(e.items, e.full) && this.membership.filtering) {
      this.handlePresence(this.peers.rejudge(() => true, now));
    }
    this.policy.roster?.(e);
  }

  /**
   * At every attach (start, datapath restart) the datapath's roster events are long gone: ask for the
   * roster it holds now, so that a contact removed while this controller was down is refused (and
   * unlinked) now, before any link is adopted, not at the next XMPP login. A datapath that has no
   * roster yet sends it at login; an older one without the verb is only logged.
   */
  private async fetchRoster(): Promise<void> {
    let r: RpcResults['get_roster'];
    try {
      r = await this.supervisor.call('get_roster', {});
    } catch (err) {
      if (rpcErrorCode(err) !== 'bad_request') throw err;
      this.log.warn(
        { err: errorMessage(err) },
        'the datapath has no get_roster (an older version): roster changes made while the controller was down wait for the next XMPP login',
      );
      return;
    }
    if (r.known) this.onRoster({ event: 'roster', items: r.items, full: true }, this.clock.now());
  }

  /** Key changes the operator accepted (tincanctl trust accept), and certificates that expired. */
  private rejudgeKeys(now: number): void {
    const accepted = new Set(this.membership.takeAcceptRequests());
    if (accepted.size > 0) {
      this.handlePresence(this.peers.rejudge((p) => accepted.has(pinKey(bareJid(p.jid), p.uid)), now));
      this.markDirty();
    }
    this.handlePresence(this.peers.rejudge((_p, c) => c !== null && c.trust?.expiresMs != null && c.trust.expiresMs <= now, now));
  }

  /** Hands the member's trusted certificate to the datapath (set_peer_cert), if it has not got it. */
  private sendPeerCert(uid: Uid): void {
    const trust = this.peers.trustOf(uid);
    if (trust === null || this.peerCertsSent.get(uid) === trust.cert) return;
    this.peerCertsSent.set(uid, trust.cert);
    this.supervisor.call('set_peer_cert', { uid, cert: trust.cert }).catch((err: unknown) => {
      if (this.peerCertsSent.get(uid) === trust.cert) this.peerCertsSent.delete(uid);
      this.log.debug({ peer: uid.slice(0, 12), err: errorMessage(err) }, 'set_peer_cert failed');
    });
  }

  private forgetPeerCert(uid: Uid): void {
    if (!this.peerCertsSent.delete(uid)) return;
    this.supervisor.call('set_peer_cert', { uid, cert: null }).catch((err: unknown) => {
      this.log.debug({ peer: uid.slice(0, 12), err: errorMessage(err) }, 'set_peer_cert (forget) failed');
    });
  }

  /** Every member's certificate in the datapath (a key accepted while it stayed a member, a failed call). */
  private syncPeerCerts(): void {
    for (const p of this.peers.members()) this.sendPeerCert(p.uid);
  }

  /**
   * The subnets a member's membership certificate grants (what routing may take from it): null when
   * the network has no membership CA (no certificate restricts it), [] for a UID that is not an
   * admitted member.
   */
  grantedSubnets(uid: Uid): string[] | null {
    if (this.membership.ca === null) return null;
    return this.peers.trustOf(uid)?.subnets ?? [];
  }

  // --- unmapped packets (on-demand trigger) -------------------------------------------------------

  /**
   * A frame [src UID][dst UID or zeros][IP packet] the datapath could not send on a link. Only our
   * own packets start a link; transit frames (another node's packets) are never forwarded.
   */
  private onPacket(frame: Buffer): void {
    if (this.halted) return;
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
    const peer = this.policy.demandPeer(uid);
    if (!peer) return;
    const now = this.clock.now();
    peer.demandMs = now;
    const copy = Buffer.from(frame);
    uidToBytes(uid).copy(copy, FRAME_DST_OFFSET);
    if (this.signaling.state(uid) === 'up') {
      // The link is up but the datapath lacked a mapping (or the channel was not open): fix and forward.
      this.activity.set(uid, now);
      this.policy.ensureMapped(uid);
      this.counters.packets_reinjected++;
      this.supervisor.sendPacket(copy);
      return;
    }
    this.queue.push(uid, copy, now);
    this.reconcile(uid);
  }

  /** The peer a frame is for: its dst UID, or the owner of its IPv4 / IPv6 destination address. */
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
      return this.policy.ip4Owner(dst);
    }
    if (version === 6 && frame.length >= ipOff + 40) {
      const d = ipOff + 24;
      if (frame.compare(ULA_PREFIX, 0, 8, d, d + 8) !== 0) {
        this.counters.unmapped_outside_subnet++;
        return null;
      }
      return this.policy.ip6Owner(frame.subarray(d + 8, d + 16).toString('hex'));
    }
    this.counters.unmapped_malformed++;
    return null;
  }

  // --- making links -----------------------------------------------------------------------------------

  /** Makes the link to `uid` if the policy wants it and nothing is under way; otherwise waits. */
  reconcile(uid: Uid): void {
    if (this.halted || !this.ready) return;
    const peer = this.peers.member(uid);
    if (!peer || this.signaling.state(uid) !== 'idle') return;
    const now = this.clock.now();
    const readyAt = this.backoff.readyAt(uid);
    const delay = this.policy.offerDelay(peer, now, readyAt);
    if (delay === null) return;
    const wait = Math.max(readyAt - now, delay);
    if (wait > 0) {
      this.wake(uid, wait);
      return;
    }
    if (this.signaling.activeCount() >= this.settings.max_links) {
      const victims = this.policy.lruVictims(1);
      if (victims.length === 0) return;
      for (const v of victims) {
        this.counters.links_trimmed_lru++;
        this.signaling.trim(v, 'room for a new link (least recently used)');
      }
    }
    this.cancelWake(uid);
    if (this.signaling.connect(uid)) {
      this.counters.offers++;
      this.policy.offered?.(peer, now);
    }
  }

  reconcileAll(): void {
    for (const p of [...this.peers.members()]) this.reconcile(p.uid);
  }

  hasWake(uid: Uid): boolean {
    return this.wakeups.has(uid);
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

  cancelWake(uid: Uid): void {
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
    this.policy.ensureMapped(uid);
    this.policy.linkUp?.(uid);
    const frames = this.queue.take(uid, now);
    for (const f of frames) this.supervisor.sendPacket(f);
    this.counters.packets_reinjected += frames.length;
    this.markDirty();
  }

  private onLinkClosed(uid: Uid, reason: CloseReason, detail: string): void {
    this.policy.closed(uid);
    this.activity.delete(uid);
    this.packetsSeen.delete(uid);
    this.lastRx.delete(uid);
    this.suspects.delete(uid);
    this.cancelRepairRetry(uid);
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

  /** The XMPP session as the status file reports it. */
  xmppStatus(): { state: string; jid: string | null } {
    return { state: this.xmppState, jid: this.xmppJid };
  }

  /** The datapath connection as the status file reports it. */
  datapathStatus(): { status: string; restarts: number; outages: number; last_error: string | null; handler_failures: Record<string, number> } {
    const s = this.supervisor;
    return { status: s.status, restarts: s.restarts, outages: s.outages, last_error: s.lastError, handler_failures: { ...s.handlerFailures } };
  }
}
