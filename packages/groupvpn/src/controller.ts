import { join } from 'node:path';
import type { Logger } from 'pino';
import { ip6FromUid, numberToIp4, uidFromIp4, type ConReq, type ConResp, type LinkInfo, type Uid } from '@tincan/protocol';
import {
  DEFAULT_OVERLAY_TUNING,
  EXPIRY_WARNING_MS,
  LinkPolicy,
  Membership,
  OverlayController,
  bareJid,
  Subnet4,
  ZERO_REPAIR_COUNTERS,
  errorMessage,
  ownMemberCertStatus,
  parseCaPublicKey,
  systemClock,
  type Clock,
  type MembershipStatus,
  type OwnMemberCertStatus,
  type OfferRefusal,
  type OverlayCounters,
  type OverlayHostOptions,
  type OverlayPolicy,
  type OverlayTuning,
  type Peer,
  type PeerTable,
  type RefusalCounts,
  type Signaling,
  type TrickleCounters,
  type DatapathSupervisor,
} from '@tincan/controller';
import type { GroupVpnSettings } from './config.js';
import { GroupRouting, type RoutingStatus } from './routing.js';

export type GroupVpnTuning = OverlayTuning;
export const DEFAULT_TUNING: GroupVpnTuning = DEFAULT_OVERLAY_TUNING;
export type { RefusalCounts };

/** `{config, client or connect, logger, clock, tuning, statusFile (default STATE_DIR/groupvpn-status.json), random}`. */
export interface GroupVpnControllerOptions extends OverlayHostOptions {
  config: GroupVpnSettings;
  /** Routing advertisements are repeated this often (tests shorten it). */
  routingRefreshMs?: number;
}

export interface GroupVpnCounters extends OverlayCounters {
  address_conflicts: number;
  unmapped_not_member: number;
  mappings_repaired: number;
}

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
  datapath: { status: string; restarts: number; outages: number; last_error: string | null; handler_failures: Record<string, number> };
  xmpp: { state: string; jid: string | null };
  conflicts: { uid: Uid; jids: string[]; local: boolean }[];
  links: number;
  peers: GroupVpnPeerStatus[];
  counters: GroupVpnCounters;
  refusals: RefusalCounts;
  /** Trickle ICE signaling: con_cand sent, candidates sent, applied, buffered and dropped. */
  trickle: TrickleCounters;
  routing: RoutingStatus;
  membership: GroupVpnMembershipStatus;
}

/** Who gets in (docs/security.md): the mode, refusals by reason, pending key changes, certificates. */
export interface GroupVpnMembershipStatus extends MembershipStatus {
  /** Presences refused, by reason (key_changed, no_cert, uid_taken, not_member, member_cert_…). */
  refusals: RefusalCounts;
  /** With a membership CA: our own certificate (expiry, a warning within 7 days, what is wrong). */
  own_cert: OwnMemberCertStatus | null;
  /** With a membership CA: members whose certificate expires within 7 days. */
  expiring: { uid: Uid; jid: string | null; expires_ms: number }[];
}

const IP_CACHE_MAX = 4096;
/** Structured topology: a former structural link with no traffic for this long is trimmed. */
const STALE_LINK_IDLE_MS = 30_000;
/** Structured topology: structural links are offered once the membership has been still this long. */
const RING_SETTLE_MS = 3_000;
export const STATUS_FILE = 'groupvpn-status.json';

/**
 * Config keys a running controller takes on SIGHUP (reload()); log_level is the runner's. Links
 * stay up; new values apply to the next decisions (a lower max_links trims at the next poll, new
 * STUN / TURN servers serve new links). Any other key needs a restart.
 */
export const GROUPVPN_LIVE_KEYS = ['link_policy', 'max_links', 'idle_timeout_s', 'stun', 'turn', 'routing.deny', 'routing.shortcut_pps'] as const;

/** What a member's admission established: its node certificate, and (with a CA) the subnets it may route. */
interface MemberTrust {
  cert: string;
  subnets: string[];
}

/**
 * tincan-groupvpn's policy (paper §4.3): one flat subnet; a node's UID is SHA-1 of its virtual IPv4
 * address; members are the nodes whose XMPP presence announces our network id; links are made
 * proactively or on demand, at most max_links, idle ones trimmed. The OverlayController (in
 * @tincan/controller) does the datapath, signaling and packet machinery; this class decides who is a
 * member, which address it has and which links are wanted.
 */
