import type { Logger } from 'pino';
import type { ConReq, ConResp, EventOf, LinkInfo, StateResult, TurnServer, Uid } from '@tincan/protocol';
import type { ResolvedXmpp } from './config-loader.js';
import type { Clock } from './clock.js';
import type { DatapathPort } from './datapath-port.js';
import type { Admission, Peer, PresenceChange } from './peer-table.js';
import type { SignalOutcome } from './signaling.js';

/** Timing knobs both controllers share (tests shorten them). */
export interface OverlayTuning {
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
  /** Trickle ICE with peers that take it (see Signaling); off: every description waits for gathering. */
  trickle: boolean;
}

export const DEFAULT_OVERLAY_TUNING: OverlayTuning = {
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
  trickle: true,
};

/** The counters the shared machinery keeps; each controller's counters extend these. */
export interface OverlayCounters {
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
  unmapped_packets: number;
  unmapped_malformed: number;
  unmapped_outside_subnet: number;
  transit_dropped: number;
  packets_reinjected: number;
  datapath_restarts: number;
  /** Links whose path stopped answering (link_health suspect), repairs started, done, failed. */
  links_suspect: number;
  repairs_started: number;
  links_repaired: number;
  repairs_failed: number;
  /** Departures not acted on: no evidence the peer left (our XMPP session dropped meanwhile, or its link carries). */
  departures_deferred: number;
}

/** The repair and departure counters, zero (each controller's counters start with these). */
export const ZERO_REPAIR_COUNTERS = { links_suspect: 0, repairs_started: 0, links_repaired: 0, repairs_failed: 0, departures_deferred: 0 };

/** Why signals were refused, by reason (unknown_sender, not_admitted, not_friend, …). */
export type RefusalCounts = Record<string, number>;

/** The config keys the shared machinery reads (both controllers' settings have them). */
export interface OverlaySettings {
  xmpp: ResolvedXmpp;
  vnic: { name: string; mtu: number };
  stun: string[];
  turn: TurnServer[];
  max_links: number;
  idle_timeout_s: number;
}

/** A refused con_req / con_resp: the refusal counted and logged, and the con_reject reason. */
export interface OfferRefusal {
  refusal: string;
  detail: string;
  reject: string;
}

/** Log and trim texts that differ between the controllers ("member" / "friend device", …). */
export interface OverlayTexts {
  conflictLocal: string;
  conflictRemote: string;
  conflictResolved: string;
  conflictTrim: string;
  memberLeft: string;
  departedTrim: string;
  roomForPeer: string;
}

/**
 * What a controller decides; the OverlayController does the rest. Hooks are called synchronously
 * from the core's event, poll and packet paths; none is called before start().
 */
export interface OverlayPolicy {
  /** The overlay name our presence and con_req / con_resp carry (register_svc, overlay check). */
  readonly overlay: string;
  readonly texts: OverlayTexts;
  /** Who may be a peer (PeerTable admission). */
  admit(p: { uid: Uid; jid: string; overlay: string | null }): Admission;
  /** Identity fields of our con_req / con_resp to `uid`. */
  identity(uid: Uid): { overlay: string; ip4: string } & Record<string, unknown>;
  /** Before a description is exchanged with `uid`: map its address in the datapath. */
  prepare(uid: Uid, msg: ConReq | ConResp): Promise<void>;

  // --- attaching ---
  /** The datapath restarted: forget what it held (mappings). */
  datapathRestarted(): void;
  /** The error when the datapath's vNIC belongs to another node. */
  foreignVnic(node: StateResult['node']): string;
  /** set_local_ip's ip4 (address/prefix). */
  localIp4(): string;
  /** The datapath has our vNIC and XMPP session (at start and after every datapath restart). */
  attached?(): Promise<void>;

