import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { MAX_CANDIDATES_PER_SIGNAL } from '@tincan/protocol';
import type {
  Attempt,
  ConCand,
  ConReject,
  ConReq,
  ConResp,
  IceCandidate,
  LinkState,
  SessionDescription,
  TurnServer,
  Uid,
} from '@tincan/protocol';
import type { Clock, TimerHandle } from './clock.js';
import type { DatapathPort } from './datapath-port.js';
import { errorMessage } from './datapath-port.js';

/**
 * idle: no link (as far as this controller knows);
 * offering: our create_link (offer) is in flight, or our con_req is out and we wait for con_resp;
 * answering: our create_link with the peer's offer is in flight;
 * connecting: descriptions exchanged, waiting for the datapath's link event "up";
 * up: the link is up.
 */
export type SessionState = 'idle' | 'offering' | 'answering' | 'connecting' | 'up';

/**
 * Why a session went back to idle. `policy`: the controller trimmed it (idle, LRU, departure);
 * `lost`: the link vanished from the datapath (restart, or trimmed behind our back); the others are
 * failures worth a retry with backoff.
 */
export type CloseReason = 'failed' | 'timeout' | 'rejected' | 'signal_failed' | 'rpc_failed' | 'policy' | 'lost';

export const FAILURE_REASONS: ReadonlySet<CloseReason> = new Set(['failed', 'timeout', 'rejected', 'signal_failed', 'rpc_failed']);

/** What happened to a received signal (for counters and tests). */
export type SignalOutcome =
  | 'answered' // a con_req we answer (new link or replacement)
  | 'glare_kept' // a con_req during our own offer, and our UID is lower: ours stands
  | 'glare_yielded' // a con_req during our own offer, and our UID is higher: we answer theirs
  | 'duplicate' // a message seen before (answered again if useful), or a late copy
  | 'applied' // a con_resp that completes our offer
  | 'stale' // a con_resp / con_reject for no current attempt of ours
  | 'rejected' // a con_reject that ends our current attempt
  | 'buffered'; // a con_cand kept until its link has the peer's description (or its con_req arrives)

export interface SignalingHooks {
  /** The identity fields our con_req / con_resp carry. */
  identity(uid: Uid): { overlay: string; ip4: string };
  /** STUN / TURN for create_link. */
  ice(): { stun: string[]; turn: TurnServer[] };
  /**
   * Called with a verified peer message before its link is created or completed: map the peer's
   * addresses (the datapath drops frames whose inner source is not mapped to the link's peer).
   */
  prepare(uid: Uid, msg: ConReq | ConResp): Promise<void>;
  onUp(uid: Uid): void;
  onClosed(uid: Uid, reason: CloseReason, detail: string): void;
  /**
   * The full JID whose claim to `uid` the controller admitted: signals go there, never to whatever
   * JID last announced the UID. null: no admitted JID (the signal is not sent). Without this hook,
   * signals are addressed by UID.
   */
  jid?(uid: Uid): string | null;
  /** A repair's new link replaced the old one (the session stayed up throughout). */
  onRepaired?(uid: Uid): void;
  /** A repair failed; the old link is still the session's (and may still carry). */
  onRepairFailed?(uid: Uid, detail: string): void;
}

export interface SignalingOptions {
  localUid: Uid;
  rpc: Pick<DatapathPort, 'call'>;
  clock: Clock;
  logger: Logger;
  hooks: SignalingHooks;
  /** From our create_link (offer) to the peer's con_resp. */
  offerTimeoutMs?: number;
  /** From exchanged descriptions to the link being up (ICE alone may take ~40 s to fail). */
  connectTimeoutMs?: number;
  /** A link that went "down" (not failed) gets this long to come back before it is trimmed. */
  downGraceMs?: number;
  /** Resending our con_req / con_resp for a duplicate is limited to once per this. */
  resendMinMs?: number;
  /** An unanswered con_req is sent again this often until the offer times out (lost messages). */
  offerResendMs?: number;
  /** A counter of RPC calls sent, to order our link creations against get_state snapshots. */
  seq?: () => number;
  /** Attempt ids (tests pass deterministic ones). */
  newAttempt?: () => Attempt;
  /**
   * Trickle ICE (default on): we take the peer's con_cand, and send our own candidates as con_cand
   * instead of waiting for gathering when the peer said it takes them (con_req / con_resp `trickle`).
   */
  trickle?: boolean;
  /** Local candidates reported within this long go out in one con_cand (the end of gathering alone: none). */
  candidateBatchMs?: number;
}