export class GroupVpnController {
  readonly uid: Uid;
  readonly ip4: string;
  readonly ip6: string;
  readonly subnet: Subnet4;
  readonly policy: LinkPolicy;
  readonly core: OverlayController<GroupVpnCounters>;
  readonly peers: PeerTable;
  readonly signaling: Signaling;
  readonly supervisor: DatapathSupervisor;
  readonly counters: GroupVpnCounters = {
    ...ZERO_REPAIR_COUNTERS,
    signals_received: 0, signals_malformed: 0, signals_unknown_type: 0, signals_bounced: 0, signals_refused: 0,
    signals_duplicate: 0, signals_stale: 0, glare_kept: 0, glare_yielded: 0, con_reject_sent: 0, offers: 0,
    links_up: 0, link_failures: 0, links_adopted: 0, links_trimmed_idle: 0, links_trimmed_lru: 0,
    links_trimmed_departed: 0, links_trimmed_conflict: 0, orphan_links_trimmed: 0, address_conflicts: 0, mappings_repaired: 0,
    unmapped_packets: 0, unmapped_malformed: 0, unmapped_outside_subnet: 0, unmapped_not_member: 0,
    transit_dropped: 0, packets_reinjected: 0, datapath_restarts: 0,
  };
  readonly refusals: RefusalCounts;
  readonly routing: GroupRouting;

  private readonly config: GroupVpnSettings;
  private readonly clock: Clock;
  private readonly log: Logger;
  /** Addresses we mapped in the datapath, per peer. */
  private readonly mapped = new Map<Uid, { ip4: string; ip6: string }>();
  private readonly ipCache = new Map<number, Uid>();
  /** Structural links of the structured topology are made like proactive ones (lower UID offers first). */
  private readonly structuralPolicy: LinkPolicy;
  /** When the structured ring last changed (membership). */
  private ringChangedMs = 0;
  /**
   * Members whose presence went away, until when they still count for routing (departGraceMs): an
   * XMPP server restart takes every presence away for a few seconds, and routes must not go with them.
   */
  private readonly formerMembers = new Map<Uid, { untilMs: number; trust: MemberTrust | null }>();
  private readonly departGraceMs: number;
  /**
   * Each member's trusted node certificate and granted subnets, kept while it counts as a member (its
   * channel key and its routes outlive a short XMPP outage).
   */
  private readonly lastTrust = new Map<Uid, MemberTrust | null>();
  private readonly membership: Membership;
  /** Our node certificate's fingerprint (get_state), to check our own membership certificate. */
  private ownFingerprint: string | null = null;
  private ownCertLogged = false;

