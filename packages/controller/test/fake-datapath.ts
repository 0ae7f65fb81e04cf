// A fake tincan-datapath for controller unit tests: it answers the RPC verbs with the real datapath's
// semantics (create_link offer / answer / complete, idempotent set_local_ip, trim_link emitting "down
// trimmed", a new token after a restart) and a FakeNet connects several of them: presence, signals
// (delivered after a delay on the injected clock) and links that come up when both ends have matching
// descriptions. Lab end-to-end tests cover the real datapath.
import type {
  CreateLinkResult,
  EventOf,
  LinkInfo,
  LinkState,
  RpcEvent,
  RpcParams,
  RpcResults,
  RpcVerb,
  SessionDescription,
  StateResult,
  Uid,
} from '@tincan/protocol';
import type { Clock } from '../src/clock.js';
import { certFingerprint } from '../src/member-cert.js';
import type { DatapathPort } from '../src/datapath-port.js';

export class FakeRpcError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

interface FakeLink {
  uid: Uid;
  jid: string | null;
  role: 'offerer' | 'answerer';
  state: LinkState;
  local: SessionDescription;
  remote: SessionDescription | null;
  created_ms: number;
  connected_ms: number | null;
  last_rx_ms: number | null;
  last_tx_ms: number | null;
  packets_in: number;
  packets_out: number;
  bytes_in: number;
  bytes_out: number;
  /** Trickle ICE: made with create_link {trickle}; its reachable candidate is not in `local`. */
  trickled: boolean;
  /** The candidate the peer must learn (trickled: through add_candidate) for the link to come up. */
  candidate: string;
  /** Candidates handed over by add_candidate. */
  remoteCandidates: Set<string>;
}

/** A roster item as a test writes it (groups optional, as from an older datapath). */
export type FakeRosterItem = Omit<EventOf<'roster'>['items'][number], 'groups'> & { groups?: string[] };
const rosterItem = (i: FakeRosterItem): EventOf<'roster'>['items'][number] => ({ ...i, groups: [...(i.groups ?? [])] });

export interface CallRecord {
  m: string;
  params: Record<string, unknown>;
}

let sdpCounter = 0;

/** One datapath process; `port()` is a client of it (a new one after `restart()`, like a new token). */
export class FakeDatapath {
  uid: Uid | null = null;
  vnic: { name: string; ip4?: string; ip6?: string; mtu: number } | null = null;
  xmppState: 'unregistered' | 'connecting' | 'online' | 'offline' = 'unregistered';
  /** create_link {repair}: links being made beside an up one; they replace it when up. */
  readonly spares = new Map<Uid, FakeLink>();
  overlay: string | null = null;
  /** What register_svc asked this node's presence to announce. */
  caps: string[] = [];
  /** Plays a datapath older than presence capabilities: register_svc with `caps` is a bad_request. */
  refusesCaps = false;
  jid: string;
  /**
   * The node certificate its presence announces (base64; not a real X.509 certificate: the
   * controllers only hash it) and whose fingerprint its descriptions carry. undefined: none.
   */
  cert: string | undefined;
  /** The membership certificate register_svc asked presence to announce. */
  memberCert: string | undefined;
  /** set_peer_cert: the certificate the controller trusts per peer (what the real datapath enforces). */
  readonly peerCerts = new Map<Uid, string>();
  readonly links = new Map<Uid, FakeLink>();
  readonly map4 = new Map<string, Uid>();
  readonly map6 = new Map<string, Uid>();
  /** Online TinCan peers seen over "XMPP" (get_state peers). */
  readonly presences = new Map<string, { uid: Uid; jid: string; overlay: string | null; last_heard_ms: number; caps?: string[]; cert?: string; member_cert?: string }>();
  readonly calls: CallRecord[] = [];
  readonly injected: Buffer[] = [];
  controller: string | null = null;
  startedMs: number;
  token = 1;
  /** No answers at all (the process is hung or gone). */
  unreachable = false;
  /** Verbs that fail once with the given error code. */
  readonly failNext = new Map<string, string>();
  private eventSink: ((e: RpcEvent) => void) | null = null;
  private packetSink: ((f: Buffer) => void) | null = null;
  /** XMPP goes online by itself on register_svc. */
  autoOnline = true;
  /**
   * The account's roster (SocialVPN): when set, sent as a full `roster` event at each XMPP login
   * (before the "online" event, as the real session does). null: no roster events at all.
   */
  roster: FakeRosterItem[] | null = null;
  /** Answer get_roster with bad_request, as a datapath older than the verb does. */
  refusesGetRoster = false;

