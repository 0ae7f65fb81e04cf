/**
 * XmppSession: the datapath's connection to the notification overlay (paper §4.1, §4.2, §5.3).
 *
 * The controller registers it with credentials (register_svc); the session keeps it up on its own:
 * TLS always (STARTTLS, certificate verified against the system store or a CA file given at run
 * time), SASL SCRAM-SHA-1 or PLAIN, reconnect with exponential backoff and jitter. Once online it
 * fetches the roster, announces the node (presence carrying <node xmlns="urn:tincan:node:1"
 * uid=… overlay=…/>) and re-announces it every livenessIntervalMs (the paper's two-minute liveness
 * broadcast), keeps the table of online TinCan peers, and carries signals: message stanzas holding
 * one XmppSignal JSON document. Whatever arrives from the network is validated; garbage is counted
 * and logged at debug, never thrown.
 *
 * The roster gate (docs/security.md, "Membership"): presence and signals count only from our own
 * account or a bare JID in our roster with a mutual subscription (`both`). Anything else is dropped
 * and counted before it becomes an event, so a stranger's directed presence never reaches the peer
 * table (nor send_signal by UID). The roster is fetched at each login before anything is trusted; a
 * roster push that ends a mutual subscription takes that account's peers offline.
 */
import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import * as z from 'zod';
import { SIGNAL_NS, Uid, XmppCredentials, type XmppSignal } from '@tincan/protocol';
import {
  buildPresence,
  buildRosterGet,
  buildSignalMessage,
  buildUnavailable,
  defaultResource,
  encodeSignal,
  parseJid,
  parsePresence,
  parseRosterQuery,
  parseSignalMessage,
  type ParsedJid,
  type RosterItem,
  type XmlElement,
} from './xmpp/codec.js';
import { xml } from '@xmpp/client-core';
import { createConnection, DispatchError, LoginError, NS_PING, type XmppConnection } from './xmpp/connection.js';
import { TypedEmitter } from './xmpp/emitter.js';
import { PeerTable, type PresenceChange } from './xmpp/peers.js';

export type XmppState = 'connecting' | 'online' | 'offline';
export type JsonValue = XmppSignal['data'];

export interface XmppSessionOptions {
  /** host, port, jid (user@domain[/resource]), password, ca_file?, mechanism (default SCRAM-SHA-1). */
  credentials: z.input<typeof XmppCredentials>;
  /** Our node UID (40 hex digits), announced in presence. */
  uid: string;
  /** Network id announced in presence (GroupVPN admission). */
  overlay?: string;
  /** Capabilities announced in presence (the controller's, e.g. trickle). */
  caps?: readonly string[];
  /** Our node certificate (base64 DER), announced in presence. */
  cert?: string;
  /** Our membership certificate (MemberCert), announced in presence. */
  memberCert?: string;
  /** Presence re-broadcast (and server ping) period; the paper's two minutes by default. */
  livenessIntervalMs?: number;
  logger: Logger;
  /** Reconnect backoff: first delay and cap (default 1 s → 60 s), with ±20 % jitter. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** From TCP connect to bound resource (default 30 s). */
  loginTimeoutMs?: number;
  /** One negotiation step or IQ (default 10 s). */
  stepTimeoutMs?: number;
  /** How long the server may take to answer our ping before the session counts as dead (default 30 s). */
  pingTimeoutMs?: number;
  /** After a reconnect, peers not re-announced within this time are reported offline (default 15 s). */
  presenceGraceMs?: number;
}

export interface XmppPresence {
  /** Full JID. */
  jid: string;
  uid: string;
  overlay: string | null;
  online: boolean;
  /** What the peer announced (online, and only when it announced something). */
  caps?: string[];
  /** Its node certificate, base64 DER (online, and only when it announced a readable one). */
  cert?: string;
  /** Its membership certificate (online, and only when it announced one of the right form). */
  member_cert?: string;
}