  constructor(opts: GroupVpnControllerOptions) {
    const config = (this.config = opts.config);
    const tuning = { ...DEFAULT_TUNING, ...opts.tuning };
    this.clock = opts.clock ?? systemClock;
    this.log = opts.logger.child({ component: 'groupvpn' });
    this.subnet = new Subnet4(config.vnic.ip4);
    this.ip4 = this.subnet.address;
    this.uid = uidFromIp4(this.ip4);
    this.ip6 = ip6FromUid(this.uid);
    this.policy = new LinkPolicy({
      mode: config.link_policy,
      maxLinks: config.max_links,
      idleTimeoutMs: config.idle_timeout_s * 1000,
      demandWindowMs: tuning.demandWindowMs,
      proactiveWaitMs: tuning.proactiveWaitMs,
    });
    const statusPath = opts.statusFile === undefined ? join(config.state_dir, STATUS_FILE) : opts.statusFile;
    this.membership = new Membership({
      ctl: 'groupvpn',
      stateDir: opts.trustDir === undefined ? config.state_dir : opts.trustDir,
      ownBare: bareJid(config.xmpp.jid),
      members: config.members,
      ca: config.membership ? { key: parseCaPublicKey(config.membership.ca_key), network: config.network_id } : null,
      clock: this.clock,
      log: this.log,
    });
    this.core = new OverlayController({
      membership: this.membership,
      memberCert: config.member_cert ?? null,
      uid: this.uid,
      subnet: this.subnet,
      settings: config,
      policy: this.overlayPolicy(),
      counters: this.counters,
      tuning,
      host: opts,
      log: this.log,
      clock: this.clock,
      statusPath,
      status: () => this.status(),
    });
    ({ peers: this.peers, signaling: this.signaling, supervisor: this.supervisor, refusals: this.refusals } = this.core);
    this.departGraceMs = tuning.departGraceMs;
    this.structuralPolicy = new LinkPolicy({ mode: 'proactive', maxLinks: config.max_links, idleTimeoutMs: 0, proactiveWaitMs: tuning.proactiveWaitMs });
    this.routing = new GroupRouting({
      uid: this.uid,
      ip4: this.ip4,
      subnet: this.subnet,
      networkId: config.network_id,
      vnicName: config.vnic.name,
      mtu: config.vnic.mtu,
      routing: config.routing,
      supervisor: this.supervisor,
      clock: this.clock,
      log: this.log,
      pollIntervalMs: tuning.pollIntervalMs,
      ...(opts.routingRefreshMs !== undefined ? { refreshMs: opts.routingRefreshMs } : {}),
      isMember: (uid) => this.isMember(uid),
      memberCert: (uid) => this.peers.trustOf(uid)?.cert ?? this.formerMembers.get(uid)?.trust?.cert ?? null,
      grantedSubnets: (uid) =>
        this.core.grantedSubnets(uid) === null ? null : (this.peers.trustOf(uid)?.subnets ?? this.formerMembers.get(uid)?.trust?.subnets ?? []),
      stateDir: config.state_dir,
      mapPeer: (uid, ip4) => this.map(uid, ip4),
      unmapPeer: (uid) => this.unmap(uid),
      peerIp4: (uid) => this.mapped.get(uid)?.ip4,
      linked: (uid) => this.signaling.state(uid) !== 'idle',
    });
  }

  /** Attaches to the datapath (waiting for it if need be) and starts the policy loop. */
  async start(): Promise<void> {
    this.log.info(
      { network: this.config.network_id, uid: this.uid, ip4: this.config.vnic.ip4, ip6: this.ip6, policy: this.config.link_policy },
      'starting',
    );
    await this.core.start();
  }

  /**
   * Stops the controller. Links stay up: the datapath keeps forwarding without its controller, and a
   * restarted controller adopts them.
   */
  async stop(): Promise<void> {
    this.routing.stop();
    await this.core.stop();
  }

  /** SIGHUP: takes the GROUPVPN_LIVE_KEYS of a reloaded config; the links stay up. */
  reload(next: GroupVpnSettings): void {
    const c = this.config;
    // In place: the core and the routing read these objects as they decide.
    c.link_policy = next.link_policy;
    c.max_links = next.max_links;
    c.idle_timeout_s = next.idle_timeout_s;
    c.stun = next.stun;
    c.turn = next.turn;
    c.routing.shortcut_pps = next.routing.shortcut_pps;
    c.routing.deny = next.routing.deny;
    this.policy.update({ mode: c.link_policy, maxLinks: c.max_links, idleTimeoutMs: c.idle_timeout_s * 1000 });
    this.structuralPolicy.update({ mode: 'proactive', maxLinks: c.max_links, idleTimeoutMs: 0 });
    for (const uid of this.routing.setDeny(c.routing.deny)) this.signaling.trim(uid, 'routing.deny lists it now (config reloaded)');
    this.core.reconcileAll();
    this.core.markDirty();
  }