/** Trickle ICE counters (cumulative). */
export interface TrickleCounters {
  /**
   * Our offers and answers made with trickle (candidates follow as con_cand), and made whole (after
   * gathering: trickle off, or a peer that neither announced nor said that it takes con_cand).
   */
  descriptions_trickled: number;
  descriptions_whole: number;
  /** con_cand signals sent, and the candidates in them. */
  con_cand_sent: number;
  candidates_sent: number;
  /** Peer candidates handed to the datapath (add_candidate). */
  candidates_applied: number;
  /** Peer candidates held until their link had the peer's description or their con_req arrived. */
  candidates_buffered: number;
  /** Peer candidates dropped: stale attempt, over a bound, link already up, or add_candidate failed. */
  candidates_dropped: number;
  /** Local candidate events for no current trickled link (an old link's, or before its description). */
  local_candidates_dropped: number;
}

/** Trickle state of one link attempt (reset whenever the session starts over). */
interface TrickleState {
  /** Our link was made with trickle: its candidates go to the peer as con_cand. */
  local: boolean;
  /** Our candidates reported so far (sent again with a resent con_req / con_resp). */
  sent: IceCandidate[];
  gatheringDone: boolean;
  /** Candidates waiting for the batch timer. */
  outbox: IceCandidate[];
  outboxDone: boolean;
  flushTimer: TimerHandle | null;
  /** The datapath's link has the peer's description: its candidates can be added. */
  remoteReady: boolean;
  /** Peer candidates waiting for remoteReady. */
  pending: IceCandidate[];
  /** Peer candidates already handed over (duplicates are dropped). */
  applied: Set<string>;
}

export interface Session {
  readonly uid: Uid;
  state: SessionState;
  /** Bumped whenever the session starts over; async continuations of an older generation stop. */
  gen: number;
  role: 'offerer' | 'answerer' | null;
  /** Our current offer's attempt id and description. */
  myAttempt: Attempt | null;
  myOffer: SessionDescription | null;
  answerApplied: boolean;
  /** The peer's attempt we answer, and our answer to it. */
  peerAttempt: Attempt | null;
  myAnswer: SessionDescription | null;
  /** The peer's attempts seen (answered or refused), most recent last, bounded. */
  seen: Attempt[];
  sinceMs: number;
  upSinceMs: number | null;
  /** RPC sequence number after which the datapath surely has this session's link (null: no link yet). */
  linkSeq: number | null;
  /** RPC sequence number when the session last became idle. */
  idleSeq: number;
  lastResendMs: number;
  trimsInFlight: number;
  adopted: boolean;
  timer: TimerHandle | null;
  timerKind: 'offer' | 'connect' | 'down' | null;
  /** The peer said it takes con_cand (in its con_req / con_resp; survives attempts). */
  peerTrickles: boolean;
  trickle: TrickleState;
  /** con_cand for attempts of the peer's whose con_req has not arrived yet (XMPP reordering). */
  early: Map<Attempt, IceCandidate[]>;
  /**
   * A repair is under way: the datapath makes this attempt's link beside the up one (create_link
   * `repair`), which carries on meanwhile. What the session was when the repair began, to go back to
   * if it fails; null when no repair is under way.
   */
  repair: { upSinceMs: number | null; adopted: boolean; role: Session['role'] } | null;
}

const SEEN_MAX = 8;
/** Candidates kept per link attempt (each direction), and attempts with early candidates per peer. */
const CANDIDATES_MAX = 32;
const EARLY_ATTEMPTS_MAX = 2;

/**
 * The per-peer link negotiation state machine (paper §5.3: connection request / response over the
 * notification overlay). It owns the signaling and the create_link / trim_link calls; what to link
 * and when is the caller's policy.
 *
 * - Glare (both sides offer at once): the node with the lower UID is the offerer. The higher one
 *   drops its pending offer and answers; the lower one keeps its offer, ignores the peer's and resends
 *   its con_req (in case the first was lost).
 * - Idempotent: a con_req whose attempt was seen before never tears a link down; we resend our answer
 *   instead (the first may have been lost). A con_req with a new attempt replaces the link (the peer
 *   restarted or gave up on the old one). con_resp / con_reject for another attempt are ignored.
 * - Every async step checks the session generation, so late RPC answers never act on a newer attempt.
 */
export class Signaling {
  private readonly sessions = new Map<Uid, Session>();
  /** Peers whose presence announced `trickle` (apart from sessions: an announcement makes none). */
  private readonly announcedTrickle = new Set<Uid>();
  private readonly offerTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly downGraceMs: number;
  private readonly resendMinMs: number;
  private readonly offerResendMs: number;
  private readonly seq: () => number;
  private readonly newAttempt: () => Attempt;
  private readonly trickleEnabled: boolean;
  private readonly candidateBatchMs: number;
  private readonly log: Logger;
  readonly trickleCounters: TrickleCounters = {
    descriptions_trickled: 0, descriptions_whole: 0,
    con_cand_sent: 0, candidates_sent: 0, candidates_applied: 0, candidates_buffered: 0, candidates_dropped: 0,
    local_candidates_dropped: 0,
  };