  constructor(
    readonly net: FakeNet,
    jid: string,
  ) {
    this.jid = jid;
    this.cert = Buffer.from(`fake node certificate of ${jid}`).toString('base64');
    this.memberCert = undefined;
    this.startedMs = net.clock.now();
    net.add(this);
  }

  /** A client with the current token. */
  port(): FakePort {
    return new FakePort(this, this.token);
  }

  /** The process restarts: everything is gone and the token changes. */
  restart(): void {
    for (const l of this.links.values()) this.net.peerLost(this, l.uid);
    this.links.clear();
    this.map4.clear();
    this.map6.clear();
    this.presences.clear();
    if (this.xmppState === 'online') this.net.offline(this);
    this.uid = null;
    this.vnic = null;
    this.xmppState = 'unregistered';
    this.overlay = null;
    this.caps = [];
    this.memberCert = undefined;
    this.peerCerts.clear();
    this.controller = null;
    this.eventSink = null;
    this.packetSink = null;
    this.token++;
    this.startedMs = this.net.clock.now();
  }

  callsOf(m: string): CallRecord[] {
    return this.calls.filter((c) => c.m === m);
  }

  subscribe(port: FakePort, events: (e: RpcEvent) => void, packets: (f: Buffer) => void): void {
    this.controller = `127.0.0.1:${port.localPort}`;
    this.eventSink = events;
    this.packetSink = packets;
  }

  emit(e: RpcEvent): void {
    const sink = this.eventSink;
    if (sink) queueMicrotask(() => sink(e));
  }

  /** An unmapped packet frame to the controller. */
  emitPacket(frame: Buffer): void {
    const sink = this.packetSink;
    if (sink) queueMicrotask(() => sink(frame));
  }

  /** Moves traffic on a link (for activity / idle tests): `packets` each way, `bytes` each way. */
  traffic(uid: Uid, packets = 1, bytes = 0): void {
    const l = this.links.get(uid);
    if (!l) return;
    l.packets_in += packets;
    l.packets_out += packets;
    l.bytes_in += bytes;
    l.bytes_out += bytes;
    l.last_rx_ms = this.net.clock.now();
    l.last_tx_ms = this.net.clock.now();
  }

  setLinkState(uid: Uid, state: LinkState, reason?: string): void {
    const l = this.links.get(uid);
    if (!l || l.state === state) return;
    l.state = state;
    if (state === 'up') l.connected_ms = this.net.clock.now();
    this.emit({ event: 'link', uid, state, ...(reason ? { reason } : {}) });
  }

  /** The link being made to `uid` (a repair's, else the current one). */
  linkFor(uid: Uid): FakeLink | undefined {
    return this.spares.get(uid) ?? this.links.get(uid);
  }

  /** A repair's link came up: it replaces the current one (no down event for that). */
  promote(uid: Uid, l: FakeLink): void {
    if (this.spares.get(uid) !== l) return;
    this.spares.delete(uid);
    this.links.set(uid, l);
  }