export interface XmppSignalIn {
  /** The sender's full JID. */
  jid: string;
  uid: string;
  type: string;
  data: JsonValue;
}

export interface XmppRoster {
  items: RosterItem[];
  /** true: the whole roster (after each login); false: a push of changed items. */
  full: boolean;
}

export interface XmppSessionEvents {
  state(s: XmppState, reason?: string): void;
  presence(p: XmppPresence): void;
  signal(s: XmppSignalIn): void;
  roster(r: XmppRoster): void;
}

export interface XmppPeer {
  jid: string;
  uid: string;
  overlay: string | null;
  caps: string[];
  cert: string | null;
  memberCert: string | null;
  /** ms since the epoch of the last presence or signal from that JID. */
  lastHeardMs: number;
}

const COUNTER_NAMES = [
  'signals_in',
  'signals_out',
  'signals_dropped_malformed',
  'signals_dropped_oversized',
  'signals_dropped_uid_mismatch',
  'bounces',
  'messages_ignored',
  'presence_in',
  'presence_out',
  'presence_dropped_malformed',
  'presence_dropped_not_in_roster',
  'signals_dropped_not_in_roster',
  'roster_pushes',
  'reconnects',
  'login_failures',
  'disconnects',
  'ping_timeouts',
  'stanza_errors',
] as const;
export type XmppCounter = (typeof COUNTER_NAMES)[number];

/** Exponential backoff with ±20 % jitter: initial·2^failures, capped (jitter never exceeds the cap). */
export function backoffDelay(failures: number, rand: () => number = Math.random, initialMs = 1000, maxMs = 60_000): number {
  const base = Math.min(maxMs, initialMs * 2 ** Math.min(Math.max(failures, 0), 30));
  return Math.max(0, Math.min(maxMs, Math.round(base * (0.8 + 0.4 * rand()))));
}

/** A failure reason fit for the 'state' event and the logs: "<kind>: <what>". */
export function describeError(err: unknown): string {
  if (err instanceof LoginError) return `${err.kind}: ${err.message}`;
  const e = (err ?? {}) as { name?: string; code?: string; condition?: string; text?: string; message?: string };
  if (e.name === 'StreamError') return `stream error: ${e.condition ?? 'unknown'}${e.text ? ` (${e.text})` : ''}`;
  if (e.name === 'TimeoutError') return 'timeout: the server did not answer in time';
  if (typeof e.code === 'string' && /^E[A-Z_]+$/.test(e.code)) return `connect: ${e.message ?? e.code}`;
  if (e.name === 'XMLError') return `protocol: bad XML from the server (${e.message ?? ''})`;
  return `error: ${e.message ?? String(err)}`;
}

/** A connection that stayed up this long resets the backoff; one that drops sooner (a resource
 *  conflict with another process, a server that kicks us) keeps backing off. */
const STABLE_SESSION_MS = 60_000;

/** How often an online session checks that its local address still exists (mobility). */
const ADDRESS_CHECK_MS = 2_000;

/** checkNow: how long the server may take to answer the ping before the session counts as dead. */
const CHECK_NOW_TIMEOUT_MS = 3_000;
/**
 * The first reconnect after an online session broke on the network (a reset, our address gone, a
 * check that went unanswered) comes this soon, not after the backoff's first second: the server is
 * most likely fine and the path to it just changed.
 */
const QUICK_RECONNECT_MS = 100;

interface Attempt {
  conn: XmppConnection;
  /** Bound and usable (the library's 'online'). */
  bound: boolean;
  /** Roster fetched and presence sent. */
  announced: boolean;
  done: boolean;
  onlineSince: number;
  lastError: string | null;
  loginTimer: NodeJS.Timeout | null;
}