  constructor(private readonly opts: SignalingOptions) {
    this.offerTimeoutMs = opts.offerTimeoutMs ?? 15_000;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 45_000;
    this.downGraceMs = opts.downGraceMs ?? 10_000;
    this.resendMinMs = opts.resendMinMs ?? 2_000;
    this.offerResendMs = opts.offerResendMs ?? 5_000;
    this.seq = opts.seq ?? (() => 0);
    this.newAttempt = opts.newAttempt ?? (() => randomBytes(8).toString('hex'));
    this.trickleEnabled = opts.trickle ?? true;
    this.candidateBatchMs = opts.candidateBatchMs ?? 5;
    this.log = opts.logger;
  }

  state(uid: Uid): SessionState {
    return this.sessions.get(uid)?.state ?? 'idle';
  }

  session(uid: Uid): Session | undefined {
    return this.sessions.get(uid);
  }

  all(): IterableIterator<Session> {
    return this.sessions.values();
  }

  /** Sessions that hold (or are making) a link. */
  activeCount(): number {
    let n = 0;
    for (const s of this.sessions.values()) if (s.state !== 'idle') n++;
    return n;
  }

  /** What our presence announces: `trickle` when we take con_cand. */
  caps(): string[] {
    return this.trickleEnabled ? ['trickle'] : [];
  }

  /**
   * The capabilities a peer's presence announced. One that announces `trickle` gets a trickled offer
   * from the first link on. Announcing nothing teaches nothing: an older node announces nothing, yet
   * its con_req / con_resp may say it takes candidates (kept until a link fails).
   */
  peerAnnounced(uid: Uid, caps: readonly string[]): void {
    if (caps.includes('trickle')) this.announcedTrickle.add(uid);
  }

  /** Whether our next offer to `uid` trickles: the peer announced or said that it takes con_cand. */
  offersTrickled(uid: Uid): boolean {
    return this.trickleEnabled && (this.sessions.get(uid)?.peerTrickles === true || this.announcedTrickle.has(uid));
  }

  /**
   * Repairs the up link to `uid` (its path stopped answering): a new offer, marked `repair`, made
   * beside the current link, which keeps going until the new one is up. False if the session is not
   * up (nothing to repair, or something is under way already).
   */
  repair(uid: Uid, detail: string): boolean {
    const s = this.sessions.get(uid);
    if (!s || s.state !== 'up') return false;
    this.log.info({ peer: short(uid), detail }, 'repairing the link: a new one beside it');
    const before = { upSinceMs: s.upSinceMs, adopted: s.adopted, role: s.role };
    const gen = this.restart(s, 'offering', 'offerer');
    s.repair = before;
    s.linkSeq = this.seq(); // the datapath has the current link
    s.myAttempt = this.newAttempt();
    this.armOffer(s);
    void this.offer(s, gen);
    return true;
  }

  /** Whether a repair of the link to `uid` is under way. */
  repairing(uid: Uid): boolean {
    return this.sessions.get(uid)?.repair != null;
  }

  /**
   * Our signaling came back (XMPP online again): offers not answered yet go out again now, rather than
   * at their next resend (a con_req sent into a dying XMPP connection is lost).
   */
  resendOffers(): void {
    for (const s of this.sessions.values()) {
      if (s.state === 'offering' && !s.answerApplied && s.myOffer) void this.sendReq(s, s.gen, true);
    }
  }

  /** Starts an offer to `uid` if nothing is under way with it; false if a session is active. */
  connect(uid: Uid): boolean {
    const s = this.ensure(uid);
    if (s.state !== 'idle') return false;
    const gen = this.restart(s, 'offering', 'offerer');
    s.myAttempt = this.newAttempt();
    this.armOffer(s);
    void this.offer(s, gen);
    return true;
  }

  private async offer(s: Session, gen: number): Promise<void> {
    const { uid } = s;
    const trickle = this.offersTrickled(uid);
    let result;
    try {
      result = await this.opts.rpc.call('create_link', { uid, ...this.opts.hooks.ice(), ...(trickle ? { trickle } : {}), ...(s.repair ? { repair: true } : {}) });
    } catch (err) {
      if (s.gen === gen) this.fail(s, 'rpc_failed', `create_link: ${errorMessage(err)}`);
      return;
    }
    if (s.gen !== gen) return;
    if (!result.description) {
      // The datapath already has a link to this peer that we did not know about.
      if (result.state === 'up') {
        s.linkSeq = this.seq();
        this.markUp(s, true);
      } else {
        this.fail(s, 'rpc_failed', `create_link returned an existing ${result.state} link and no offer`);
      }
      return;
    }
    s.myOffer = result.description;
    s.trickle.local = trickle;
    this.countDescription(trickle);
    s.linkSeq = this.seq();
    await this.sendReq(s, gen);
  }