  handle(m: string, params: Record<string, unknown>): unknown {
    this.calls.push({ m, params });
    const fail = this.failNext.get(m);
    if (fail) {
      this.failNext.delete(m);
      throw new FakeRpcError(fail, `${m}: injected ${fail}`);
    }
    const now = this.net.clock.now();
    switch (m) {
      case 'set_cb_endpoint':
        return {};
      case 'set_local_ip': {
        const p = params as { uid: Uid; name: string; ip4?: string; ip6?: string; mtu?: number };
        const want = { name: p.name, ip4: p.ip4, ip6: p.ip6, mtu: p.mtu ?? 1280 };
        if (this.vnic) {
          if (this.uid === p.uid && JSON.stringify(this.vnic) === JSON.stringify(want)) return { vnic: this.vnic.name };
          throw new FakeRpcError('bad_state', `the vNIC is already configured for ${this.uid}`);
        }
        this.uid = p.uid;
        this.vnic = want;
        return { vnic: p.name };
      }
      case 'register_svc': {
        const p = params as { overlay?: string; caps?: string[]; member_cert?: string };
        if (!this.uid) throw new FakeRpcError('bad_state', 'set_local_ip first');
        if (this.refusesCaps && p.caps !== undefined) throw new FakeRpcError('bad_request', '✖ Unrecognized key: "caps"');
        const again = this.xmppState !== 'unregistered' && this.overlay === (p.overlay ?? null) && this.caps.join(' ') === (p.caps ?? []).join(' ');
        this.overlay = p.overlay ?? null;
        this.caps = p.caps ?? [];
        this.memberCert = p.member_cert;
        if (!again) {
          this.xmppState = 'connecting';
          if (this.autoOnline) this.goOnline();
        }
        return { state: this.xmppState };
      }
      case 'create_link':
        return this.createLink(params as RpcParams<'create_link'>);
      case 'add_candidate': {
        const p = params as RpcParams<'add_candidate'>;
        const l = this.linkFor(p.uid);
        if (!l) throw new FakeRpcError('not_found', `no link to ${p.uid}`);
        if (!l.remote) throw new FakeRpcError('bad_state', 'add_candidate: the link has no remote description yet');
        for (const c of p.candidates) l.remoteCandidates.add(c.candidate);
        this.net.tryConnect(this, p.uid);
        return { added: p.candidates.length, filtered: 0 };
      }
      case 'trim_link': {
        const uid = params.uid as Uid;
        const spare = this.spares.get(uid);
        this.spares.delete(uid);
        if (params.spare === true) return { trimmed: spare !== undefined };
        const l = this.links.get(uid);
        if (!l) return { trimmed: spare !== undefined };
        this.links.delete(uid);
        this.net.peerLost(this, uid);
        this.emit({ event: 'link', uid, state: 'down', reason: 'trimmed' });
        return { trimmed: true };
      }
      case 'set_remote_ip': {
        const p = params as { uid: Uid; ip4?: string; ip6?: string; remove?: boolean };
        if (p.remove) {
          if (p.ip4 && this.map4.get(p.ip4) === p.uid) this.map4.delete(p.ip4);
          if (p.ip6 && this.map6.get(p.ip6) === p.uid) this.map6.delete(p.ip6);
        } else {
          if (p.ip4) this.map4.set(p.ip4, p.uid);
          if (p.ip6) this.map6.set(p.ip6, p.uid);
        }
        return {};
      }
      case 'get_state':
        return this.state(now);
      case 'get_roster':
        if (this.refusesGetRoster) throw new FakeRpcError('bad_request', '✖ Invalid input: expected one of "echo"|…');
        return { known: this.roster !== null && this.xmppState === 'online', items: (this.roster ?? []).map(rosterItem) };
      case 'set_peer_cert': {
        const p = params as { uid: Uid; cert: string | null };
        if (p.cert === null) this.peerCerts.delete(p.uid);
        else this.peerCerts.set(p.uid, p.cert);
        return { fingerprint: p.cert === null ? null : certFingerprint(p.cert) };
      }
      case 'send_signal': {
        const p = params as { uid?: Uid; jid?: string; type: string; data: unknown };
        if (this.xmppState !== 'online') throw new FakeRpcError('bad_state', 'XMPP is not online');
        if (p.jid !== undefined) {
          this.net.deliver(this, p.jid, p.type, p.data);
          return { jid: p.jid };
        }
        const to = [...this.presences.values()].find((x) => x.uid === p.uid);
        if (!to) throw new FakeRpcError('not_found', `no online XMPP peer for ${p.uid}`);
        this.net.deliver(this, to.jid, p.type, p.data);
        return { jid: to.jid };
      }
      default:
        return {};
    }
  }

  /** A roster push (RFC 6121 §2.1.6): the items change in `roster`, and the controller hears of it. */
  rosterPush(items: FakeRosterItem[]): void {
    const roster = this.roster ?? [];
    for (const it of items) {
      const i = roster.findIndex((r) => r.jid === it.jid);
      if (i >= 0) roster.splice(i, 1);
      if (it.subscription !== 'remove') roster.push({ ...it });
    }
    this.roster = roster;
    if (this.xmppState === 'online') this.emit({ event: 'roster', items: items.map(rosterItem), full: false });
  }

  goOnline(): void {
    if (this.roster !== null) this.emit({ event: 'roster', items: this.roster.map(rosterItem), full: true });
    this.xmppState = 'online';
    this.emit({ event: 'xmpp', state: 'online' });
    this.net.online(this);
  }