export class XmppSession extends TypedEmitter<XmppSessionEvents> {
  private readonly log: Logger;
  private readonly creds: XmppCredentials;
  private readonly uid: string;
  private readonly overlay: string | null;
  private readonly caps: readonly string[];
  private readonly cert: string | null;
  private readonly memberCert: string | null;
  private readonly own: ParsedJid;
  private readonly livenessMs: number;
  private readonly backoffInitialMs: number;
  private readonly backoffMaxMs: number;
  private readonly loginTimeoutMs: number;
  private readonly stepTimeoutMs: number;
  private readonly pingTimeoutMs: number;
  private readonly presenceGraceMs: number;

  private _state: XmppState = 'offline';
  private running = false;
  private current: Attempt | null = null;
  private failures = 0;
  private boundJid: string | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private livenessTimer: NodeJS.Timeout | null = null;
  private addressTimer: NodeJS.Timeout | null = null;
  private graceTimer: NodeJS.Timeout | null = null;
  /** A checkNow is under way on the current connection (its loss reconnects quickly). */
  private checking = false;
  private readonly table = new PeerTable();
  private readonly ctr: Record<XmppCounter, number>;
  /** Our roster by bare JID (the gate); `rosterKnown` once this login's roster result arrived. */
  private readonly rosterItems = new Map<string, RosterItem>();
  private rosterKnown = false;