  private async sendReq(s: Session, gen: number, again = false): Promise<void> {
    if (!s.myOffer || !s.myAttempt) return;
    s.lastResendMs = this.opts.clock.now();
    try {
      await this.opts.rpc.call('send_signal', {
        ...this.to(s.uid),
        type: 'con_req',
        data: { ...this.opts.hooks.identity(s.uid), attempt: s.myAttempt, description: s.myOffer, ...this.trickleFlag(), ...(s.repair ? { repair: true } : {}) },
      });
    } catch (err) {
      // A repair waits for signaling to come back (resendOffers), within its offer timeout.
      if (s.gen === gen && s.state === 'offering' && !s.repair) this.fail(s, 'signal_failed', `con_req: ${errorMessage(err)}`);
      return;
    }
    if (again && s.gen === gen) this.resendCandidates(s);
  }

  /** A verified con_req from `uid`. */
  handleConReq(uid: Uid, msg: ConReq): SignalOutcome {
    const s = this.ensure(uid);
    if (s.seen.includes(msg.attempt)) {
      if (s.peerAttempt === msg.attempt && s.myAnswer && (s.state === 'connecting' || s.state === 'up')) {
        this.maybeResend(s, () => this.sendResp(s, s.gen, true));
      }
      return 'duplicate';
    }
    this.remember(s, msg.attempt);
    if (s.state === 'offering' && !s.answerApplied) {
      if (this.opts.localUid < uid) {
        // Glare, and we are the offerer: keep ours and send it again, in case the peer never got it
        // (once per attempt of the peer's: its duplicates take the "seen" path above).
        if (s.myOffer) void this.sendReq(s, s.gen, true);
        return 'glare_kept';
      }
      this.log.debug({ peer: short(uid) }, 'glare: yielding to the lower UID');
      this.answer(s, msg);
      return 'glare_yielded';
    }
    if (s.state !== 'idle') this.log.info({ peer: short(uid), was: s.state }, 'new offer from the peer: replacing the link');
    this.answer(s, msg);
    return 'answered';
  }

  private answer(s: Session, msg: ConReq): void {
    // The peer repairs: answer beside our up link (or the one our own repair keeps, on glare).
    const repair = msg.repair === true && (s.state === 'up' || s.repair !== null)
      ? s.repair ?? { upSinceMs: s.upSinceMs, adopted: s.adopted, role: s.role }
      : null;
    const gen = this.restart(s, 'answering', 'answerer');
    s.repair = repair;
    if (repair) s.linkSeq = this.seq();
    s.peerAttempt = msg.attempt;
    s.peerTrickles = msg.trickle === true;
    const early = s.early.get(msg.attempt);
    if (early) {
      s.early.delete(msg.attempt);
      s.trickle.pending.push(...early);
    }
    this.arm(s, 'connect', this.connectTimeoutMs);
    void this.doAnswer(s, gen, msg);
  }

  private async doAnswer(s: Session, gen: number, msg: ConReq): Promise<void> {
    const { uid } = s;
    try {
      await this.opts.hooks.prepare(uid, msg);
      if (s.gen !== gen) return;
      const trickle = this.trickleEnabled && s.peerTrickles;
      const r = await this.opts.rpc.call('create_link', { uid, ...this.opts.hooks.ice(), remote: msg.description, ...(trickle ? { trickle } : {}), ...(s.repair ? { repair: true } : {}) });
      if (s.gen !== gen) return;
      if (!r.description || r.description.type !== 'answer') throw new Error('create_link returned no answer');
      s.myAnswer = r.description;
      s.trickle.local = trickle;
      this.countDescription(trickle);
      s.linkSeq = this.seq();
      if (s.state === 'answering') s.state = 'connecting';
    } catch (err) {
      if (s.gen === gen) this.fail(s, 'rpc_failed', `create_link (answer): ${errorMessage(err)}`);
      return;
    }
    const sent = this.sendResp(s, gen);
    this.remoteReady(s, gen);
    await sent;
  }

  private async sendResp(s: Session, gen: number, again = false): Promise<void> {
    if (!s.myAnswer || !s.peerAttempt) return;
    s.lastResendMs = this.opts.clock.now();
    try {
      await this.opts.rpc.call('send_signal', {
        ...this.to(s.uid),
        type: 'con_resp',
        data: { ...this.opts.hooks.identity(s.uid), attempt: s.peerAttempt, description: s.myAnswer, ...this.trickleFlag() },
      });
    } catch (err) {
      if (s.gen === gen && s.state !== 'up' && !s.repair) this.fail(s, 'signal_failed', `con_resp: ${errorMessage(err)}`);
      return;
    }
    if (again && s.gen === gen) this.resendCandidates(s);
  }