  /** The hooks the core calls: GroupVPN's decisions. */
  private overlayPolicy(): OverlayPolicy {
    const networkId = this.config.network_id;
    return {
      overlay: networkId,
      texts: {
        conflictLocal: 'address conflict: another node announces our own address',
        conflictRemote: 'address conflict: two nodes announce the same address; neither is linked until one leaves',
        conflictResolved: 'address conflict resolved',
        conflictTrim: 'address conflict',
        memberLeft: 'member offline',
        departedTrim: 'the peer left',
        roomForPeer: 'room for a link the peer asked for (least recently used)',
      },
      admit: (p) => (p.overlay === networkId ? { ok: true } : { ok: false, reason: `overlay ${JSON.stringify(p.overlay)}` }),
      identity: () => ({ overlay: networkId, ip4: this.ip4 }),
      prepare: (uid, msg) => this.prepare(uid, msg),
      datapathRestarted: () => {
        this.mapped.clear();
        this.routing.datapathRestarted();
      },
      attached: () => this.routing.attached(),
      linkUp: (uid) => this.routing.linkUp(uid),
      ...(this.config.routing.multihop ? { controlPackets: (uid: Uid) => this.routing.controlPackets(uid) } : {}),
      synced: (state, now) => {
        this.ownFingerprint = state.node.fingerprint;
        this.checkOwnCert(now);
        for (const uid of this.routing.shortcuts(state)) {
          const peer = this.peers.member(uid);
          if (peer) peer.demandMs = now;
        }
      },
      beforeReconcile: () => this.membersChanged(),
      presenceChanged: (changes) => {
        const now = this.clock.now();
        for (const c of changes) {
          if (c.after === 'member') this.formerMembers.delete(c.uid);
          else if (c.before === 'member') this.formerMembers.set(c.uid, { untilMs: now + this.departGraceMs, trust: this.lastTrust.get(c.uid) ?? null });
        }
        for (const c of changes) {
          if (c.after !== 'member') continue;
          const t = this.peers.trustOf(c.uid);
          this.lastTrust.set(c.uid, t === null ? null : { cert: t.cert, subnets: t.subnets ?? [] });
        }
        if (changes.some((c) => c.before === 'member' && c.after !== 'member')) {
          // Routes to them go when the grace ends (unless they are back).
          this.clock.setTimeout(() => {
            if (!this.core.stopped) this.membersChanged();
          }, this.departGraceMs + 1);
        }
        this.membersChanged();
      },
      foreignVnic: (node) =>
        `the datapath's vNIC belongs to node ${node.uid} (${node.ip4 ?? '?'}), not to ${this.config.vnic.ip4}: ` +
        'another controller configured it, or the config changed; restart the datapath',
      localIp4: () => this.config.vnic.ip4,
      adoptable: (link) => {
        const ip4 = this.adoptableIp4(link);
        return ip4 === undefined ? null : { ip4 };
      },
      adopted: (link) => this.adopted(link),
      idleVictims: (now) => this.idleVictims(now),
      lruVictims: (room) => {
        // Room for a new link: on demand, traffic is waiting; proactive links never push each other out.
        if (room > 0 && this.policy.mode !== 'on-demand') return [];
        return room > 0 ? this.policy.lruVictims(this.trimmable(), room) : this.policy.lruVictims(this.trimmable());
      },
      conflicted: () => void this.counters.address_conflicts++,
      joined: (uid) => {
        this.log.info({ peer: uid.slice(0, 12), jid: this.peers.get(uid)?.jid }, 'member online');
        this.membersChanged();
        this.core.backoff.reset(uid);
        this.core.reconcile(uid);
      },
      checkOffer: (peer, uid, msg) => this.checkOffer(peer, uid, msg),
      ip4Owner: (dst) => this.ip4Owner(dst),
      ip6Owner: (host) => {
        for (const p of this.peers.members()) if (p.uid.startsWith(host)) return p.uid;
        this.counters.unmapped_not_member++;
        return null;
      },
      demandPeer: (uid) => {
        const peer = this.peers.member(uid);
        if (!peer) this.counters.unmapped_not_member++;
        return peer ?? null;
      },
      ensureMapped: (uid) => {
        const peer = this.peers.get(uid);
        if (peer?.ip4 && !this.mapped.has(uid)) void this.map(uid, peer.ip4).catch(() => undefined);
      },
      observeLink: (link) => {
        // The datapath is the truth: a mapping we believe in but it lacks (a retried remove that
        // arrived after a newer add, say) is sent again.
        const m = this.mapped.get(link.uid);
        if (m && link.state === 'up' && (!link.ip4.includes(m.ip4) || !link.ip6.includes(m.ip6))) {
          this.counters.mappings_repaired++;
          this.supervisor.call('set_remote_ip', { uid: link.uid, ip4: m.ip4, ip6: m.ip6 }).catch(() => undefined);
        }
      },
      offerDelay: (peer, now, readyAt) => {
        if (this.routing.denied(peer.uid)) return null;
        if (this.routing.structural(peer.uid)) {
          // While members keep arriving (a group starting up) the ring moves; wait for it to settle.
          return Math.max(this.structuralPolicy.offerDelay(this.uid, peer, now, readyAt), this.ringChangedMs + RING_SETTLE_MS - now);
        }
        return this.policy.wants(peer, now) ? this.policy.offerDelay(this.uid, peer, now, readyAt) : null;
      },
      closed: (uid) => {
        this.routing.linkClosed(uid);
        if (!this.routing.routed(uid)) this.unmap(uid); // still reached through a neighbour: keep its mapping
      },
    };
  }