  private createLink(p: RpcParams<'create_link'>): CreateLinkResult {
    const uid = p.uid;
    if (!this.uid) throw new FakeRpcError('bad_state', 'set_local_ip first');
    const existing = this.links.get(uid);
    const fingerprint = `fp-${this.uid.slice(0, 6)}`;
    const spare = this.spares.get(uid);
    if (p.remote?.type === 'answer' && spare && spare.role === 'offerer' && !spare.remote) {
      spare.remote = p.remote;
      this.net.tryConnect(this, uid);
      return { uid, state: spare.state, fingerprint };
    }
    const repair = p.repair === true && existing?.state === 'up' && p.remote?.type !== 'answer';
    if (!repair) this.spares.delete(uid);
    if (p.remote?.type === 'answer') {
      if (!existing || existing.role !== 'offerer' || existing.remote) throw new FakeRpcError('bad_state', `no pending offer to ${uid}`);
      existing.remote = p.remote;
      this.net.tryConnect(this, uid);
      return { uid, state: existing.state, fingerprint };
    }
    if (!repair && !p.remote && existing && existing.state !== 'failed' && existing.state !== 'down') {
      if (existing.role === 'offerer' && !existing.remote) return { uid, state: existing.state, fingerprint, description: existing.local };
      return { uid, state: existing.state, fingerprint };
    }
    if (existing && !repair) {
      this.links.delete(uid);
      this.net.peerLost(this, uid);
    }
    const role = p.remote ? 'answerer' : 'offerer';
    const fpLine = this.cert === undefined ? '' : `\na=fingerprint:sha-256 ${certFingerprint(this.cert)}`;
    const local: SessionDescription = { type: p.remote ? 'answer' : 'offer', sdp: `${role}-${this.uid.slice(0, 6)}-${++sdpCounter}${fpLine}` };
    const trickled = p.trickle === true;
    const n = sdpCounter;
    const candidate = `a=candidate:2 1 UDP 1678769919 198.51.100.${n % 250} ${10000 + n} typ srflx`;
    const link: FakeLink = {
      uid, jid: this.net.jidOf(uid), role, state: 'connecting', local: trickled ? local : { ...local, sdp: `${local.sdp}\n${candidate}` },
      remote: p.remote ?? null, created_ms: this.net.clock.now(), connected_ms: null, last_rx_ms: null, last_tx_ms: null,
      packets_in: 0, packets_out: 0, bytes_in: 0, bytes_out: 0, trickled, candidate, remoteCandidates: new Set(),
    };
    if (repair) this.spares.set(uid, link);
    else this.links.set(uid, link);
    if (p.remote) this.net.tryConnect(this, uid);
    if (trickled) {
      // After the answer, as the real datapath reports them: the reflexive and relayed candidates
      // together, then the end of gathering.
      this.net.clock.setTimeout(() => {
        if (this.linkFor(uid) !== link) return;
        const relay = { candidate: `a=candidate:3 1 UDP 1048063 198.51.100.250 ${20000 + n} typ relay`, mid: '0' };
        this.emit({ event: 'candidate', uid, candidate: { candidate, mid: '0' } });
        this.emit({ event: 'candidate', uid, candidate: relay });
        this.emit({ event: 'candidate', uid, done: true });
      }, this.net.gatherMs);
    }
    return { uid, state: 'connecting', fingerprint, description: link.local };
  }

  state(now: number): StateResult {
    const links: LinkInfo[] = [...this.links.values()].map((l) => ({
      uid: l.uid, jid: l.jid, state: l.state, role: l.role,
      ip4: [...this.map4].filter(([, u]) => u === l.uid).map(([ip]) => ip),
      ip6: [...this.map6].filter(([, u]) => u === l.uid).map(([ip]) => ip),
      local_candidate: null, remote_candidate: null, local_address: null, remote_address: null, rtt_ms: null, queue_delay_ms: null,
      created_ms: l.created_ms, connected_ms: l.connected_ms, last_rx_ms: l.last_rx_ms, last_tx_ms: l.last_tx_ms,
      stats: {
        bytes_in: l.bytes_in, bytes_out: l.bytes_out, packets_in: l.packets_in, packets_out: l.packets_out,
        drops_backpressure: 0, drops_spoofed: 0, drops_malformed: 0, compact_in: 0, compact_out: 0,
        drops_aqm: 0, probes_out: 0, probes_answered: 0, probes_echoed: 0, probes_bad: 0,
      },
      framing: 'full',
    }));
    return {
      node: {
        uid: this.uid, vnic: this.vnic?.name ?? null, ip4: this.vnic?.ip4 ?? null, ip6: this.vnic?.ip6 ?? null,
        mtu: this.vnic?.mtu ?? null, offload: false, fingerprint: this.cert === undefined ? 'fp' : certFingerprint(this.cert), uptime_s: Math.round((now - this.startedMs) / 1000),
        controller: this.controller,
      },
      xmpp: { state: this.xmppState, jid: this.xmppState === 'unregistered' ? null : this.jid, overlay: this.overlay },
      links,
      peers: [...this.presences.values()],
      counters: {},
      routes: [],
      subnets: [],
      transit: false,
    };
  }