  /** A verified con_resp from `uid`. */
  handleConResp(uid: Uid, msg: ConResp): SignalOutcome {
    const s = this.sessions.get(uid);
    if (!s || s.myAttempt !== msg.attempt) return 'stale';
    if (s.state !== 'offering' || s.answerApplied || !s.myOffer) return 'duplicate';
    s.answerApplied = true;
    s.peerTrickles = msg.trickle === true;
    const gen = s.gen;
    this.arm(s, 'connect', this.connectTimeoutMs);
    void (async () => {
      try {
        await this.opts.hooks.prepare(uid, msg);
        if (s.gen !== gen) return;
        await this.opts.rpc.call('create_link', { uid, ...this.opts.hooks.ice(), remote: msg.description });
        if (s.gen !== gen) return;
        if (s.state === 'offering') s.state = 'connecting';
        this.remoteReady(s, gen);
      } catch (err) {
        if (s.gen === gen) this.fail(s, 'rpc_failed', `create_link (answer): ${errorMessage(err)}`);
      }
    })();
    return 'applied';
  }

  /** A verified con_reject from `uid`. */
  handleConReject(uid: Uid, msg: ConReject): SignalOutcome {
    const s = this.sessions.get(uid);
    if (!s || s.state !== 'offering' || s.answerApplied) return 'stale';
    if (msg.attempt !== undefined && msg.attempt !== s.myAttempt) return 'stale';
    this.fail(s, 'rejected', `${msg.reason}${msg.message ? `: ${msg.message}` : ''}`);
    return 'rejected';
  }

  // --- trickle ICE ---------------------------------------------------------------------------------

  private countDescription(trickled: boolean): void {
    if (trickled) this.trickleCounters.descriptions_trickled++;
    else this.trickleCounters.descriptions_whole++;
  }

  /**
   * A verified con_cand from `uid`: the peer's candidates for one link attempt. Those for the current
   * attempt go to the datapath once its link has the peer's description (held until then); those for
   * an attempt whose con_req has not arrived yet are held for it (bounded); others are stale.
   */
  handleConCand(uid: Uid, msg: ConCand): SignalOutcome {
    const s = this.ensure(uid);
    const current =
      s.state !== 'idle' &&
      ((s.role === 'offerer' && s.myAttempt === msg.attempt) || (s.role === 'answerer' && s.peerAttempt === msg.attempt));
    if (!current) {
      if (s.seen.includes(msg.attempt) || s.myAttempt === msg.attempt) {
        this.trickleCounters.candidates_dropped += msg.candidates.length;
        return 'stale';
      }
      return this.holdEarly(s, msg);
    }
    if (s.state === 'up') {
      this.trickleCounters.candidates_dropped += msg.candidates.length;
      return 'duplicate';
    }
    const t = s.trickle;
    const fresh = msg.candidates.filter((c) => !t.applied.has(candidateKey(c)) && !t.pending.some((p) => candidateKey(p) === candidateKey(c)));
    if (t.remoteReady) {
      this.addCandidates(s, fresh);
      return 'applied';
    }
    const room = Math.max(0, CANDIDATES_MAX - t.pending.length);
    t.pending.push(...fresh.slice(0, room));
    this.trickleCounters.candidates_buffered += Math.min(room, fresh.length);
    this.trickleCounters.candidates_dropped += Math.max(0, fresh.length - room);
    return 'buffered';
  }

  /**
   * A local candidate of `uid`'s link from the datapath (`null`: gathering is complete). It goes to
   * the peer in a con_cand, batched with those reported within candidateBatchMs.
   */
  handleLocalCandidate(uid: Uid, candidate: IceCandidate | null): void {
    const s = this.sessions.get(uid);
    const described = s !== undefined && (s.role === 'offerer' ? s.myOffer !== null : s.role === 'answerer' && s.myAnswer !== null);
    if (!s || !described || !s.trickle.local || s.state === 'idle') {
      // An old link's, or one made without trickle: the events of a link follow its create_link answer.
      this.trickleCounters.local_candidates_dropped++;
      return;
    }
    if (s.state === 'up') return; // the peer needs no more candidates
    const t = s.trickle;
    if (candidate === null) {
      t.gatheringDone = true;
      t.outboxDone = true;
    } else {
      if (t.sent.length >= CANDIDATES_MAX) {
        this.trickleCounters.local_candidates_dropped++;
        return;
      }
      t.sent.push(candidate);
      t.outbox.push(candidate);
    }
    if (t.flushTimer !== null) return;
    const gen = s.gen;
    t.flushTimer = this.opts.clock.setTimeout(() => {
      t.flushTimer = null;
      if (s.gen !== gen || s.state === 'idle') return;
      const batch = t.outbox.splice(0);
      const done = t.outboxDone;
      t.outboxDone = false;
      // The end of gathering alone is not worth a stanza: the peer's libjuice cannot be told of it.
      if (batch.length > 0) this.sendCandidates(s, batch, done);
    }, this.candidateBatchMs);
  }