  // --- membership and addresses ---------------------------------------------------------------------

  /** The routing's admission predicate: a member now, or one gone within departGraceMs. */
  private isMember(uid: Uid): boolean {
    if (this.peers.member(uid)) return true;
    const f = this.formerMembers.get(uid);
    if (f === undefined) return false;
    if (f.untilMs > this.clock.now()) return true;
    this.formerMembers.delete(uid);
    this.lastTrust.delete(uid);
    return false;
  }

  private membersChanged(): void {
    const now = this.clock.now();
    for (const [uid, f] of this.formerMembers) {
      if (f.untilMs <= now) {
        this.formerMembers.delete(uid);
        this.lastTrust.delete(uid);
      }
    }
    if (this.routing.membersChanged([...this.peers.members()].map((p) => p.uid))) this.ringChangedMs = this.clock.now();
  }

  /**
   * Idle links to trim. Structured topology: structural links never; a link that stopped being
   * structural (the ring changed) and that no local traffic asked for goes after STALE_LINK_IDLE_MS
   * without traffic; shortcut links after idle_timeout_s like any on-demand link.
   */
  private idleVictims(now: number): Uid[] {
    const links = this.trimmable();
    const victims = new Set(this.policy.idleVictims(links, now));
    if (this.routing.topology) {
      for (const l of links) {
        const demand = this.peers.get(l.uid)?.demandMs ?? null;
        const asked = demand !== null && now - demand < this.policy.idleTimeoutMs;
        if (l.state === 'up' && !asked && now - l.lastActiveMs > STALE_LINK_IDLE_MS) victims.add(l.uid);
      }
    }
    return [...victims];
  }

  /** Links the policy may trim: structural links of the structured topology are never trimmed. */
  private trimmable(): ReturnType<OverlayController<GroupVpnCounters>['linkActivity']> {
    const links = this.core.linkActivity();
    return this.routing.topology ? links.filter((l) => !this.routing.structural(l.uid)) : links;
  }

  /** The paper's binding: a GroupVPN node's UID is SHA-1 of its virtual address. */
  private checkOffer(peer: Peer, uid: Uid, msg: ConReq | ConResp): OfferRefusal | null {
    if (this.routing.denied(uid)) {
      return { refusal: 'link_denied', detail: `routing.deny lists ${msg.ip4}`, reject: 'link_denied' };
    }
    if (!this.subnet.isPeerAddress(msg.ip4) || uidFromIp4(msg.ip4) !== uid) {
      const detail = `ip4 ${msg.ip4} does not belong to UID ${uid.slice(0, 12)} in ${this.subnet.cidr}`;
      return { refusal: 'binding_mismatch', detail, reject: 'address_mismatch' };
    }
    peer.ip4 = msg.ip4;
    return null;
  }

  /** The member an IPv4 address in the subnet belongs to: SHA-1 of it (cached). */
  private ip4Owner(dst: number): Uid {
    let uid = this.ipCache.get(dst);
    if (uid === undefined) {
      uid = uidFromIp4(numberToIp4(dst));
      if (this.ipCache.size >= IP_CACHE_MAX) this.ipCache.clear();
      this.ipCache.set(dst, uid);
    }
    return uid;
  }

  private adoptableIp4(link: LinkInfo): string | undefined {
    return link.ip4.find((ip) => this.subnet.isPeerAddress(ip) && uidFromIp4(ip) === link.uid);
  }

  /** An adopted link's peer gets its address (and the datapath its mapping if it lacks the IPv6 one). */
  private adopted(link: LinkInfo): void {
    const ip4 = this.adoptableIp4(link)!;
    this.peers.record(link.uid).ip4 = ip4;
    const ip6 = ip6FromUid(link.uid);
    this.mapped.set(link.uid, { ip4, ip6 });
    if (!link.ip6.includes(ip6)) {
      this.supervisor.call('set_remote_ip', { uid: link.uid, ip4, ip6 }).catch((err: unknown) => {
        this.log.warn({ peer: link.uid.slice(0, 12), err: errorMessage(err) }, 'cannot map an adopted link');
      });
    }
  }

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