  // --- get_state ---
  /** After presence sync while XMPP is online. */
  syncedPresences?(state: StateResult): void;
  /** Log fields of an up link found in the datapath that may be adopted, or null to trim it. */
  adoptable(link: LinkInfo): Record<string, unknown> | null;
  /** A link was adopted: map it (signaling.adopt and activity are done). */
  adopted(link: LinkInfo): void;
  /** A link tracked (or adopted) in this snapshot. */
  observeLink?(link: LinkInfo, now: number): void;
  /** After the links of a snapshot, before trimming. */
  syncedLinks?(now: number): void;
  /** Up links idle for too long. */
  idleVictims(now: number): Uid[];
  /** Up links to trim so that `room` more fit under max_links (room 0: over the limit now). */
  lruVictims(room: number): Uid[];
  /** The whole snapshot, after links and trimming (routes, counters). */
  synced?(state: StateResult, now: number): void;
  /** Before every peer is reconciled at the end of a snapshot. */
  beforeReconcile?(): void;

  // --- events ---
  presenceEvent?(e: EventOf<'presence'>): void;
  roster?(e: EventOf<'roster'>): void;
  /** Two nodes claim `uid` (or someone claims ours): count it (the core logs and trims). */
  conflicted(uid: Uid): void;
  /** A presence change made `uid` a member: log, map, reset, reconcile as the policy wants. */
  joined(uid: Uid): void;
  /** A member left (after its link was trimmed). */
  left?(uid: Uid): void;
  /** After a batch of presence changes. */
  presenceChanged?(changes: PresenceChange[]): void;

  // --- signals ---
  /** Refusal reason for a well-formed signal before the sender check, or null. */
  screen?(e: EventOf<'signal'>): string | null;
  /** Checks a con_req / con_resp from a verified sender; null accepts it. */
  checkOffer(peer: Peer, uid: Uid, msg: ConReq | ConResp): OfferRefusal | null;
  /** A con_req / con_resp was handled with this outcome. */
  signalHandled?(uid: Uid, type: 'con_req' | 'con_resp', outcome: SignalOutcome, data: unknown): void;

  // --- packets ---
  /** The peer owning an IPv4 address in the subnet (host order), or null (count why). */
  ip4Owner(dst: number): Uid | null;
  /** The peer whose UID starts with this IPv6 host part (hex), or null (count why). */
  ip6Owner(host: string): Uid | null;
  /** The member an unmapped packet may start a link to, or null (count why). */
  demandPeer(uid: Uid): Peer | null;
  /** The link is up: make sure the datapath has the peer's mapping. */
  ensureMapped(uid: Uid): void;
  /**
   * Packets the controller itself sent or received over the link to `uid` so far (inter-controller
   * messages): not counted as traffic that keeps an on-demand link from being idle.
   */
  controlPackets?(uid: Uid): number;
  /** A link came up (made by us, by the peer, or adopted after a restart). */
  linkUp?(uid: Uid): void;

  // --- making links ---
  /** How long to wait before offering to `peer`, or null if the policy does not want a link. */
  offerDelay(peer: Peer, now: number, readyAt: number): number | null;
  /** We sent an offer to `peer`. */
  offered?(peer: Peer, now: number): void;
  /** A link closed (before the core's retry / backoff bookkeeping). */
  closed(uid: Uid): void;
}

/** The constructor options both controllers take besides their config. */
export interface OverlayHostOptions {
  /** A connected datapath client (tests pass a fake). */
  client?: DatapathPort;
  /** Makes a client (reads the datapath's token): used at start and after the datapath restarts. */
  connect?: () => Promise<DatapathPort>;
  logger: Logger;
  clock?: Clock;
  tuning?: Partial<OverlayTuning>;
  /** The status file: default `STATE_DIR/<controller>-status.json`; null for none (tests read status()). */
  statusFile?: string | null;
  /** Randomness for backoff jitter (tests pass a constant). */
  random?: () => number;
  /** Where key pins live: default the config's state_dir; null keeps them in memory (tests). */
  trustDir?: string | null;
}