  /** Presence of another node, as the XMPP session would report it. */
  presence(p: { uid: Uid; jid: string; overlay: string | null; online: boolean; caps?: string[]; cert?: string; member_cert?: string }): void {
    if (p.online) {
      this.presences.set(p.jid, {
        uid: p.uid, jid: p.jid, overlay: p.overlay, last_heard_ms: this.net.clock.now(),
        ...(p.caps ? { caps: p.caps } : {}), ...(p.cert ? { cert: p.cert } : {}), ...(p.member_cert ? { member_cert: p.member_cert } : {}),
      });
    }
    else this.presences.delete(p.jid);
    this.emit({ event: 'presence', ...p });
  }
}

/** What a fake datapath's presence announces besides uid and overlay. */
function announced(dp: FakeDatapath): { caps?: string[]; cert?: string; member_cert?: string } {
  return {
    ...(dp.caps.length ? { caps: dp.caps } : {}),
    ...(dp.cert !== undefined ? { cert: dp.cert } : {}),
    ...(dp.memberCert !== undefined ? { member_cert: dp.memberCert } : {}),
  };
}

let nextPort = 40000;

export class FakePort implements DatapathPort {
  readonly localPort = nextPort++;
  private events: ((e: RpcEvent) => void)[] = [];
  private packets: ((f: Buffer) => void)[] = [];
  closed = false;

  constructor(
    readonly dp: FakeDatapath,
    private readonly token: number,
  ) {}