  /** Where a signal to `uid` goes: the admitted full JID (throws when there is none), or the UID. */
  private to(uid: Uid): { jid: string } | { uid: Uid } {
    const hook = this.opts.hooks.jid;
    if (!hook) return { uid };
    const jid = hook(uid);
    if (jid === null) throw new Error(`no admitted XMPP JID for ${short(uid)}`);
    return { jid };
  }

  private trickleFlag(): { trickle?: true } {
    return this.trickleEnabled ? { trickle: true } : {};
  }

  /** Our con_req / con_resp went out again (the first may have been lost): so do our candidates. */
  private resendCandidates(s: Session): void {
    const t = s.trickle;
    if (t.local && (t.sent.length > 0 || t.gatheringDone)) this.sendCandidates(s, [...t.sent], t.gatheringDone);
  }

  private sendCandidates(s: Session, candidates: IceCandidate[], done: boolean): void {
    const attempt = s.role === 'offerer' ? s.myAttempt : s.peerAttempt;
    if (attempt === null) return;
    for (let i = 0; i < candidates.length || (i === 0 && done); i += MAX_CANDIDATES_PER_SIGNAL) {
      const chunk = candidates.slice(i, i + MAX_CANDIDATES_PER_SIGNAL);
      const last = i + MAX_CANDIDATES_PER_SIGNAL >= candidates.length;
      this.trickleCounters.con_cand_sent++;
      this.trickleCounters.candidates_sent += chunk.length;
      let to;
      try {
        to = this.to(s.uid);
      } catch {
        return;
      }
      this.opts.rpc
        .call('send_signal', { ...to, type: 'con_cand', data: { attempt, candidates: chunk, ...(done && last ? { done: true } : {}) } })
        .catch((err: unknown) => this.log.debug({ peer: short(s.uid), err: errorMessage(err) }, 'cannot send con_cand'));
    }
  }

  /** The datapath's link has the peer's description now: the held candidates go to it. */
  private remoteReady(s: Session, gen: number): void {
    if (s.gen !== gen) return;
    s.trickle.remoteReady = true;
    if (s.trickle.pending.length > 0) this.addCandidates(s, s.trickle.pending.splice(0));
  }

  private addCandidates(s: Session, candidates: IceCandidate[]): void {
    const t = s.trickle;
    const fresh = candidates.filter((c) => !t.applied.has(candidateKey(c)));
    if (fresh.length === 0) return;
    if (t.applied.size + fresh.length > CANDIDATES_MAX) {
      this.trickleCounters.candidates_dropped += fresh.length;
      return;
    }
    for (const c of fresh) t.applied.add(candidateKey(c));
    this.opts.rpc.call('add_candidate', { uid: s.uid, candidates: fresh }).then(
      () => {
        this.trickleCounters.candidates_applied += fresh.length;
      },
      (err: unknown) => {
        this.trickleCounters.candidates_dropped += fresh.length;
        this.log.debug({ peer: short(s.uid), err: errorMessage(err) }, 'add_candidate failed');
      },
    );
  }

  /** con_cand for an attempt of the peer's we have not seen: kept for its con_req (bounded). */
  private holdEarly(s: Session, msg: ConCand): SignalOutcome {
    let held = s.early.get(msg.attempt);
    if (!held) {
      while (s.early.size >= EARLY_ATTEMPTS_MAX) {
        const [oldest, cands] = s.early.entries().next().value!;
        this.trickleCounters.candidates_dropped += cands.length;
        s.early.delete(oldest);
      }
      held = [];
      s.early.set(msg.attempt, held);
    }
    const room = Math.max(0, CANDIDATES_MAX - held.length);
    held.push(...msg.candidates.slice(0, room));
    this.trickleCounters.candidates_buffered += Math.min(room, msg.candidates.length);
    this.trickleCounters.candidates_dropped += Math.max(0, msg.candidates.length - room);
    return 'buffered';
  }

  /** A link event from the datapath (`repair`: about a repair's new link). */
  handleLinkEvent(uid: Uid, state: LinkState, reason?: string, repair = false): void {
    const s = this.sessions.get(uid);
    if (!s || s.state === 'idle') return;
    if (state === 'connecting') return;
    if (repair) {
      if (s.repair && state === 'failed') this.fail(s, 'failed', reason ?? 'repair failed');
      return;
    }
    if (state === 'up') {
      if (s.linkSeq === null && !s.answerApplied && s.state !== 'answering') return; // not our link yet
      if (s.state !== 'up' || s.timerKind === 'down') this.markUp(s, false);
      return;
    }
    // down or failed
    if (reason === 'trimmed') {
      if (s.trimsInFlight > 0) return; // ours
      this.close(s, 'lost', 'trimmed by someone else', false);
      return;
    }
    if (s.linkSeq === null && s.state === 'offering') return; // the link we are about to replace
    if (state === 'failed') {
      this.fail(s, 'failed', reason ?? 'link failed');
    } else if (s.state === 'up') {
      // "down" may be a transient ICE disconnect: give it a moment to recover.
      if (s.timerKind !== 'down') this.arm(s, 'down', this.downGraceMs);
    } else {
      this.fail(s, 'failed', reason ?? 'link down');
    }
  }

