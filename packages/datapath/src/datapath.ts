import { X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';
import {
  FRAME_DST_OFFSET,
  FRAME_HEADER_LEN,
  FRAME_SRC_OFFSET,
  UID_BYTES,
  isSealedFrame,
  cidrContains,
  ip4ToNumber,
  parseCidr,
  tokenFilePath,
  uidToBytes,
  type CreateLinkResult,
  type SessionDescription,
  type IceCandidate,
  type LinkHealth,
  type LinkState,
  type RequestOf,
  type RpcResults,
  type RpcRequest,
  type StateResult,
  type Uid,
} from '@tincan/protocol';
import { DEFAULT_AQM_SETTINGS, type AqmSettings } from './aqm.js';
import { nativeHeap } from '@tincan/tun';
import { Counters } from './counters.js';
import { ForwardDump } from './debug-dump.js';
import { ForwardingTable, nextHop, normalizeSubnet } from './forwarding-table.js';
import { loadIdentity, type NodeIdentity } from './identity.js';
import { Inside, type UnmappedSink } from './inside.js';
import { DEFAULT_ICE_PORTS, DEFAULT_SCTP_SEND_BUFFER, Link, lanePorts, zeroPathCounters, type IcePortRange } from './link.js';
import { DEFAULT_HEALTH_TIMING, type HealthInput, type HealthTiming } from './link-health.js';
import { DEFAULT_SCTP_SACK_FREQ, RtcLibrary } from './rtc.js';
import { NativeHeapTrimmer, type NativeHeapState } from './native-heap.js';
import { Outside, type TransitSink } from './outside.js';
import { descriptionKeyMismatch } from './peer-trust.js';
import { SealedFrames } from './sealing.js';
import { RpcError, RpcServer, type Endpoint, type RpcCaller, type RpcHandler } from './rpc-server.js';
import { StatePager } from './state-pager.js';
import { resolveXmppAccount } from './xmpp-account.js';
import { Vnic, type VnicConfig } from './vnic.js';
import { Lanes } from './lanes/lanes.js';
import type { TableOp } from './lanes/lane-ipc.js';
import { Watchdog } from './watchdog.js';
import { XmppSession } from './xmpp-session.js';

export interface DatapathOptions {
  rpc: Endpoint;
  stateDir: string;
  logger: Logger;
  /** Frames queued in a data channel above this are dropped (16–64 KB measured alike for throughput, with far less queueing delay than more). */
  maxBufferedBytes?: number;
  /** Unmapped packets handed to the controller per second, at most. */
  unmappedPerSecond?: number;
  /** libdatachannel's own log level (its messages go to the logger at warn). */
  rtcLogLevel?: 'Verbose' | 'Debug' | 'Info' | 'Warning' | 'Error' | 'Fatal';
  /**
   * The vNIC's kernel queue, in packets (txqueuelen). The kernel's 500 holds ~30 ms of a bulk flow in
   * front of the datapath; 64 halved the RTT under load in the baselines bench at the same throughput.
   */
  vnicQueueLen?: number;
  /**
   * `--sctp-send-buffer`: bytes usrsctp holds per link (unsent and in flight) before the data channel's
   * own bounded queue takes over (link.ts DEFAULT_SCTP_SEND_BUFFER); process-wide, lanes too.
   */
  sctpSendBufferBytes?: number;
  /**
   * `--sctp-sack-freq`: data packets a link's SCTP receiver takes per acknowledgement (rtc.ts
   * DEFAULT_SCTP_SACK_FREQ); process-wide, lanes too.
   */
  sctpSackFreq?: number;
  /**
   * Compact frames on direct links (frame.ts), default true. false: this node neither offers nor sends
   * them (full frames only, as a node that predates them); for comparisons and interop tests.
   */
  compactFrames?: boolean;
  /**
   * TUN segmentation offload: false when absent here; the command line (main.ts) sets it unless
   * `--no-offload` or `--no-compact-frames`. The vNIC takes IFF_VNET_HDR and TSO, TCP
   * super-packets go whole (with their virtio_net_hdr) to peers that advertised offload on their
   * direct compact link and are segmented in software anywhere else (segmenter.ts). Needs compact
   * frames to matter. With `--lanes` > 1 every lane takes it alike.
   */
  offload?: boolean;
  /**
   * The delay-based limit on each link's send queue (aqm.ts, docs/architecture.md "Latency under
   * load"): its settings, or null for none (`--no-aqm`). Absent: DEFAULT_AQM_SETTINGS. Needs compact
   * frames; lanes take the same.
   */
  aqm?: AqmSettings | null;
  /**
   * `--lanes`: datapath processes, this one included, each on its own queue of a multi-queue vNIC
   * with its own lane link per peer (lanes/). 1 (the default): no lane processes, a plain TUN.
   */
  lanes?: number;
  /** `--ice-ports`: the local UDP ports of the links' ICE agents, handed out in turn (link.ts, IcePortRange). */
  icePorts?: IcePortRange;
  /**
   * `--watchdog`: seconds the main thread may stall (a native deadlock) before the process SIGKILLs
   * itself so that its supervisor restarts it (watchdog.ts); lane processes get the same. 0 or
   * absent: no watchdog.
   */
  watchdogS?: number;
  /**
   * `--malloc-arenas`: the malloc arena limit main.ts set at start (native-heap.ts), reported in
   * get_state and handed to lane processes; null or absent: none set (glibc's default).
   */
  mallocArenaLimit?: number | null;
  /**
   * Debug only (`--debug-dump-forwarded`): a pcap file that gets every frame this node forwards for
   * others (debug-dump.ts). Absent: none.
   */
  debugDumpForwarded?: string;
  /** Opens the vNIC (default Vnic.open); tests pass a stand-in. */
  openVnic?: (config: VnicConfig) => Promise<Vnic>;
  /** Path health timing (link-health.ts); absent: DEFAULT_HEALTH_TIMING. */
  healthTiming?: HealthTiming;
}

/** A peer's repairs (make-before-break replacements of its link): how many, the last one's time and why. */
interface RepairRecord {
  count: number;
  lastMs: number | null;
  lastReason: string | null;
  /** The reason of the repair under way (a spare link being made). */
  pendingReason: string | null;
}

/**
 * RtcConfig mtu = min(MAX_RTC_MTU, vNIC MTU + LINK_OVERHEAD): the 124 bytes SCTP/DTLS/UDP/IP take
 * (docs/architecture.md, "RtcConfig mtu and the vNIC MTU": the largest message in one SCTP packet is mtu − 124) plus a full frame's 40-byte header.
 * At a 1500-byte path MTU: up to a vNIC MTU of 1336 every plaintext frame fits one SCTP packet; from
 * 1337 to 1376 compact frames (direct links, frame.ts) still do while full frames (transit,
 * controller-injected, or to peers without compact frames) are split in two by SCTP — correct, only
 * slower; above 1376 every full-size packet is split. A sealed (relayed) frame is SEALED_OVERHEAD (34)
 * bytes longer than a full frame: a full-size packet through a relay is split in two at any vNIC MTU.
 * Growing the RtcConfig mtu for them would make every link's packets larger, and break links on
 * underlay paths that carry today's but not 34 bytes more (docs/decisions/sealed-relayed-frames.md).
 * docs/config.md: "best safe vNIC MTU".
 */
const LINK_OVERHEAD = FRAME_HEADER_LEN + 124;
const MAX_RTC_MTU = 1500;
const DEFAULT_VNIC_QUEUE = 64;

interface LocalNode {
  uid: Uid;
  uidBytes: Buffer;
  vnic: Vnic;
  ip4: string | null;
  ip6: string | null;
}

/**
 * tincan-datapath: mechanism only. It owns the vNIC, the links, the XMPP session and the forwarding
 * table, and does what its controller asks over the RPC; it never decides on its own to make a link.
 */
export class Datapath implements RpcHandler, UnmappedSink, TransitSink {
  readonly table = new ForwardingTable();
  private readonly links = new Map<Uid, Link>();
  private readonly pendingOffers = new Map<Uid, Promise<CreateLinkResult>>();
  /**
   * Repairs (create_link `repair`): a new link being made beside the peer's current one, which keeps
   * carrying traffic (or holding it, while suspect) until the new one is up and takes its place.
   */
  private readonly spares = new Map<Uid, Link>();
  private readonly pendingSpareOffers = new Map<Uid, Promise<CreateLinkResult>>();
  private readonly repairs = new Map<Uid, RepairRecord>();
  /** Path health and repair counters, shared by every link. */
  private readonly pathCounters = zeroPathCounters();
  private readonly healthTimer: NodeJS.Timeout;
  /** set_peer_cert: the node certificate the controller trusts for each peer. */
  private readonly peerCerts = new Map<Uid, X509Certificate>();
  /** Sealed relayed frames (sealing.ts): this node's key and epoch, the trusted peers' keys. */
  private readonly sealed: SealedFrames;
  /** --debug-dump-forwarded; null without. */
  private readonly forwardDump: ForwardDump | null;
  private readonly inside: Inside;
  private readonly outside: Outside;
  private local: LocalNode | null = null;
  private settingLocalIp: { key: string; result: Promise<unknown> } | null = null;
  private xmpp: XmppSession | null = null;
  private xmppKey = '';
  private overlay: string | null = null;
  private readonly startedMs = Date.now();
  private readonly sampler: NodeJS.Timeout;
  private unmappedWindowStart = 0;
  private unmappedInWindow = 0;
  /** Trickle ICE: local candidates reported, peer candidates added, and dropped as overlay addresses. */
  private readonly trickleCounters = { candidatesTrickled: 0, candidatesAdded: 0, candidatesFiltered: 0 };
  /**
   * Gatherings that completed without a relayed candidate although a TURN server was configured (the
   * Allocate refused), and whole descriptions made once more on a fresh link because of it.
   */
  private readonly iceCounters = { gatheringsWithoutRelay: 0, descriptionsRegathered: 0 };
  /** Kernel route changes (set_remote_subnet), one at a time. */
  private routeChanges: Promise<unknown> = Promise.resolve();
  /** `--lanes N` > 1: the lane processes and lane links (lanes/lanes.ts); null with one lane. */
  private readonly lanes: Lanes | null;
  /** Started once startup work is done (Datapath.start); stopped last in stop(). */
  private watchdog: Watchdog | null = null;
  /** node-datachannel, loaded by the first link: an idle datapath does without it (rtc.ts). */
  private readonly rtc: RtcLibrary;
  /** Gives the C heap's free pages back once links stop changing (native-heap.ts). */
  private readonly heapTrimmer: NativeHeapTrimmer;
  /** get_state answers larger than a datagram, in pages (state-pager.ts). */
  private readonly pager = new StatePager();

  private constructor(
    readonly counters: Counters,
    private readonly rpc: RpcServer,
    private readonly identity: NodeIdentity,
    private readonly opts: DatapathOptions,
    private readonly log: Logger,
  ) {
    this.rtc = new RtcLibrary(
      opts.rtcLogLevel ?? 'Warning', log.child({ component: 'libdatachannel' }), opts.sctpSendBufferBytes ?? DEFAULT_SCTP_SEND_BUFFER,
      opts.sctpSackFreq ?? DEFAULT_SCTP_SACK_FREQ,
    );
    this.sealed = new SealedFrames(identity.privateKey, counters);
    this.forwardDump = opts.debugDumpForwarded ? new ForwardDump(opts.debugDumpForwarded) : null;
    this.inside = new Inside(this.table, this, this.counters, opts.offload === true, this.sealed);
    this.outside = new Outside(this.table, this, this.counters, opts.offload === true, this.sealed, this.forwardDump);
    this.heapTrimmer = new NativeHeapTrimmer(nativeHeap, opts.mallocArenaLimit ?? null, log.child({ component: 'native-heap' }));
    this.lanes = this.makeLanes();
    this.sampler = setInterval(() => {
      const now = Date.now();
      this.sealed.rotateIfDue();
      for (const l of this.links.values()) {
        l.sample(now);
        this.lanes?.sample(l, now);
      }
    }, 1000);
    this.sampler.unref();
    this.healthTimer = setInterval(() => {
      const now = performance.now();
      for (const l of this.links.values()) l.healthTick(now);
    }, (opts.healthTiming ?? DEFAULT_HEALTH_TIMING).tickMs);
    this.healthTimer.unref();
  }

  static async start(opts: DatapathOptions): Promise<Datapath> {
    const log = opts.logger;
    const identity = await loadIdentity(opts.stateDir);
    const counters = new Counters();
    const tokenFile = tokenFilePath(opts.stateDir, opts.rpc.port);
    const rpc = await RpcServer.start(opts.rpc, tokenFile, counters, log.child({ component: 'rpc' }));
    const dp = new Datapath(counters, rpc, identity, opts, log);
    rpc.setHandler(dp);
    log.info({ rpc: rpc.endpoint, tokenFile, fingerprint: identity.fingerprint }, 'datapath ready');
    dp.watchdog = Watchdog.start({ timeoutS: opts.watchdogS ?? 0, logger: log });
    return dp;
  }

  get rpcEndpoint(): Endpoint {
    return this.rpc.endpoint;
  }

  async handle(req: RpcRequest, from: RpcCaller): Promise<unknown> {
    switch (req.m) {
      case 'echo':
        return { data: req.data ?? '' };
      case 'set_local_ip':
        return this.setLocalIp(req);
      case 'register_svc':
        return this.registerSvc(req);
      case 'create_link':
        return this.createLink(req);
      case 'add_candidate':
        return this.addCandidate(req);
      case 'trim_link':
        return req.spare ? this.trimSpare(req.uid) : this.trimLink(req.uid);
      case 'set_remote_ip':
        return this.setRemoteIp(req);
      case 'set_route':
        return this.setRoute(req);
      case 'set_transit':
        if (req.enabled !== this.outside.transit) this.log.info({ transit: req.enabled }, 'transit');
        this.outside.setTransit(req.enabled);
        this.replicate({ op: 'transit', enabled: req.enabled });
        return {};
      case 'set_remote_subnet':
        return this.setRemoteSubnet(req);
      case 'set_peer_cert':
        return this.setPeerCert(req);
      case 'get_state':
        return this.pager.first(from.session, this.state(req.peers));
      case 'get_state_page':
        return this.pager.page(from.session, req.snapshot, req.offset);
      case 'keepalive':
        return {}; // answered by the RPC server itself
      case 'get_roster':
        return this.xmpp ? this.xmpp.roster() : { known: false, items: [] };
      case 'send_signal':
        return this.sendSignal(req);
      case 'set_cb_endpoint':
        if (req.address !== from.address || req.port !== from.port) {
          throw new RpcError('bad_request', 'the event endpoint must be the requester\'s own address and port (events go sealed in its session)');
        }
        this.rpc.setController(from);
        this.log.info({ controller: `${req.address}:${req.port}` }, 'controller registered');
        return {};
      case 'set_logging':
        this.log.level = req.level;
        this.lanes?.setLogLevel(req.level);
        return {};
    }
  }

  // --- vNIC ---------------------------------------------------------------------------------------

  /**
   * Idempotent, also while the first call is still opening the vNIC: a client that resends the
   * request (its RPC timed out on a busy machine) gets the first call's answer instead of a second
   * TUN open that fails with "in use".
   */
  private setLocalIp(req: RequestOf<'set_local_ip'>): Promise<unknown> {
    const key = JSON.stringify([req.uid, req.name, req.mtu, req.ip4 ?? null, req.ip6 ?? null]);
    const pending = this.settingLocalIp;
    if (pending) {
      if (pending.key === key) return pending.result;
      return Promise.reject(new RpcError('bad_state', 'the vNIC is being configured by another set_local_ip'));
    }
    const result = this.openLocal(req).finally(() => {
      if (this.settingLocalIp?.result === result) this.settingLocalIp = null;
    });
    this.settingLocalIp = { key, result };
    return result;
  }

  private async openLocal(req: RequestOf<'set_local_ip'>): Promise<unknown> {
    if (this.local) {
      const l = this.local;
      const same =
        l.uid === req.uid && l.vnic.config.name === req.name && l.vnic.config.mtu === req.mtu &&
        (l.vnic.config.ip4 ?? null) === (req.ip4 ?? null) && (l.vnic.config.ip6 ?? null) === (req.ip6 ?? null);
      if (same) return { vnic: l.vnic.name };
      throw new RpcError('bad_state', `the vNIC is already configured as ${l.vnic.name} for ${l.uid}; restart the datapath to change it`);
    }
    let vnic: Vnic;
    try {
      vnic = await (this.opts.openVnic ?? Vnic.open)({
        name: req.name, mtu: req.mtu, ip4: req.ip4, ip6: req.ip6, queueLen: this.opts.vnicQueueLen ?? DEFAULT_VNIC_QUEUE,
        multiQueue: this.lanes !== null, offload: this.opts.offload === true,
      });
    } catch (err) {
      throw new RpcError('bad_state', `cannot open vNIC ${req.name}: ${(err as Error).message}`);
    }
    const uidBytes = uidToBytes(req.uid);
    this.local = {
      uid: req.uid, uidBytes, vnic,
      ip4: req.ip4 ? parseCidr(req.ip4).address : null,
      ip6: req.ip6 ? parseCidr(req.ip6).address : null,
    };
    this.inside.setLocalUid(uidBytes);
    this.sealed.setLocalUid(uidBytes);
    this.outside.attach(uidBytes, vnic, this.local.ip4 === null ? null : ip4ToNumber(this.local.ip4));
    vnic.onPackets(this.inside.onPackets);
    vnic.onError((err) => this.log.error({ err }, 'vNIC read error'));
    this.lanes?.start(req.uid, vnic.config);
    this.log.info({ vnic: vnic.name, uid: req.uid, ip4: req.ip4, ip6: req.ip6, mtu: req.mtu }, 'vNIC up');
    return { vnic: vnic.name };
  }

  /**
   * Whether an address is reached through the vNIC: in one of its own subnets or in a subnet routed
   * into it (router mode). Never a usable ICE candidate: the link would run through itself.
   */
  private isOverlayAddress(address: string): boolean {
    const c = this.local?.vnic.config;
    if (!c) return false;
    if ([c.ip4, c.ip6].some((cidr) => cidr !== undefined && cidrContains(cidr, address))) return true;
    return this.table.subnets().some((s) => cidrContains(s.subnet, address));
  }

  /** Whether a network lies inside one of the vNIC's own subnets (the kernel routes it there already). */
  private inVnicSubnet(subnet: { cidr: string; prefix: number; family: 4 | 6 }): boolean {
    const c = this.local?.vnic.config;
    const own = subnet.family === 4 ? c?.ip4 : c?.ip6;
    return own !== undefined && subnet.prefix >= parseCidr(own).prefix && cidrContains(own, parseCidr(subnet.cidr).address);
  }

  private rtcMtu(): number {
    const mtu = this.local?.vnic.config.mtu ?? 1280;
    return Math.min(MAX_RTC_MTU, mtu + LINK_OVERHEAD);
  }

  // --- peers' keys ---------------------------------------------------------------------------------

  /**
   * The certificate the controller trusts for a peer: links to it come up only with its key (a link
   * up with another is closed), and frames to and from it through relays are sealed with it.
   */
  private setPeerCert(req: RequestOf<'set_peer_cert'>): RpcResults['set_peer_cert'] {
    if (req.cert === null) {
      this.peerCerts.delete(req.uid);
      this.sealed.setPeer(req.uid, null);
      return { fingerprint: null };
    }
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(Buffer.from(req.cert, 'base64'));
    } catch {
      throw new RpcError('bad_request', 'cert is not a certificate (base64 of its DER)');
    }
    const before = this.peerCerts.get(req.uid)?.fingerprint256;
    this.peerCerts.set(req.uid, cert);
    if (!this.sealed.setPeer(req.uid, cert) && before !== cert.fingerprint256) {
      this.log.warn({ peer: req.uid.slice(0, 12) }, 'trusted certificate has no P-256 key: frames through relays to and from this peer cannot be sealed');
    }
    const link = this.links.get(req.uid);
    if (link) this.checkLinkKey(link);
    return { fingerprint: cert.fingerprint256 };
  }

  /**
   * A link whose peer is known to use another key than the trusted one (its signaled description, or
   * the certificate DTLS verified) is closed and counted. True if it was.
   */
  private checkLinkKey(link: Link): boolean {
    const cert = this.peerCerts.get(link.uid);
    if (!cert) return false;
    const used = link.state === 'up' ? link.remoteFingerprint() : null;
    const signaled = link.remoteSdp === null ? null : descriptionKeyMismatch(link.remoteSdp, cert.fingerprint256);
    if ((used === null || used === cert.fingerprint256) && signaled === null) return false;
    this.counters.linkCertMismatch++;
    const reason = `the peer's certificate is not the one trusted for it (${used !== null && used !== cert.fingerprint256 ? `DTLS: ${used}` : signaled!})`;
    this.log.warn({ peer: link.uid.slice(0, 12), trusted: cert.fingerprint256 }, reason);
    this.closeLink(link);
    this.rpc.event({ event: 'link', uid: link.uid, state: 'down', reason: 'peer certificate not trusted' });
    return true;
  }

  /** create_link with a peer's description: refused (counted) when it names another key than the trusted one. */
  private checkDescriptionKey(uid: Uid, sdp: string): void {
    const cert = this.peerCerts.get(uid);
    if (!cert) return;
    const mismatch = descriptionKeyMismatch(sdp, cert.fingerprint256);
    if (mismatch === null) return;
    this.counters.linkCertMismatch++;
    throw new RpcError('bad_request', `remote description: ${mismatch}; set_peer_cert trusts ${cert.fingerprint256} for ${uid}`);
  }

  // --- XMPP ----------------------------------------------------------------------------------------

  private async registerSvc(req: RequestOf<'register_svc'>): Promise<unknown> {
    if (!this.local) throw new RpcError('bad_state', 'set_local_ip first: presence carries the node UID');
    const key = JSON.stringify([req.xmpp, req.overlay ?? null, req.caps ?? [], req.member_cert ?? null, this.local.uid]);
    if (this.xmpp && key === this.xmppKey) return { state: this.xmpp.state };
    const credentials = await resolveXmppAccount(req.xmpp);
    if (this.xmpp) await this.xmpp.stop();
    this.xmppKey = key;
    this.overlay = req.overlay ?? null;
    const session = new XmppSession({
      credentials,
      uid: this.local.uid,
      ...(req.overlay !== undefined ? { overlay: req.overlay } : {}),
      ...(req.caps !== undefined ? { caps: req.caps } : {}),
      cert: this.identity.certificateBase64,
      ...(req.member_cert !== undefined ? { memberCert: req.member_cert } : {}),
      logger: this.log.child({ component: 'xmpp' }),
    });
    session.on('state', (state, reason) => {
      // Our session dropped (not stopped): the path to the server broke, maybe ours to everyone.
      if (state === 'offline' && reason !== undefined && reason !== 'stopped') this.hintAll(`XMPP session lost (${reason})`);
      this.rpc.event({ event: 'xmpp', state, ...(reason ? { reason } : {}) });
    });
    session.on('presence', (p) => this.rpc.event({ event: 'presence', ...p }));
    session.on('signal', (s) => this.rpc.event({ event: 'signal', uid: s.uid, jid: s.jid, type: s.type, data: s.data }));
    session.on('roster', (r) => this.rpc.event({ event: 'roster', items: r.items, full: r.full }));
    this.xmpp = session;
    session.start();
    return { state: session.state };
  }

  private async sendSignal(req: RequestOf<'send_signal'>): Promise<unknown> {
    const session = this.xmpp;
    if (!session) throw new RpcError('bad_state', 'not registered with XMPP (register_svc)');
    const jid = req.jid ?? (req.uid ? session.jidOfUid(req.uid) : undefined);
    if (!jid) throw new RpcError('not_found', `no online XMPP peer for ${req.uid ?? 'that request'}`);
    await session.sendSignal(jid, req.type, req.data);
    return { jid };
  }

  // --- links ---------------------------------------------------------------------------------------

  private async createLink(req: RequestOf<'create_link'>): Promise<CreateLinkResult> {
    const local = this.local;
    if (!local) throw new RpcError('bad_state', 'set_local_ip first');
    if (req.uid === local.uid) throw new RpcError('bad_request', 'a node cannot link to itself');
    const existing = this.links.get(req.uid);
    const fingerprint = this.identity.fingerprint;
    if (req.remote) this.checkDescriptionKey(req.uid, req.remote.sdp);

    const spare = this.spares.get(req.uid);
    if (req.remote?.type === 'answer' && spare?.awaitingAnswer) {
      try {
        spare.acceptAnswer(req.remote);
      } catch (err) {
        throw new RpcError('bad_request', `bad answer: ${(err as Error).message}`);
      }
      return { uid: req.uid, state: spare.state, fingerprint };
    }
    if (req.repair && this.lanes === null && existing?.state === 'up' && req.remote?.type !== 'answer') {
      return this.createSpare(req, existing, fingerprint);
    }
    if (req.remote?.type === 'answer') {
      if (!existing?.awaitingAnswer) throw new RpcError('bad_state', `no pending offer to ${req.uid}`);
      try {
        existing.acceptAnswer(req.remote);
        this.lanes?.remoteDescription(existing, req.remote.sdp);
      } catch (err) {
        throw new RpcError('bad_request', `bad answer: ${(err as Error).message}`);
      }
      return { uid: req.uid, state: existing.state, fingerprint };
    }
    if (!req.remote && existing && existing.state !== 'failed' && existing.state !== 'down') {
      const pending = this.pendingOffers.get(req.uid);
      if (pending) return pending; // the same offer again: create_link is idempotent
      return { uid: req.uid, state: existing.state, fingerprint };
    }
    // A new offer, an answer to the peer's offer (which replaces any link we had: the peer restarted
    // or the controllers resolved a glare), or a retry after failure.
    if (spare) this.closeLink(spare);
    if (existing) this.closeLink(existing);
    const link = this.newLink(req);
    const result = req.trickle ? this.trickleDescription(link, req.remote, fingerprint) : this.wholeDescription(req, link, fingerprint, true);
    if (!req.remote) {
      this.pendingOffers.set(req.uid, result);
      result.catch(() => undefined).finally(() => {
        if (this.pendingOffers.get(req.uid) === result) this.pendingOffers.delete(req.uid);
      });
    }
    return result;
  }

  /**
   * create_link `repair` while the peer's link is up: a new link (our offer, or our answer to the
   * peer's) beside it. The current link keeps the peer's traffic (held while suspect) until the new
   * one is up (onLinkState → promote). A repeated repair offer while one is pending returns it.
   */
  private createSpare(req: RequestOf<'create_link'>, current: Link, fingerprint: string): Promise<CreateLinkResult> {
    const uid = req.uid;
    if (!req.remote) {
      const pending = this.pendingSpareOffers.get(uid);
      if (pending && this.spares.get(uid)?.awaitingAnswer) return pending;
    }
    const old = this.spares.get(uid);
    if (old) this.closeLink(old);
    const reason = req.remote
      ? 'the peer repaired its path (a new offer beside the link)'
      : current.healthState === 'suspect' || current.healthState === 'repairing'
        ? 'no answer on the path (probes unanswered)'
        : `asked while the path was ${current.healthState}`;
    const record = this.repairRecord(uid);
    record.pendingReason = reason;
    this.pathCounters.repairsStarted++;
    this.log.info({ peer: uid.slice(0, 12), reason, role: req.remote ? 'answerer' : 'offerer' }, 'repair: a new link beside the current one');
    const link = this.newLink(req, true);
    current.repairing(true, performance.now());
    // A peer (or we) found a path dead: ours to others may be too.
    this.hintAll('a link is being repaired', link);
    const result = req.trickle ? this.trickleDescription(link, req.remote, fingerprint) : this.wholeDescription(req, link, fingerprint, false);
    if (!req.remote) {
      this.pendingSpareOffers.set(uid, result);
      result.catch(() => undefined).finally(() => {
        if (this.pendingSpareOffers.get(uid) === result) this.pendingSpareOffers.delete(uid);
      });
    }
    return result;
  }

  private repairRecord(uid: Uid): RepairRecord {
    let r = this.repairs.get(uid);
    if (!r) {
      r = { count: 0, lastMs: null, lastReason: null, pendingReason: null };
      this.repairs.set(uid, r);
    }
    return r;
  }

  /** Every up link checks its path now (link-health.ts `hint`), but `except`. */
  private hintAll(why: string, except?: Link): void {
    const now = performance.now();
    let n = 0;
    for (const l of this.links.values()) {
      if (l === except || l.state !== 'up') continue;
      l.hint(now);
      n++;
    }
    if (n > 0) this.log.debug({ links: n, why }, 'checking every link\'s path');
  }

  /** The spare link to `uid` is up: it takes the current link's place, with the packets it held. */
  private promote(spare: Link): void {
    const uid = spare.uid;
    const old = this.links.get(uid);
    this.spares.delete(uid);
    this.pendingSpareOffers.delete(uid);
    this.links.set(uid, spare);
    this.table.ensurePeer(uid).link = spare;
    if (old && old !== spare) {
      spare.adoptHeld(old.takeHeld());
      this.closeLink(old);
    }
    const record = this.repairRecord(uid);
    record.count++;
    record.lastMs = Date.now();
    record.lastReason = record.pendingReason ?? 'repaired';
    record.pendingReason = null;
    this.pathCounters.repairsDone++;
    this.log.info({ peer: uid.slice(0, 12), reason: record.lastReason, repairs: record.count }, 'repair: the new link replaced the old one');
  }

  /** The spare link to `uid` failed: the current one (if any) is what the peer has. */
  private spareFailed(spare: Link, reason: string): void {
    const uid = spare.uid;
    this.closeLink(spare);
    this.pathCounters.repairsFailed++;
    const record = this.repairRecord(uid);
    record.pendingReason = null;
    this.links.get(uid)?.repairing(false, performance.now());
    this.log.warn({ peer: uid.slice(0, 12), reason }, 'repair: the new link failed');
  }

  /** The ICE ports this process hands out in turn: its share of `--ice-ports` (the lanes have theirs). */
  private get icePorts(): IcePortRange {
    return lanePorts(this.opts.icePorts ?? DEFAULT_ICE_PORTS, 0, this.opts.lanes ?? 1);
  }

  /** The delay-based limit's settings for every link, or null (off). */
  private get aqmSettings(): AqmSettings | null {
    return this.opts.aqm === undefined ? DEFAULT_AQM_SETTINGS : this.opts.aqm;
  }

  /** A new link for `req` (an offer, or the answer to `req.remote`), in the table and the lanes. */
  private newLink(req: RequestOf<'create_link'>, spare = false): Link {
    const link = new Link(
      {
        rtc: this.rtc,
        uid: req.uid,
        jid: this.xmpp?.jidOfUid(req.uid) ?? null,
        role: req.remote ? 'answerer' : 'offerer',
        stun: req.stun,
        turn: req.turn,
        certificatePemFile: this.identity.certificatePemFile,
        keyPemFile: this.identity.keyPemFile,
        rtcMtu: this.rtcMtu(),
        icePorts: this.icePorts,
        maxBufferedBytes: this.opts.maxBufferedBytes ?? 64 * 1024,
        gatherTimeoutMs: 2000,
        excludeAddress: (address) => this.isOverlayAddress(address),
        compactFrames: this.opts.compactFrames ?? true,
        offload: this.opts.offload === true,
        aqm: this.aqmSettings,
        ...(this.opts.healthTiming ? { healthTiming: this.opts.healthTiming } : {}),
        pathCounters: this.pathCounters,
        logger: this.log.child({ component: 'link', peer: req.uid.slice(0, 12), ...(spare ? { spare: true } : {}) }),
      },
      {
        onFrame: this.outside.onFrame, onCompactFrame: this.outside.onCompactFrame, onState: (l, s, r) => this.onLinkState(l, s, r),
        onHealth: (l, h, input) => this.onLinkHealth(l, h, input),
      },
    );
    if (spare) {
      this.spares.set(req.uid, link);
      return link;
    }
    this.links.set(req.uid, link);
    this.table.ensurePeer(req.uid).link = link;
    this.lanes?.attach(link, req, req.remote);
    return link;
  }

  /**
   * The whole description of `link` (gathering complete, at most 2 s). When TURN gave it no relayed
   * candidate although gathering completed (Link.gatheredWithoutRelay: the Allocate was refused,
   * typically 437 for a 5-tuple an earlier link's allocation still holds), the description has not
   * gone out yet: `regather` makes it once more on a fresh link, whose ICE agent asks from the next
   * port, instead of sending a description that cannot come up through a port-restricted NAT.
   */
  private async wholeDescription(req: RequestOf<'create_link'>, link: Link, fingerprint: string, regather: boolean): Promise<CreateLinkResult> {
    let description: SessionDescription;
    try {
      description = await link.localDescription(req.remote);
    } catch (err) {
      this.closeLink(link);
      throw new RpcError('bad_request', `cannot make a description: ${(err as Error).message}`);
    }
    if (link.gatheredWithoutRelay && this.links.get(req.uid) === link) {
      this.iceCounters.gatheringsWithoutRelay++;
      // A fresh link needs another port: with a one-port range it would ask from the same 5-tuple (437
      // again), and while the closed link still holds the port libdatachannel aborts the process
      // ("Failed to gather local ICE candidates", thrown on its own thread).
      if (regather && this.icePorts.end > this.icePorts.begin) {
        this.iceCounters.descriptionsRegathered++;
        this.log.warn({ peer: req.uid.slice(0, 12) }, 'TURN gave no relayed candidate (allocation refused?): gathering again on a fresh link');
        const pending = this.pendingOffers.get(req.uid);
        this.closeLink(link);
        if (pending) this.pendingOffers.set(req.uid, pending); // still this create_link's
        return this.wholeDescription(req, this.newLink(req), fingerprint, false);
      }
      this.log.warn({ peer: req.uid.slice(0, 12) }, 'TURN gave no relayed candidate again');
    }
    return { uid: req.uid, state: link.state, fingerprint, description };
  }

  // --- trickle ICE ---------------------------------------------------------------------------------

  /** create_link with `trickle`: the description at once; later candidates as `candidate` events. */
  private trickleDescription(link: Link, remote: RequestOf<'create_link'>['remote'], fingerprint: string): Promise<CreateLinkResult> {
    try {
      const description = link.trickleDescription(remote, (c) => this.onLocalCandidate(link, c));
      return Promise.resolve({ uid: link.uid, state: link.state, fingerprint, description });
    } catch (err) {
      this.closeLink(link);
      return Promise.reject(new RpcError('bad_request', `cannot make a description: ${(err as Error).message}`));
    }
  }

  private onLocalCandidate(link: Link, candidate: IceCandidate | null): void {
    if (this.links.get(link.uid) !== link && this.spares.get(link.uid) !== link) return;
    if (candidate) this.trickleCounters.candidatesTrickled++;
    else if (link.gatheredWithoutRelay) {
      // The description went out already: nothing to redo here; the controller's retry makes a new link.
      this.iceCounters.gatheringsWithoutRelay++;
      this.log.warn({ peer: link.uid.slice(0, 12) }, 'TURN gave no relayed candidate (allocation refused?)');
    }
    this.rpc.event(candidate ? { event: 'candidate', uid: link.uid, candidate } : { event: 'candidate', uid: link.uid, done: true });
  }

  private addCandidate(req: RequestOf<'add_candidate'>): unknown {
    // Trickle ICE: a repair's candidates are for its new link (the current one is up already).
    const link = this.spares.get(req.uid) ?? this.links.get(req.uid);
    if (!link) throw new RpcError('not_found', `no link to ${req.uid}`);
    try {
      const r = link.addRemoteCandidates(req.candidates);
      this.trickleCounters.candidatesAdded += r.added;
      this.trickleCounters.candidatesFiltered += r.filtered;
      return r;
    } catch (err) {
      const message = (err as Error).message;
      throw new RpcError(/remote description|closed/.test(message) ? 'bad_state' : 'bad_request', `add_candidate: ${message}`);
    }
  }

  private onLinkState(link: Link, state: LinkState, reason?: string): void {
    const spare = this.spares.get(link.uid);
    if (spare === link) {
      if (state === 'up') this.promote(link); // then on as any link coming up
      else if (state === 'failed' || state === 'down') {
        this.spareFailed(link, reason ?? state);
        // The controller's repair attempt waits on this link: it fails (and retries) as any link.
        this.rpc.event({ event: 'link', uid: link.uid, state: 'failed', reason: `repair failed: ${reason ?? state}`, repair: true });
        return;
      } else return;
    } else if (this.links.get(link.uid) !== link) {
      return;
    } else if (spare && (state === 'down' || state === 'failed')) {
      // The old path died for good while its repair is under way: the new link takes its place now,
      // still connecting (packets for the peer go to the controller until it is up).
      this.log.info({ peer: link.uid.slice(0, 12), state, reason }, 'repair: the old link closed before the new one is up');
      const held = link.takeHeld();
      this.spares.delete(link.uid);
      this.closeLink(link);
      this.links.set(link.uid, spare);
      this.table.ensurePeer(link.uid).link = spare;
      spare.adoptHeld(held);
      return;
    }
    if (state === 'up') this.log.debug({ peer: link.uid.slice(0, 12), dtlsFingerprint: link.remoteFingerprint() }, 'link up: the certificate DTLS verified');
    if (state === 'up' && this.checkLinkKey(link)) return;
    if (state === 'up') this.pendingOffers.delete(link.uid);
    this.heapTrimmer.linkChanged();
    this.rpc.event({ event: 'link', uid: link.uid, state, ...(reason ? { reason } : {}) });
  }

  /**
   * A current link's path health changed: the controller hears of it (`suspect`: repair it). A
   * suspect path is a hint that ours changed: every other link checks its own, and the XMPP session
   * its connection (a reset shows at once).
   */
  private onLinkHealth(link: Link, health: LinkHealth, input: HealthInput): void {
    if (this.links.get(link.uid) !== link) return;
    if (health === 'suspect' && input === 'no_answer') {
      this.hintAll('a link stopped answering', link);
      this.xmpp?.checkNow('a link stopped answering');
    }
    const reason = input === 'no_answer' ? 'no answer to probes' : input === 'heard' ? 'the path answers' : input;
    this.rpc.event({ event: 'link_health', uid: link.uid, health, reason });
  }

  /** trim_link `spare`: ends a repair under way (its new link); the current link stays. */
  private trimSpare(uid: Uid): unknown {
    const spare = this.spares.get(uid);
    if (!spare) return { trimmed: false };
    this.spareFailed(spare, 'trimmed by the controller');
    return { trimmed: true };
  }

  private trimLink(uid: Uid): unknown {
    const spare = this.spares.get(uid);
    if (spare) this.closeLink(spare);
    this.repairs.delete(uid);
    const link = this.links.get(uid);
    if (!link) return { trimmed: spare !== undefined };
    this.closeLink(link);
    this.rpc.event({ event: 'link', uid, state: 'down', reason: 'trimmed' });
    return { trimmed: true };
  }

  private closeLink(link: Link): void {
    this.lanes?.linkClosed(link);
    link.close();
    this.heapTrimmer.linkChanged();
    if (this.spares.get(link.uid) === link) {
      this.spares.delete(link.uid);
      this.pendingSpareOffers.delete(link.uid);
      return;
    }
    if (this.links.get(link.uid) === link) this.links.delete(link.uid);
    this.pendingOffers.delete(link.uid);
    const peer = this.table.peer(link.uid);
    if (peer?.link === link) peer.link = null;
  }

  // --- forwarding table ----------------------------------------------------------------------------

  private setRemoteIp(req: RequestOf<'set_remote_ip'>): unknown {
    if (!req.ip4 && !req.ip6) throw new RpcError('bad_request', 'set_remote_ip needs ip4 and/or ip6');
    if (req.remove) {
      if (req.ip4) this.table.unmap4(req.uid, req.ip4);
      if (req.ip6) this.table.unmap6(req.uid, req.ip6);
      this.replicate(
        ...(req.ip4 ? [{ op: 'unmap4', uid: req.uid, ip: req.ip4 } as const] : []),
        ...(req.ip6 ? [{ op: 'unmap6', uid: req.uid, ip: req.ip6 } as const] : []),
      );
    } else {
      if (req.ip4) this.table.map4(req.uid, req.ip4, req.translate);
      if (req.ip6) this.table.map6(req.uid, req.ip6);
      this.replicate(
        ...(req.ip4 ? [{ op: 'map4', uid: req.uid, ip: req.ip4, translate: req.translate } as const] : []),
        ...(req.ip6 ? [{ op: 'map6', uid: req.uid, ip: req.ip6 } as const] : []),
      );
      const link = this.links.get(req.uid);
      if (link) this.table.ensurePeer(req.uid).link = link;
    }
    return {};
  }

  // --- overlay routing and router mode ------------------------------------------------------------

  private setRoute(req: RequestOf<'set_route'>): unknown {
    if (req.via === req.uid) throw new RpcError('bad_request', 'a route cannot go via its own destination (via === uid)');
    const local = this.local;
    if (local && req.uid === local.uid) throw new RpcError('bad_request', 'no route to this node itself (uid is the local UID)');
    if (local && req.via === local.uid) throw new RpcError('bad_request', 'a route via this node itself would loop (via is the local UID)');
    this.table.setRoute(req.uid, req.via);
    this.replicate({ op: 'route', uid: req.uid, via: req.via });
    for (const uid of [req.uid, req.via]) {
      const link = uid === null ? undefined : this.links.get(uid);
      if (link) this.table.ensurePeer(link.uid).link = link;
    }
    this.log.debug({ uid: req.uid, via: req.via }, req.via === null ? 'route removed' : 'route set');
    return {};
  }

  private async setRemoteSubnet(req: RequestOf<'set_remote_subnet'>): Promise<unknown> {
    const local = this.local;
    if (!local) throw new RpcError('bad_state', 'set_local_ip first: a routed subnet goes into the vNIC');
    const subnet = normalizeSubnet(req.subnet);
    if (subnet.prefix === 0) {
      throw new RpcError('bad_request', `${subnet.cidr}: a default route through the overlay would carry the links themselves`);
    }
    if (req.uid === local.uid) throw new RpcError('bad_request', 'a subnet cannot lie behind this node itself (uid is the local UID)');
    const own = subnet.family === 4 ? local.ip4 : local.ip6;
    if (own !== null && cidrContains(subnet.cidr, own)) {
      throw new RpcError('bad_request', `${subnet.cidr} contains this node's own address ${own}`);
    }
    const kernel = !this.inVnicSubnet(subnet);
    const vnic = local.vnic;
    return this.oneRouteChangeAtATime(async () => {
      if (req.remove) {
        if (!this.table.unmapSubnet(req.uid, subnet.cidr)) return {};
        this.replicate({ op: 'subnet', uid: req.uid, cidr: subnet.cidr, remove: true });
        if (kernel) {
          try {
            await vnic.removeRoute(subnet.cidr);
          } catch (err) {
            throw new RpcError('internal', `unmapped, but cannot remove the route to ${subnet.cidr} from ${vnic.name}: ${(err as Error).message}`);
          }
        }
        this.log.info({ subnet: subnet.cidr, uid: req.uid }, 'subnet removed');
        return {};
      }
      if (kernel) {
        try {
          await vnic.addRoute(subnet.cidr);
        } catch (err) {
          throw new RpcError('internal', `cannot route ${subnet.cidr} into ${vnic.name}: ${(err as Error).message}`);
        }
      }
      const before = this.table.subnetOwner(subnet.cidr);
      this.table.mapSubnet(req.uid, subnet.cidr);
      this.replicate({ op: 'subnet', uid: req.uid, cidr: subnet.cidr, remove: false });
      const link = this.links.get(req.uid);
      if (link) this.table.ensurePeer(req.uid).link = link;
      if (before !== req.uid) this.log.info({ subnet: subnet.cidr, uid: req.uid, kernelRoute: kernel }, 'subnet mapped');
      return {};
    });
  }

  private oneRouteChangeAtATime<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.routeChanges.then(fn, fn);
    this.routeChanges = run.catch(() => undefined);
    return run;
  }

  // --- packets to and from the controller ----------------------------------------------------------

  /** TUN packets with no usable link: to the controller, at most `unmappedPerSecond`. */
  unmapped(frame: Buffer): void {
    const now = Date.now();
    if (now - this.unmappedWindowStart >= 1000) {
      this.unmappedWindowStart = now;
      this.unmappedInWindow = 0;
    }
    if (++this.unmappedInWindow > (this.opts.unmappedPerSecond ?? 2000)) {
      this.counters.unmappedDroppedRateLimit++;
      return;
    }
    if (this.rpc.packet(frame)) this.counters.unmappedToController++;
    else this.counters.unmappedDroppedNoController++;
  }

  /** Frames from a link addressed to another node: the controller routes them (overlay routing). */
  transit(frame: Buffer): void {
    this.unmapped(frame);
  }

  /**
   * A frame from the controller: for this node's vNIC, or to send towards its destination UID. On the
   * destination's up direct link it goes as it is (the peer checks its source, as for any frame). Through
   * a relay (the destination's route) only sealed: this node's own frames are sealed here, a sealed frame
   * (one the controller got as transit) is forwarded as a relay forwards it, and another node's plaintext
   * frame is dropped — relays never get plaintext.
   */
  inject(frame: Buffer): void {
    const local = this.local;
    if (!local || frame.length < FRAME_HEADER_LEN + 20) {
      this.counters.injectedDropped++;
      return;
    }
    this.counters.injectedFromController++;
    if (frame.compare(local.uidBytes, 0, UID_BYTES, FRAME_DST_OFFSET, FRAME_DST_OFFSET + UID_BYTES) === 0) {
      const version = frame[FRAME_HEADER_LEN]! >> 4;
      if (version === 4 || version === 6) local.vnic.write(frame, FRAME_HEADER_LEN);
      else this.counters.injectedDropped++;
      return;
    }
    if (isSealedFrame(frame)) {
      if (!this.outside.relay(frame, null)) this.counters.injectedDropped++;
      return;
    }
    const dst = this.table.lookupUid(frame, FRAME_DST_OFFSET);
    const hop = dst === undefined ? null : nextHop(dst);
    if (hop === null || dst === undefined) {
      this.counters.injectedDropped++;
      return;
    }
    if (hop === dst.link) {
      if (!hop.send(frame)) this.counters.injectedDropped++;
      return;
    }
    const ours = frame.compare(local.uidBytes, 0, UID_BYTES, FRAME_SRC_OFFSET, FRAME_SRC_OFFSET + UID_BYTES) === 0;
    const sealed = ours ? this.sealed.seal(frame, FRAME_HEADER_LEN, frame.length - FRAME_HEADER_LEN, dst) : null;
    if (sealed === null || !hop.send(sealed)) this.counters.injectedDropped++;
  }

  // --- lanes (--lanes N > 1; lanes/) ----------------------------------------------------------------

  private makeLanes(): Lanes | null {
    const count = this.opts.lanes ?? 1;
    if (count <= 1) return null;
    return new Lanes(
      {
        count,
        certificatePemFile: this.identity.certificatePemFile,
        keyPemFile: this.identity.keyPemFile,
        maxBufferedBytes: this.opts.maxBufferedBytes ?? 64 * 1024,
        compactFrames: this.opts.compactFrames ?? true,
        offload: this.opts.offload === true,
        aqm: this.aqmSettings,
        logLevel: this.log.level,
        rtcLogLevel: this.opts.rtcLogLevel ?? 'Warning',
        icePorts: this.opts.icePorts ?? DEFAULT_ICE_PORTS,
        sctpSendBufferBytes: this.opts.sctpSendBufferBytes ?? DEFAULT_SCTP_SEND_BUFFER,
        sctpSackFreq: this.opts.sctpSackFreq ?? DEFAULT_SCTP_SACK_FREQ,
        watchdogS: this.opts.watchdogS ?? 0,
        mallocArenas: this.opts.mallocArenaLimit ?? 0,
        logger: this.log,
      },
      {
        table: this.table,
        transitOn: () => this.outside.transit,
        rtcMtu: () => this.rtcMtu(),
        insideFromLane: (batch) => this.inside.onPlainPackets(batch),
        frameFromLane: (frame) => this.outside.fromLane(frame),
      },
    );
  }

  /** Every forwarding-table change goes to the lane processes' replicas, in order. */
  private replicate(...ops: TableOp[]): void {
    this.lanes?.replicate(...ops);
  }

  // --- state ---------------------------------------------------------------------------------------

  /** get_state; `peers`: `overlay` lists only the registered overlay's online peers (all without one). */
  state(peers: 'overlay' | 'all' = 'all'): StateResult {
    const local = this.local;
    const links = [...this.links.values()].map((l) => {
      const p = this.table.peer(l.uid);
      const r = this.repairs.get(l.uid);
      const info = { ...l.info(p ? [...p.ip4] : [], p ? [...p.ip6] : []), repairs: r?.count ?? 0, last_repair_ms: r?.lastMs ?? null, last_repair_reason: r?.lastReason ?? null };
      return this.lanes ? this.lanes.decorate(info) : info;
    });
    const c = this.rpc.controllerEndpoint;
    return {
      node: {
        uid: local?.uid ?? null,
        vnic: local?.vnic.name ?? null,
        ip4: local?.vnic.config.ip4 ?? null,
        ip6: local?.vnic.config.ip6 ?? null,
        mtu: local?.vnic.config.mtu ?? null,
        offload: this.opts.offload === true,
        fingerprint: this.identity.fingerprint,
        uptime_s: Math.round((Date.now() - this.startedMs) / 1000),
        controller: c ? `${c.address}:${c.port}` : null,
      },
      xmpp: {
        state: this.xmpp ? this.xmpp.state : 'unregistered',
        jid: this.xmpp ? this.xmpp.jid : null,
        overlay: this.overlay,
      },
      links,
      peers: this.xmpp
        ? this.xmpp.peers().filter((p) => peers === 'all' || this.overlay === null || p.overlay === this.overlay).map((p) => ({ uid: p.uid, jid: p.jid, overlay: p.overlay, last_heard_ms: p.lastHeardMs, ...(p.caps.length > 0 ? { caps: p.caps } : {}), ...(p.cert ? { cert: p.cert } : {}), ...(p.memberCert ? { member_cert: p.memberCert } : {}) }))
        : [],
      routes: this.lanes ? this.table.routes().map((r) => ({ ...r, packets_out: r.packets_out + this.lanes!.routePacketsOut(r.uid) })) : this.table.routes(),
      subnets: this.table.subnets(),
      transit: this.outside.transit,
      memory: memoryState(this.heapTrimmer.state()),
      sctp: this.rtc.sctpState(),
      counters: this.counters.snapshot({
        vnic_write_drops: local?.vnic.writeDrops ?? 0,
        ...this.trickleCounters,
        ...this.iceCounters,
        ...this.pathCounters,
        ...(this.xmpp ? prefixed('xmpp_', this.xmpp.counters()) : {}),
        ...(this.lanes ? this.lanes.counters() : {}),
      }),
    };
  }

  async stop(): Promise<void> {
    clearInterval(this.sampler);
    clearInterval(this.healthTimer);
    this.heapTrimmer.stop();
    await this.lanes?.stop();
    for (const l of [...this.spares.values(), ...this.links.values()]) this.closeLink(l);
    if (this.xmpp) await this.xmpp.stop().catch(() => undefined);
    this.local?.vnic.close();
    this.forwardDump?.close();
    this.rpc.close();
    this.rtc.cleanup();
    // Last: a close above that deadlocks in libdatachannel still gets the process killed.
    this.watchdog?.stop();
  }
}

/** get_state's `memory`: this process's C heap (native-heap.ts) and resident memory. */
function memoryState(heap: NativeHeapState): StateResult['memory'] {
  const s = heap.stats;
  return {
    rss_bytes: process.memoryUsage.rss(),
    malloc_arena_limit: heap.mallocArenaLimit,
    native_heap_trims: heap.trims,
    native_heap: s ? { heap_bytes: s.heapBytes, mmapped_bytes: s.mmappedBytes, in_use_bytes: s.inUseBytes, free_bytes: s.freeBytes } : null,
  };
}

function prefixed(prefix: string, o: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [prefix + k, v]));
}