  call<M extends RpcVerb>(m: M, params: RpcParams<M>): Promise<RpcResults[M]> {
    if (this.closed) return Promise.reject(new Error('client closed'));
    if (this.dp.unreachable) return Promise.reject(new Error(`${m}: no answer from the datapath`));
    if (this.token !== this.dp.token) return Promise.reject(new FakeRpcError('unauthorized', 'missing or wrong token'));
    try {
      return Promise.resolve(this.dp.handle(m, params as Record<string, unknown>) as RpcResults[M]);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  async subscribe(): Promise<void> {
    await this.call('set_cb_endpoint', { address: '127.0.0.1', port: this.localPort });
    this.dp.subscribe(
      this,
      (e) => {
        if (!this.closed) for (const h of this.events) h(e);
      },
      (f) => {
        if (!this.closed) for (const h of this.packets) h(f);
      },
    );
  }

  onEvent(cb: (e: RpcEvent) => void): void {
    this.events.push(cb);
  }

  onPacket(cb: (frame: Buffer) => void): void {
    this.packets.push(cb);
  }

  sendPacket(frame: Buffer): void {
    if (!this.closed && this.token === this.dp.token) this.dp.injected.push(Buffer.from(frame));
  }

  close(): void {
    this.closed = true;
  }
}

/** The "XMPP server and the Internet" between fake datapaths. */
export class FakeNet {
  readonly nodes = new Set<FakeDatapath>();
  /** Signal delivery delay (XMPP round trip). */
  signalDelayMs = 50;
  /** ICE + DTLS time once both ends have the descriptions. */
  connectMs = 200;
  /** Trickle ICE: a trickled link reports its further candidates this long after create_link. */
  gatherMs = 40;
  /** Signal delivery delay by type (default signalDelayMs): to reorder signals. */
  delayOf: ((s: { from: Uid; to: string; type: string; data: unknown }) => number | undefined) | null = null;
  /** When false, links never come up and fail after failAfterMs. */
  linksWork = true;
  failAfterMs = 5_000;
  /** Signals delivered, for assertions: [from uid, to jid, type, data]. */
  readonly signals: { from: Uid; to: string; type: string; data: unknown }[] = [];
  /** Drop signals matching this (simulates loss). */
  drop: ((s: { from: Uid; to: string; type: string; data: unknown }) => boolean) | null = null;

  /** Links whose connection is under way (tryConnect may be called again by add_candidate). */
  private readonly connecting = new Set<FakeLink>();

  constructor(readonly clock: Clock) {}

  add(dp: FakeDatapath): void {
    this.nodes.add(dp);
  }

  jidOf(uid: Uid): string | null {
    for (const n of this.nodes) if (n.uid === uid && n.xmppState === 'online') return n.jid;
    return null;
  }

  private byJid(jid: string): FakeDatapath | undefined {
    for (const n of this.nodes) if (n.jid === jid && n.xmppState === 'online') return n;
    return undefined;
  }

  online(dp: FakeDatapath): void {
    for (const n of this.nodes) {
      if (n === dp || n.xmppState !== 'online' || !n.uid || !dp.uid) continue;
      n.presence({ uid: dp.uid, jid: dp.jid, overlay: dp.overlay, online: true, ...announced(dp) });
      dp.presence({ uid: n.uid, jid: n.jid, overlay: n.overlay, online: true, ...announced(n) });
    }
  }

  offline(dp: FakeDatapath): void {
    dp.xmppState = 'offline';
    for (const n of this.nodes) {
      if (n === dp || n.xmppState !== 'online' || !dp.uid) continue;
      n.presence({ uid: dp.uid, jid: dp.jid, overlay: dp.overlay, online: false });
    }
  }

  deliver(from: FakeDatapath, toJid: string, type: string, data: unknown): void {
    const s = { from: from.uid!, to: toJid, type, data };
    if (this.drop?.(s)) return;
    this.signals.push(s);
    const json = JSON.parse(JSON.stringify(data)) as never;
    this.clock.setTimeout(() => {
      const to = this.byJid(toJid);
      if (to && from.uid) to.emit({ event: 'signal', uid: from.uid, jid: from.jid, type, data: json });
    }, this.delayOf?.(s) ?? this.signalDelayMs);
  }

  /** If a's link to uid and the peer's link to a match (offer/answer), they come up after connectMs. */
  tryConnect(a: FakeDatapath, uid: Uid): void {
    const b = [...this.nodes].find((n) => n.uid === uid);
    if (!b || !a.uid) return;
    const la = a.linkFor(uid);
    const lb = b.linkFor(a.uid);
    if (!la || !lb) return;
    const [off, ans] = la.role === 'offerer' ? [la, lb] : [lb, la];
    if (off.role !== 'offerer' || ans.role !== 'answerer') return;
    if (off.remote?.sdp !== ans.local.sdp || ans.remote?.sdp !== off.local.sdp) return;
    // A trickled side's reachable candidate must have reached the other side (add_candidate).
    if (off.trickled && !ans.remoteCandidates.has(off.candidate)) return;
    if (ans.trickled && !off.remoteCandidates.has(ans.candidate)) return;
    if (this.connecting.has(la) || this.connecting.has(lb)) return;
    this.connecting.add(la);
    this.connecting.add(lb);
    const aUid = a.uid;
    this.clock.setTimeout(
      () => {
        this.connecting.delete(la);
        this.connecting.delete(lb);
        if (a.linkFor(uid) !== la || b.linkFor(aUid) !== lb) return;
        if (this.linksWork) {
          a.promote(uid, la);
          b.promote(aUid, lb);
          a.setLinkState(uid, 'up');
          b.setLinkState(aUid, 'up');
        } else {
          a.setLinkState(uid, 'failed', 'ICE failed');
          b.setLinkState(aUid, 'failed', 'ICE failed');
        }
      },
      this.linksWork ? this.connectMs : this.failAfterMs,
    );
  }

  /** dp's link to uid is gone: the other end sees its link go down (DTLS close / ICE consent). */
  peerLost(dp: FakeDatapath, uid: Uid): void {
    const b = [...this.nodes].find((n) => n.uid === uid);
    if (!b || !dp.uid) return;
    const l = b.links.get(dp.uid);
    if (l && l.state === 'up') {
      const aUid = dp.uid;
      this.clock.setTimeout(() => {
        if (b.links.get(aUid) === l) b.setLinkState(aUid, 'down', 'peer connection closed');
      }, 1_000);
    }
  }
}