  /** The controller trims the link (idle, LRU, departure, conflict). */
  trim(uid: Uid, detail: string): void {
    const s = this.sessions.get(uid);
    if (!s || s.state === 'idle') return;
    this.close(s, 'policy', detail, true);
  }

  /**
   * Drops the link and lets the caller make it again at once (reason `lost`): our network changed
   * (mobility), so the old ICE path is likely dead even if the link still looks up.
   */
  relink(uid: Uid, detail: string): void {
    const s = this.sessions.get(uid);
    if (!s || s.state === 'idle') return;
    this.close(s, 'lost', detail, true);
  }

  /** An up link found in the datapath with no session (controller restart): take it over. */
  adopt(uid: Uid, upSinceMs: number): void {
    const s = this.ensure(uid);
    if (s.state !== 'idle') return;
    this.restart(s, 'up', null);
    s.linkSeq = this.seq();
    s.adopted = true;
    s.upSinceMs = upSinceMs;
  }

  /** The datapath no longer has the session's link (restart, external trim): back to idle. */
  lost(uid: Uid, detail: string): void {
    const s = this.sessions.get(uid);
    if (!s || s.state === 'idle') return;
    this.close(s, 'lost', detail, false);
  }

  /** Trims a link the datapath has but no session owns (left over, or half made by a crashed controller). */
  trimOrphan(uid: Uid): void {
    const s = this.ensure(uid);
    if (s.state !== 'idle') return;
    this.sendTrim(s);
  }

  /** Everything is gone (the datapath restarted): every session to idle, without RPCs. */
  reset(detail: string): void {
    for (const s of this.sessions.values()) if (s.state !== 'idle') this.close(s, 'lost', detail, false);
  }

  /** Drops the record of an idle session (the peer is gone for good). */
  forget(uid: Uid): void {
    this.announcedTrickle.delete(uid);
    const s = this.sessions.get(uid);
    if (s && s.state === 'idle' && s.trimsInFlight === 0) this.sessions.delete(uid);
  }

  stop(): void {
    for (const s of this.sessions.values()) {
      s.gen++;
      this.disarm(s);
      this.resetTrickle(s);
    }
  }

  // --- internals -----------------------------------------------------------------------------------

  private ensure(uid: Uid): Session {
    let s = this.sessions.get(uid);
    if (!s) {
      s = {
        uid, state: 'idle', gen: 0, role: null, myAttempt: null, myOffer: null, answerApplied: false,
        peerAttempt: null, myAnswer: null, seen: [], sinceMs: this.opts.clock.now(), upSinceMs: null,
        linkSeq: null, idleSeq: this.seq(), lastResendMs: 0, trimsInFlight: 0, adopted: false,
        timer: null, timerKind: null, peerTrickles: false, trickle: freshTrickle(), early: new Map(), repair: null,
      };
      this.sessions.set(uid, s);
    }
    return s;
  }

  /** Starts a new generation in `state`; returns it. */
  private restart(s: Session, state: SessionState, role: Session['role']): number {
    this.disarm(s);
    s.gen++;
    s.state = state;
    s.role = role;
    s.myAttempt = null;
    s.myOffer = null;
    s.answerApplied = false;
    s.peerAttempt = null;
    s.myAnswer = null;
    s.sinceMs = this.opts.clock.now();
    s.upSinceMs = null;
    s.linkSeq = null;
    s.adopted = false;
    s.repair = null;
    this.resetTrickle(s);
    return s.gen;
  }

  private resetTrickle(s: Session): void {
    if (s.trickle.flushTimer !== null) this.opts.clock.clearTimeout(s.trickle.flushTimer);
    s.trickle = freshTrickle();
  }

  private remember(s: Session, attempt: Attempt): void {
    s.seen.push(attempt);
    if (s.seen.length > SEEN_MAX) s.seen.shift();
  }

  private maybeResend(s: Session, send: () => Promise<void>): void {
    if (this.opts.clock.now() - s.lastResendMs < this.resendMinMs) return;
    void send();
  }