  private unmap(uid: Uid): void {
    const m = this.mapped.get(uid);
    if (!m) return;
    this.mapped.delete(uid);
    this.supervisor
      .call('set_remote_ip', { uid, ip4: m.ip4, ip6: m.ip6, remove: true })
      .catch((err: unknown) => this.log.debug({ peer: uid.slice(0, 12), err: errorMessage(err) }, 'cannot unmap'));
  }

  /**
   * The subnets a member's membership certificate grants: what routing may accept from it. null when
   * the network has no membership CA; [] for a UID that is not an admitted member.
   */
  grantedSubnets(uid: Uid): string[] | null {
    return this.core.grantedSubnets(uid);
  }

  /** Logs (once per controller start) what is wrong with our own membership certificate, or its coming expiry. */
  private checkOwnCert(now: number): void {
    const ca = this.membership.ca;
    if (ca === null || this.ownCertLogged || this.ownFingerprint === null) return;
    this.ownCertLogged = true;
    const own = this.ownCert(now)!;
    if (own.problem) this.log.error({ problem: own.problem }, 'our membership certificate will be refused by the other members');
    else if (own.warning) this.log.warn({ expires: new Date(own.expires_ms!).toISOString() }, `our membership certificate ${own.warning}`);
  }

  private ownCert(now: number): OwnMemberCertStatus | null {
    const ca = this.membership.ca;
    if (ca === null) return null;
    return ownMemberCertStatus(ca, this.config.member_cert ?? null, { bareJid: bareJid(this.config.xmpp.jid), fingerprint: this.ownFingerprint, uid: this.uid }, now);
  }

  private membershipStatus(now: number): GroupVpnMembershipStatus {
    const expiring: GroupVpnMembershipStatus['expiring'] = [];
    for (const p of this.peers.members()) {
      const exp = this.peers.trustOf(p.uid)?.expiresMs ?? null;
      if (exp !== null && exp - now <= EXPIRY_WARNING_MS) expiring.push({ uid: p.uid, jid: p.jid, expires_ms: exp });
    }
    return { ...this.membership.status(), refusals: { ...this.core.admissionRefusals }, own_cert: this.ownCert(now), expiring };
  }

  // --- status -----------------------------------------------------------------------------------------

  status(): GroupVpnStatus {
    const now = this.clock.now();
    const peers: GroupVpnPeerStatus[] = [];
    const backoff = this.core.backoff;
    const uids = new Set<Uid>([...[...this.peers.all()].map((p) => p.uid), ...[...this.signaling.all()].map((s) => s.uid)]);
    for (const uid of uids) {
      if (uid === this.uid) continue;
      const p = this.peers.get(uid);
      const s = this.signaling.session(uid);
      if ((!p || p.status === 'absent') && (!s || s.state === 'idle')) continue;
      const retry = backoff.readyAt(uid);
      peers.push({
        uid,
        jid: p?.jid ?? null,
        ip4: p?.ip4 ?? null,
        status: p?.status ?? 'absent',
        link: s?.state ?? 'idle',
        role: s?.role ?? null,
        adopted: s?.adopted ?? false,
        last_active_ms: this.core.activity.get(uid) ?? null,
        failures: backoff.failures(uid),
        retry_at_ms: retry > now ? retry : null,
      });
    }
    peers.sort((a, b) => (a.uid < b.uid ? -1 : 1));
    return {
      updated_ms: now,
      network_id: this.config.network_id,
      node: { uid: this.uid, ip4: this.config.vnic.ip4, ip6: `${this.ip6}/64`, vnic: this.config.vnic.name },
      policy: { link_policy: this.config.link_policy, max_links: this.config.max_links, idle_timeout_s: this.config.idle_timeout_s },
      datapath: this.core.datapathStatus(),
      xmpp: this.core.xmppStatus(),
      conflicts: this.peers.conflicts(),
      links: this.signaling.activeCount(),
      peers,
      counters: { ...this.counters },
      refusals: { ...this.refusals },
      trickle: { ...this.signaling.trickleCounters },
      routing: this.routing.status(),
      membership: this.membershipStatus(now),
    };
  }
}