  constructor(opts: XmppSessionOptions) {
    super((event, err) => this.log.error({ err, event }, 'an XMPP session listener threw'));
    this.creds = XmppCredentials.parse(opts.credentials);
    this.uid = Uid.parse(opts.uid);
    this.overlay = opts.overlay ? opts.overlay : null;
    this.caps = opts.caps ?? [];
    this.cert = opts.cert ?? null;
    this.memberCert = opts.memberCert ?? null;
    const jid = parseJid(this.creds.jid);
    if (!jid || !jid.local) throw new Error(`not a user JID: ${this.creds.jid}`);
    const resource = jid.resource || defaultResource(this.uid);
    this.own = { ...jid, resource, full: `${jid.bare}/${resource}` };
    this.livenessMs = opts.livenessIntervalMs ?? 120_000;
    this.backoffInitialMs = opts.backoff?.initialMs ?? 1000;
    this.backoffMaxMs = opts.backoff?.maxMs ?? 60_000;
    this.loginTimeoutMs = opts.loginTimeoutMs ?? 30_000;
    this.stepTimeoutMs = opts.stepTimeoutMs ?? 10_000;
    this.pingTimeoutMs = opts.pingTimeoutMs ?? 30_000;
    this.presenceGraceMs = opts.presenceGraceMs ?? 15_000;
    this.ctr = Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0])) as Record<XmppCounter, number>;
    this.log = opts.logger;
  }

  get state(): XmppState {
    return this._state;
  }

  /** Our full JID: the one the server bound, or the one we ask for. */
  get jid(): string {
    return this.boundJid ?? this.own.full;
  }

  /** Starts connecting (and keeps reconnecting until stop()). Idempotent. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.failures = 0;
    this.log.info(
      {
        host: this.creds.host,
        port: this.creds.port,
        jid: this.own.full,
        mechanism: this.creds.mechanism,
        ca_file: this.creds.ca_file ?? null,
        overlay: this.overlay,
        caps: this.caps,
      },
      'XMPP session starting',
    );
    this.connect();
  }

  /** Sends unavailable presence, closes the stream, stops all timers. Never rejects. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.clearTimer('reconnectTimer');
    this.stopOnlineTimers();
    const att = this.current;
    this.current = null;
    if (att && !att.done) {
      att.done = true;
      if (att.loginTimer) clearTimeout(att.loginTimer);
      const { entity } = att.conn;
      if (att.bound) {
        await withTimeout(entity.send(buildUnavailable()), 2000).catch(() => undefined);
      }
      await withTimeout(entity.stop(), 3000).catch(() => undefined);
      abandon(att.conn);
    }
    this.table.clear();
    this.rosterItems.clear();
    this.rosterKnown = false;
    this.boundJid = null;
    this.setState('offline', 'stopped');
    this.log.info('XMPP session stopped');
  }

  /** Sends one signal to a full JID. Rejects when offline, on a bad type/data, or when too big. */
  async sendSignal(toFullJid: string, type: string, data: unknown): Promise<void> {
    const to = parseJid(toFullJid);
    if (!to?.resource) throw new Error(`signals go to a full JID (user@domain/resource), not ${JSON.stringify(toFullJid)}`);
    const json = encodeSignal(this.uid, type, data);
    const att = this.current;
    if (!att || !att.bound || att.done) throw new Error(`the XMPP session is ${this._state}`);
    await att.conn.entity.send(buildSignalMessage(to.full, json, randomBytes(6).toString('hex')));
    this.ctr.signals_out++;
    this.log.debug({ to: to.full, type, bytes: Buffer.byteLength(json) }, 'signal sent');
  }

  /**
   * A hint that the network changed (a link stopped answering): ping the server now. A connection
   * whose path broke shows it at once (a reset) or does not answer within CHECK_NOW_TIMEOUT_MS; either
   * way it is dropped and made again after QUICK_RECONNECT_MS. At most one check at a time.
   */
  checkNow(why: string): void {
    const att = this.current;
    if (!att || !att.bound || att.done || this.checking) return;
    this.checking = true;
    this.log.debug({ why }, 'XMPP: checking the connection now');
    att.conn.iqCaller
      .request(xml('iq', { type: 'get', to: this.own.domain }, xml('ping', { xmlns: NS_PING })), CHECK_NOW_TIMEOUT_MS)
      .then(
        () => undefined,
        (err: unknown) => {
          if (att.done) return;
          if ((err as { name?: string }).name === 'TimeoutError') {
            this.ctr.ping_timeouts++;
            this.lost(att, `network: the server did not answer a check within ${CHECK_NOW_TIMEOUT_MS / 1000} s (${why})`);
          }
        },
      )
      .finally(() => {
        if (att === this.current) this.checking = false;
      });
  }

  peers(): XmppPeer[] {
    return this.table.list().map((r) => ({ jid: r.jid, uid: r.uid, overlay: r.overlay, caps: r.caps, cert: r.cert, memberCert: r.memberCert, lastHeardMs: r.lastHeardMs }));
  }

  jidOfUid(uid: string): string | undefined {
    return this.table.jidOfUid(uid);
  }

  /** The roster as of this login (`known` false until its result arrived), with pushes applied. */
  roster(): { known: boolean; items: RosterItem[] } {
    return { known: this.rosterKnown, items: [...this.rosterItems.values()].map((i) => ({ ...i, groups: [...i.groups] })) };
  }

  /** The roster gate: our own account, or a mutual subscription in the roster. */
  private trusted(bare: string): boolean {
    return bare === this.own.bare || (this.rosterKnown && this.rosterItems.get(bare)?.subscription === 'both');
  }

  /** Applies a roster result (full) or push, and takes accounts no longer trusted offline. */
  private applyRoster(items: RosterItem[], full: boolean): void {
    if (full) this.rosterItems.clear();
    for (const it of items) {
      if (it.subscription === 'remove') this.rosterItems.delete(it.jid);
      else this.rosterItems.set(it.jid, it);
    }
    if (full) this.rosterKnown = true;
    const gone = new Set<string>();
    for (const p of this.table.list()) if (!this.trusted(p.bare)) gone.add(p.bare);
    for (const bare of gone) {
      const jid = parseJid(bare);
      if (!jid) continue;
      this.log.info({ jid: bare }, 'no longer a mutual roster contact: its presences go offline');
      this.emitChanges(this.table.unavailable(jid));
    }
  }

  counters(): Record<string, number> {
    return { ...this.ctr };
  }

  // --------------------------------------------------------------------------------------------

  private connect(): void {
    this.reconnectTimer = null;
    if (!this.running) return;
    this.setState('connecting');
    let ca: Buffer | undefined;
    if (this.creds.ca_file) {
      try {
        ca = readFileSync(this.creds.ca_file);
      } catch (err) {
        this.ctr.login_failures++;
        this.retryLater(`tls: cannot read ca_file ${this.creds.ca_file}: ${(err as Error).message}`, false);
        return;
      }
    }
    let att: Attempt | null = null;
    const conn = createConnection({
      host: this.creds.host,
      port: this.creds.port,
      domain: this.own.domain,
      username: this.own.local,
      password: this.creds.password,
      resource: this.own.resource,
      mechanism: this.creds.mechanism,
      ...(ca ? { ca } : {}),
      stepTimeoutMs: this.stepTimeoutMs,
      onStanza: (el) => {
        if (att) this.onStanza(att, el);
      },
      onRosterPush: (items) => {
        if (att && att === this.current) {
          this.ctr.roster_pushes++;
          this.applyRoster(items, false);
          this.emit('roster', { items, full: false });
        }
      },
    });
    att = {
      conn,
      bound: false,
      announced: false,
      done: false,
      onlineSince: 0,
      lastError: null,
      loginTimer: null,
    };
    this.current = att;
    const a = att;
    const { entity } = conn;
    entity.on('error', (err: unknown) => this.onEntityError(a, err));
    entity.on('online', () => void this.onOnline(a));
    entity.on('disconnect', () => this.lost(a, a.lastError ?? 'connection closed'));
    entity.on('close', () => this.lost(a, a.lastError ?? 'the server closed the stream'));
    a.loginTimer = setTimeout(
      () => this.lost(a, `timeout: not logged in after ${Math.round(this.loginTimeoutMs / 1000)} s`),
      this.loginTimeoutMs,
    );
    this.log.debug({ host: this.creds.host, port: this.creds.port }, 'XMPP connecting');
    entity.start().catch((err: unknown) => this.lost(a, describeError(err)));
  }

  private onEntityError(att: Attempt, err: unknown): void {
    if (att.done) return;
    if (err instanceof DispatchError && att.bound) {
      this.ctr.stanza_errors++;
      this.log.debug({ reason: err.message }, 'XMPP stanza dropped');
      return;
    }
    const reason = describeError(err);
    if (!att.bound) {
      this.lost(att, reason);
      return;
    }
    att.lastError = reason;
    this.log.warn({ reason }, 'XMPP connection error');
  }

  private async onOnline(att: Attempt): Promise<void> {
    if (att.done || att !== this.current) return;
    att.bound = true;
    att.onlineSince = Date.now();
    if (att.loginTimer) clearTimeout(att.loginTimer);
    att.loginTimer = null;
    const { entity, iqCaller } = att.conn;
    this.boundJid = entity.jid?.toString() ?? this.own.full;
    this.log.info({ jid: this.boundJid }, 'XMPP logged in');
    // Roster first, then initial presence (RFC 6121 §2.2). Nobody's presence counts before the roster
    // is known (the gate), so a login without one is a failed login, retried with backoff.
    this.rosterKnown = false;
    try {
      const query = await iqCaller.get(buildRosterGet(), undefined, this.stepTimeoutMs);
      if (att.done) return;
      const items = parseRosterQuery(query);
      this.applyRoster(items, true);
      this.emit('roster', { items, full: true });
    } catch (err) {
      if (att.done) return;
      this.lost(att, `roster: the roster request failed (${describeError(err)})`);
      return;
    }
    if (!(await this.announce(att))) return;
    att.announced = true;
    this.livenessTimer = setInterval(() => void this.liveness(att), this.livenessMs);
    this.addressTimer = setInterval(() => this.checkLocalAddress(att), ADDRESS_CHECK_MS);
    if (this.table.size > 0) {
      this.graceTimer = setTimeout(() => {
        this.graceTimer = null;
        if (att === this.current && !att.done) this.emitChanges(this.table.dropStale());
      }, this.presenceGraceMs);
    }
    this.setState('online');
  }

  private async announce(att: Attempt): Promise<boolean> {
    try {
      await att.conn.entity.send(buildPresence(this.uid, { overlay: this.overlay, caps: this.caps, cert: this.cert, memberCert: this.memberCert }));
      this.ctr.presence_out++;
      return !att.done;
    } catch (err) {
      if (!att.done) this.log.debug({ reason: describeError(err) }, 'XMPP presence send failed');
      return false;
    }
  }

  /** The paper's periodic broadcast, plus a server ping to notice a dead connection. */
  private async liveness(att: Attempt): Promise<void> {
    if (att.done || att !== this.current) return;
    await this.announce(att);
    try {
      await att.conn.iqCaller.request(
        xml('iq', { type: 'get', to: this.own.domain }, xml('ping', { xmlns: NS_PING })),
        this.pingTimeoutMs,
      );
    } catch (err) {
      if (att.done) return;
      // An error reply is still an answer; only silence means the connection is dead.
      if ((err as { name?: string }).name === 'TimeoutError') {
        this.ctr.ping_timeouts++;
        this.lost(att, `timeout: the server did not answer a ping within ${Math.round(this.pingTimeoutMs / 1000)} s`);
      }
    }
  }

  private onStanza(att: Attempt, el: XmlElement): void {
    if (att.done || att !== this.current) return;
    try {
      if (el.name === 'presence') this.onPresence(el);
      else this.onMessage(el);
    } catch (err) {
      this.ctr.stanza_errors++;
      this.log.debug({ err }, 'XMPP stanza handling failed');
    }
  }

  private onPresence(el: XmlElement): void {
    this.ctr.presence_in++;
    const p = parsePresence(el);
    switch (p.kind) {
      case 'available':
        if (p.jid.full === this.boundJid) return;
        if (!this.trusted(p.jid.bare)) {
          this.ctr.presence_dropped_not_in_roster++;
          this.log.debug({ from: p.jid.full, roster_known: this.rosterKnown }, 'presence dropped: not a mutual roster contact');
          return;
        }
        this.emitChanges(this.table.available(p.jid, p.uid, p.overlay, p.caps, p.cert, p.memberCert));
        return;
      case 'unavailable':
        if (p.jid.full === this.boundJid) return;
        if (p.error) this.log.debug({ from: p.jid.full }, 'error presence: taken as unavailable');
        this.emitChanges(this.table.unavailable(p.jid));
        return;
      case 'malformed':
        this.ctr.presence_dropped_malformed++;
        this.log.debug({ from: el.attrs.from, reason: p.reason }, 'presence dropped');
        return;
      case 'ignore':
        return;
    }
  }

  private onMessage(el: XmlElement): void {
    const sender = parseJid(el.attrs.from);
    if (sender && el.attrs.type !== 'error' && el.getChild('signal', SIGNAL_NS) && !this.trusted(sender.bare)) {
      this.ctr.signals_dropped_not_in_roster++;
      this.log.debug({ from: sender.full }, 'signal dropped: not a mutual roster contact');
      return;
    }
    const r = parseSignalMessage(el, (jid) => this.table.uidOf(jid));
    if (!r.ok) {
      this.ctr[r.counter]++;
      this.log.debug({ from: r.from ?? el.attrs.from, reason: r.reason }, 'message dropped');
      return;
    }
    this.ctr.signals_in++;
    this.table.heard(r.jid.full);
    this.log.debug({ from: r.jid.full, type: r.signal.type }, 'signal received');
    this.emit('signal', { jid: r.jid.full, uid: r.signal.uid, type: r.signal.type, data: r.signal.data });
  }

  private emitChanges(changes: PresenceChange[]): void {
    for (const c of changes) {
      this.log.debug({ jid: c.jid, uid: c.uid, overlay: c.overlay, cert: c.cert ? 'yes' : 'no' }, c.online ? 'peer online' : 'peer offline');
      this.emit('presence', {
        jid: c.jid,
        uid: c.uid,
        overlay: c.overlay,
        online: c.online,
        ...(c.online && c.caps?.length ? { caps: c.caps } : {}),
        ...(c.online && c.cert ? { cert: c.cert } : {}),
        ...(c.online && c.memberCert ? { member_cert: c.memberCert } : {}),
      });
    }
  }

  /** The attempt is over (failed login or lost connection): clean up and schedule the next one. */
  private lost(att: Attempt, reason: string): void {
    if (att.done) return;
    att.done = true;
    if (att.loginTimer) clearTimeout(att.loginTimer);
    abandon(att.conn);
    if (att !== this.current) return;
    this.current = null;
    const wasOnline = att.bound;
    // A connection lost while checked, on a network error or a vanished address: the path changed.
    const quick = wasOnline && (this.checking || /^(network|connect):/.test(reason));
    this.checking = false;
    if (wasOnline) {
      this.stopOnlineTimers();
      this.table.markAllStale();
      this.boundJid = null;
      this.ctr.disconnects++;
      if (Date.now() - att.onlineSince >= STABLE_SESSION_MS) this.failures = 0;
    } else {
      this.ctr.login_failures++;
    }
    this.retryLater(reason, wasOnline, quick);
  }

  private retryLater(reason: string, wasOnline: boolean, quick = false): void {
    if (!this.running) return;
    const backoff = backoffDelay(this.failures++, Math.random, this.backoffInitialMs, this.backoffMaxMs);
    const delay = quick ? Math.min(QUICK_RECONNECT_MS, backoff) : backoff;
    const fields = { reason, retry_in_ms: delay, attempt: this.failures };
    if (reason.startsWith('auth:') || reason.startsWith('tls:')) this.log.error(fields, 'XMPP login failed');
    else if (reason.startsWith('stream error: conflict')) {
      this.log.error(fields, 'XMPP session replaced by another login with the same JID and resource');
    }
    else if (wasOnline) this.log.warn(fields, 'XMPP connection lost');
    else this.log.warn(fields, 'XMPP connection failed');
    this.setState('offline', reason);
    this.clearTimer('reconnectTimer');
    this.reconnectTimer = setTimeout(() => {
      this.ctr.reconnects++;
      this.connect();
    }, delay);
  }

  /**
   * Mobility: if the host no longer has the address our TCP connection is bound to (the address
   * changed), the connection is dead but TCP would take minutes to notice. Reconnect at once.
   */
  private checkLocalAddress(att: Attempt): void {
    if (att.done || att !== this.current) return;
    const sock = att.conn.entity.socket as { localAddress?: string } | null | undefined;
    const local = sock?.localAddress?.replace(/^::ffff:/, '');
    if (!local) return;
    const have = Object.values(networkInterfaces()).some((l) => l?.some((i) => i.address === local));
    if (have) return;
    this.failures = 0; // not the server's fault: retry after the shortest delay
    this.lost(att, `network: local address ${local} is gone`);
  }

  private stopOnlineTimers(): void {
    if (this.livenessTimer) clearInterval(this.livenessTimer);
    this.livenessTimer = null;
    if (this.addressTimer) clearInterval(this.addressTimer);
    this.addressTimer = null;
    this.clearTimer('graceTimer');
  }

  private clearTimer(name: 'reconnectTimer' | 'graceTimer'): void {
    const t = this[name];
    if (t) clearTimeout(t);
    this[name] = null;
  }

  private setState(s: XmppState, reason?: string): void {
    if (this._state === s && reason === undefined) return;
    this._state = s;
    this.emit('state', s, reason);
  }
}

/** Forgets a connection: no more events from it, socket destroyed, late errors swallowed. */
function abandon(conn: XmppConnection): void {
  const { entity } = conn;
  entity.removeAllListeners();
  entity.on('error', () => undefined);
  try {
    entity.socket?.destroy?.();
  } catch {
    // already gone
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('timed out')), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