  private markUp(s: Session, adopted: boolean): void {
    this.disarm(s);
    const wasUp = s.state === 'up';
    s.state = 'up';
    s.adopted = adopted;
    if (s.repair) {
      // The repair's link took the old one's place: the session was never down.
      s.upSinceMs = s.repair.upSinceMs;
      s.repair = null;
      this.log.info({ peer: short(s.uid), role: s.role }, 'link repaired');
      this.opts.hooks.onRepaired?.(s.uid);
      return;
    }
    if (!wasUp) {
      s.upSinceMs = this.opts.clock.now();
      this.log.info({ peer: short(s.uid), role: s.role }, 'link up');
      this.opts.hooks.onUp(s.uid);
    }
  }

  private fail(s: Session, reason: CloseReason, detail: string): void {
    if (s.repair) {
      this.repairFailed(s, reason, detail);
      return;
    }
    // The next attempt gathers in full before it offers, in case trickling was the trouble.
    if (reason === 'failed' || reason === 'timeout') {
      s.peerTrickles = false;
      this.announcedTrickle.delete(s.uid);
    }
    this.log.info({ peer: short(s.uid), state: s.state, reason, detail }, 'link attempt closed');
    this.close(s, reason, detail, true);
  }

  /**
   * A repair failed (timeout, rejected, its link failed): its new link goes, the session is up again
   * on the old one, which may still carry (or fail on its own, as any link).
   */
  private repairFailed(s: Session, reason: CloseReason, detail: string): void {
    const before = s.repair!;
    this.log.info({ peer: short(s.uid), reason, detail }, 'repair failed: back to the old link');
    this.restart(s, 'up', before.role);
    s.upSinceMs = before.upSinceMs;
    s.adopted = before.adopted;
    s.linkSeq = this.seq();
    s.trimsInFlight++;
    this.opts.rpc
      .call('trim_link', { uid: s.uid, spare: true })
      .catch((err: unknown) => this.log.debug({ peer: short(s.uid), err: errorMessage(err) }, 'trim_link (spare) failed'))
      .finally(() => {
        s.trimsInFlight--;
      });
    this.opts.hooks.onRepairFailed?.(s.uid, `${reason}: ${detail}`);
  }

  private close(s: Session, reason: CloseReason, detail: string, trim: boolean): void {
    if (reason === 'policy' || reason === 'lost') this.log.info({ peer: short(s.uid), state: s.state, reason, detail }, 'link closed');
    this.restart(s, 'idle', null);
    s.idleSeq = this.seq();
    if (trim) this.sendTrim(s);
    this.opts.hooks.onClosed(s.uid, reason, detail);
  }

  private sendTrim(s: Session): void {
    s.trimsInFlight++;
    this.opts.rpc
      .call('trim_link', { uid: s.uid })
      .catch((err: unknown) => this.log.debug({ peer: short(s.uid), err: errorMessage(err) }, 'trim_link failed'))
      .finally(() => {
        s.trimsInFlight--;
      });
  }

  private arm(s: Session, kind: 'offer' | 'connect' | 'down', ms: number): void {
    this.disarm(s);
    const gen = s.gen;
    s.timerKind = kind;
    s.timer = this.opts.clock.setTimeout(() => {
      s.timer = null;
      s.timerKind = null;
      if (s.gen !== gen) return;
      if (kind === 'down') this.fail(s, 'failed', `link down for ${ms / 1000} s`);
      else this.fail(s, 'timeout', kind === 'offer' ? 'no answer to our offer' : 'link did not come up');
    }, ms);
  }

  /** The offer timeout, in steps: each step without an answer sends the con_req again. */
  private armOffer(s: Session): void {
    const remaining = s.sinceMs + this.offerTimeoutMs - this.opts.clock.now();
    if (remaining <= 0 || remaining <= this.offerResendMs) {
      this.arm(s, 'offer', Math.max(0, remaining));
      return;
    }
    this.disarm(s);
    const gen = s.gen;
    s.timerKind = 'offer';
    s.timer = this.opts.clock.setTimeout(() => {
      s.timer = null;
      s.timerKind = null;
      if (s.gen !== gen || s.state !== 'offering' || s.answerApplied) return;
      if (s.myOffer) void this.sendReq(s, gen, true);
      this.armOffer(s);
    }, this.offerResendMs);
  }

  private disarm(s: Session): void {
    if (s.timer !== null) this.opts.clock.clearTimeout(s.timer);
    s.timer = null;
    s.timerKind = null;
  }
}

function freshTrickle(): TrickleState {
  return {
    local: false, sent: [], gatheringDone: false, outbox: [], outboxDone: false, flushTimer: null,
    remoteReady: false, pending: [], applied: new Set(),
  };
}

/** A candidate line without its "a=" prefix: the same candidate however it was written. */
function candidateKey(c: IceCandidate): string {
  return `${c.mid} ${c.candidate.startsWith('a=') ? c.candidate.slice(2) : c.candidate}`;
}

function short(uid: Uid): string {
  return uid.slice(0, 12);
}
