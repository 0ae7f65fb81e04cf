import * as z from 'zod';
import { Uid, ip4ToNumber, ip6ToBytes, parseCidr } from './uid.js';
import { NODE_CAPS_MAX, NodeCap, NodeCert } from './signal.js';
import { MemberCert } from './member-cert.js';

/**
 * JSON-over-UDP RPC between tincan-datapath (127.0.0.1:5801 by default) and its controller.
 *
 * Every datagram: byte 0 = protocol version (0x03), byte 1 = type:
 *  - 0x04 plain: a UTF-8 JSON document, unauthenticated: the handshake (`hello`, `auth`, rpc-auth.ts)
 *    and the datapath's errors to senders without a session;
 *  - sealed (rpc-auth.ts: session id, sequence number, tag around the payload), after the handshake:
 *    0x01 control: a UTF-8 JSON document (request, response or event, below);
 *    0x02 packet: a frame [src UID][dst UID][IP packet]: unmapped packets (datapath → controller)
 *    and injected ones (controller → datapath);
 *    0x03 inter-controller: reserved for controller-to-controller messages (overlay routing).
 * A datagram of the unauthenticated protocol version 0x02 gets a version-0x02 error that says so.
 */
export const RPC_VERSION = 0x03;
/** The protocol before authenticated sessions (a token in every request): answered with an error only. */
export const LEGACY_RPC_VERSION = 0x02;
export const MsgType = { Control: 0x01, Packet: 0x02, InterController: 0x03, Plain: 0x04 } as const;
export type MsgType = (typeof MsgType)[keyof typeof MsgType];
export const RPC_HEADER_LEN = 2;
export const DEFAULT_RPC_PORT = 5801;
/** Largest datagram either side accepts (an IP packet of 64 KiB plus headers). */
export const MAX_DATAGRAM = 65_507;

export function encodeDatagram(type: MsgType, payload: Buffer, version: number = RPC_VERSION): Buffer {
  const out = Buffer.allocUnsafe(RPC_HEADER_LEN + payload.length);
  out[0] = version;
  out[1] = type;
  payload.copy(out, RPC_HEADER_LEN);
  return out;
}

/** A plain (unauthenticated) JSON datagram: the handshake, and errors to senders without a session. */
export function encodePlain(msg: unknown): Buffer {
  return encodeDatagram(MsgType.Plain, Buffer.from(JSON.stringify(msg), 'utf8'));
}

/** A control datagram of the old protocol version 0x02 (the datapath's one answer to old clients). */
export function encodeLegacyControl(msg: unknown): Buffer {
  return encodeDatagram(MsgType.Control, Buffer.from(JSON.stringify(msg), 'utf8'), LEGACY_RPC_VERSION);
}

export type DecodedDatagram =
  | { ok: true; type: MsgType; payload: Buffer }
  | { ok: false; reason: string; legacy?: true };

/** Checks the 2-byte header; for sealed types the payload still carries session, sequence and tag. */
export function decodeDatagram(buf: Buffer): DecodedDatagram {
  if (buf.length < RPC_HEADER_LEN) return { ok: false, reason: 'datagram shorter than its 2-byte header' };
  if (buf[0] === LEGACY_RPC_VERSION) {
    return { ok: false, legacy: true, reason: 'protocol version 2 (a token in each request) is no longer accepted: this datapath needs the authenticated RPC, protocol version 3 (docs/rpc.md, "Authentication"); update the client' };
  }
  if (buf[0] !== RPC_VERSION) return { ok: false, reason: `unsupported protocol version ${buf[0]}` };
  const type = buf[1];
  if (type !== MsgType.Control && type !== MsgType.Packet && type !== MsgType.InterController && type !== MsgType.Plain) {
    return { ok: false, reason: `unknown message type ${type}` };
  }
  return { ok: true, type, payload: buf.subarray(RPC_HEADER_LEN) };
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

const Cidr4 = z.cidrv4();
const Cidr6 = z.cidrv6();

/** Whether a CIDR names a network: every bit after the prefix length is zero ("10.44.0.0/24"). */
export function isNetworkCidr(cidr: string): boolean {
  try {
    const { address, prefix, family } = parseCidr(cidr);
    if (family === 4) return prefix === 32 || (ip4ToNumber(address) & (0xffffffff >>> prefix)) === 0;
    const b = ip6ToBytes(address);
    for (let bit = prefix; bit < 128; bit++) if (b[bit >> 3]! & (0x80 >> (bit & 7))) return false;
    return true;
  } catch {
    return false;
  }
}

/** An IPv4 or IPv6 network in CIDR notation with no host bits set (router mode). */
export const Subnet = z
  .union([Cidr4, Cidr6])
  .refine(isNetworkCidr, 'expected a network address: the bits after the prefix length must be zero (e.g. 10.44.0.0/24)');
const HostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):\d{1,5}$/, 'expected host:port');

export const TurnServer = z.strictObject({
  address: HostPort,
  username: z.string().min(1).max(256),
  password: z.string().min(1).max(256),
});
export type TurnServer = z.infer<typeof TurnServer>;

/** A file whose first line is the XMPP password (the RPC takes absolute paths; configs relative ones too). */
export const PasswordFile = z.string().min(1).max(4096).describe('A file whose first line is the XMPP password; relative to the config file.');

/** An XMPP account: exactly one of `password` and `password_file` (checked by the schemas using it). */
export const XmppAccountFields = z.strictObject({
  host: z.string().min(1).max(255),
  port: z.number().int().min(1).max(65535).default(5222),
  jid: z.string().regex(/^[^@/\s]+@[^@/\s]+(\/[^\s]+)?$/, 'expected user@domain[/resource]'),
  password: z.string().min(1).max(1024).optional().describe('The XMPP password (or use password_file).'),
  password_file: PasswordFile.optional(),
  ca_file: z.string().min(1).optional(),
  mechanism: z.enum(['SCRAM-SHA-1', 'PLAIN']).default('SCRAM-SHA-1'),
});

/** Exactly one of `password` and `password_file`; `absolute`: the file's path must be absolute (the RPC). */
export function checkPasswordSource(x: { password?: string | undefined; password_file?: string | undefined }, ctx: z.RefinementCtx, absolute: boolean): void {
  if ((x.password === undefined) === (x.password_file === undefined)) {
    ctx.addIssue({
      code: 'custom',
      path: x.password === undefined ? ['password'] : ['password_file'],
      message: x.password === undefined ? 'missing: give "password" or "password_file"' : 'give either "password" or "password_file", not both',
    });
  } else if (absolute && x.password_file !== undefined && !x.password_file.startsWith('/')) {
    ctx.addIssue({ code: 'custom', path: ['password_file'], message: 'expected an absolute path (the datapath reads it)' });
  }
}

/**
 * register_svc's XMPP account. With `password_file` (absolute) the datapath reads the password
 * itself, its first line, so that it never travels over the RPC.
 */
export const XmppAccount = XmppAccountFields.superRefine((x, ctx) => checkPasswordSource(x, ctx, true));
export type XmppAccount = z.infer<typeof XmppAccount>;

/** What the datapath's XMPP session logs in with: the account with its password. */
export const XmppCredentials = XmppAccountFields.omit({ password_file: true }).extend({ password: z.string().min(1).max(1024) });
export type XmppCredentials = z.infer<typeof XmppCredentials>;

export const SessionDescription = z.strictObject({
  type: z.enum(['offer', 'answer']),
  sdp: z.string().min(1).max(16_384),
});
export type SessionDescription = z.infer<typeof SessionDescription>;

export const LinkState = z.enum(['connecting', 'up', 'down', 'failed']);
export type LinkState = z.infer<typeof LinkState>;

/**
 * Whether an up link's path still carries (link-health.ts): `ok`; `checking` (nothing heard while
 * traffic is pending, or a hint: probes out); `suspect` (no answer: packets are held, the controller
 * repairs); `repairing` (a new link is being made beside it).
 */
export const LinkHealth = z.enum(['ok', 'checking', 'suspect', 'repairing']);
export type LinkHealth = z.infer<typeof LinkHealth>;

export const LogLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

// ---------------------------------------------------------------------------------------------
// Requests: { tid, m, ...params }, sealed in a session. Verb names follow the original TinCan where one existed.

const base = { tid: z.number().int().nonnegative() };

export const EchoRequest = z.strictObject({ ...base, m: z.literal('echo'), data: z.string().max(4096).optional() });

/** Opens (or re-applies) the vNIC and sets the local node UID. Idempotent. */
export const SetLocalIpRequest = z.strictObject({
  ...base,
  m: z.literal('set_local_ip'),
  uid: Uid,
  name: z.string().regex(/^[a-zA-Z0-9_.-]{1,15}$/, 'interface name of 1–15 letters, digits, _ . -'),
  ip4: Cidr4.optional(),
  ip6: Cidr6.optional(),
  mtu: z.number().int().min(576).max(9000).default(1280),
});

/**
 * Connects the datapath's XMPP session; `overlay` (GroupVPN network id), `caps` (what the
 * controller takes, e.g. `trickle`) and `member_cert` are announced in presence.
 */
export const RegisterSvcRequest = z.strictObject({
  ...base,
  m: z.literal('register_svc'),
  xmpp: XmppAccount,
  overlay: z.string().max(64).optional(),
  caps: z.array(NodeCap).max(NODE_CAPS_MAX).optional(),
  /** This node's membership certificate, announced in presence (`mcert`) when the network has a CA. */
  member_cert: MemberCert.optional(),
});

/**
 * create_link without `remote`: the datapath makes a PeerConnection and returns an offer.
 * With a remote offer: it answers. With a remote answer: it completes the pending link.
 * With `trickle` (when making an offer or an answer): the description comes back at once with the
 * host candidates, and every later local candidate follows as a `candidate` event (trickle ICE).
 */
export const CreateLinkRequest = z.strictObject({
  ...base,
  m: z.literal('create_link'),
  uid: Uid,
  stun: z.array(HostPort).max(8).default([]),
  turn: z.array(TurnServer).max(8).default([]),
  remote: SessionDescription.optional(),
  trickle: z.boolean().default(false),
  /**
   * Make-before-break (an offer, or the answer to `remote`): the new link is made beside the peer's
   * current one, which keeps carrying traffic until the new one is up and then is closed. Without a
   * current link, an ordinary create_link.
   */
  repair: z.boolean().default(false),
});

/**
 * One ICE candidate as an SDP attribute line ("a=candidate:…" or "candidate:…", RFC 8839) and the
 * media id it belongs to.
 */
export const IceCandidate = z.strictObject({
  candidate: z
    .string()
    .max(512)
    .regex(/^(a=)?candidate:\S+ \d+ \S+ \d+ \S+ \d+ typ [a-z]+( .*)?$/, 'expected an SDP candidate line'),
  mid: z.string().min(1).max(32),
});
export type IceCandidate = z.infer<typeof IceCandidate>;

/** Trickle ICE: hands the peer's candidates to the link to `uid` (after its remote description). */
export const AddCandidateRequest = z.strictObject({
  ...base,
  m: z.literal('add_candidate'),
  uid: Uid,
  candidates: z.array(IceCandidate).min(1).max(32),
});

export const TrimLinkRequest = z.strictObject({
  ...base,
  m: z.literal('trim_link'),
  uid: Uid,
  /** Only the repair's new link (create_link `repair`), not the current one. */
  spare: z.boolean().default(false),
});

/**
 * Maps virtual addresses to a peer UID in the forwarding table (or removes them). With `translate`
 * (SocialVPN, paper §4.3), `ip4` is the peer's address in *this* node's subnet: IPv4 packets from the
 * peer get their source rewritten to it and their destination to this node's own address, whatever
 * addresses the peer uses in its own subnet. IPv6 is never translated.
 */
export const SetRemoteIpRequest = z.strictObject({
  ...base,
  m: z.literal('set_remote_ip'),
  uid: Uid,
  ip4: z.ipv4().optional(),
  ip6: z.ipv6().optional(),
  remove: z.boolean().default(false),
  translate: z.boolean().default(false),
});

/**
 * Overlay routing: frames for `uid` go on the link to `via` whenever there is no up direct link to
 * `uid` (a direct up link always wins). `via: null` removes the route.
 */
export const SetRouteRequest = z.strictObject({
  ...base,
  m: z.literal('set_route'),
  uid: Uid,
  via: Uid.nullable(),
});

/**
 * Transit (overlay routing): when enabled, sealed frames from a link addressed to another node are
 * forwarded unopened on the datapath's fast path, and sealed frames relayed to this node on behalf of
 * another peer with a trusted certificate are opened and accepted. Off (the default): frames for
 * others go to the controller. Plaintext is taken only from a link's own peer, either way.
 */
export const SetTransitRequest = z.strictObject({ ...base, m: z.literal('set_transit'), enabled: z.boolean() });

/**
 * Router mode: the network `subnet` lies behind peer `uid`. Packets to it go to that peer (after the
 * exact address mappings, by longest prefix), packets from it are accepted from that peer, and the
 * datapath routes it into the vNIC. A subnet maps to one UID (a later mapping moves it).
 */
export const SetRemoteSubnetRequest = z.strictObject({
  ...base,
  m: z.literal('set_remote_subnet'),
  uid: Uid,
  subnet: Subnet,
  remove: z.boolean().default(false),
});

/**
 * The node certificate the controller trusts for peer `uid` (pinned, or bound by a membership
 * certificate), or null to forget it. With one set, a link to `uid` comes up only with that
 * certificate's key, and frames relayed between this node and `uid` are sealed end to end with keys
 * derived from the two nodes' keys (docs/security.md).
 */
export const SetPeerCertRequest = z.strictObject({
  ...base,
  m: z.literal('set_peer_cert'),
  uid: Uid,
  cert: NodeCert.nullable(),
});

/**
 * The node's state. `peers`: `overlay` (the default) lists only the online peers of the overlay the
 * datapath registered with (all when it registered none), `all` every one. An answer that does not
 * fit one datagram comes in pages: the first carries `more`, the rest come from get_state_page.
 */
export const GetStateRequest = z.strictObject({
  ...base,
  m: z.literal('get_state'),
  stats: z.boolean().default(true),
  peers: z.enum(['overlay', 'all']).default('overlay'),
});

/** The next page of a get_state answer: `snapshot` and `offset` from its `more` (or the page before). */
export const GetStatePageRequest = z.strictObject({
  ...base,
  m: z.literal('get_state_page'),
  snapshot: z.number().int().min(1).max(0xffff_ffff),
  offset: z.number().int().min(0),
});

/** A session that is the controller says it is alive (at least every few seconds, docs/rpc.md). */
export const KeepaliveRequest = z.strictObject({ ...base, m: z.literal('keepalive') });

/** The XMPP session's roster (a controller that attaches to a running datapath missed its roster event). */
export const GetRosterRequest = z.strictObject({ ...base, m: z.literal('get_roster') });

/** Sends a signal to a peer over XMPP, addressed by UID (from presence) or full JID. */
export const SendSignalRequest = z.strictObject({
  ...base,
  m: z.literal('send_signal'),
  uid: Uid.optional(),
  jid: z.string().max(3071).optional(),
  type: z.string().regex(/^[a-z_]{1,32}$/),
  data: z.json(),
});

/** Where events and unmapped packets go; must be a loopback address. */
export const SetCbEndpointRequest = z.strictObject({
  ...base,
  m: z.literal('set_cb_endpoint'),
  address: z.union([z.literal('127.0.0.1'), z.literal('::1')]),
  port: z.number().int().min(1).max(65535),
});

export const SetLoggingRequest = z.strictObject({ ...base, m: z.literal('set_logging'), level: LogLevel });

export const RpcRequest = z.discriminatedUnion('m', [
  EchoRequest,
  SetLocalIpRequest,
  RegisterSvcRequest,
  CreateLinkRequest,
  AddCandidateRequest,
  TrimLinkRequest,
  SetRemoteIpRequest,
  SetRouteRequest,
  SetTransitRequest,
  SetRemoteSubnetRequest,
  SetPeerCertRequest,
  GetStateRequest,
  GetRosterRequest,
  GetStatePageRequest,
  KeepaliveRequest,
  SendSignalRequest,
  SetCbEndpointRequest,
  SetLoggingRequest,
]);
export type RpcRequest = z.infer<typeof RpcRequest>;
export type RpcVerb = RpcRequest['m'];
export type RequestOf<M extends RpcVerb> = Extract<RpcRequest, { m: M }>;

// ---------------------------------------------------------------------------------------------
// Responses: { tid, ok: true, result } or { tid, ok: false, error: { code, message } }

export const RpcErrorCode = z.enum(['bad_request', 'unauthorized', 'not_found', 'bad_state', 'internal']);
export type RpcErrorCode = z.infer<typeof RpcErrorCode>;

export const RpcResponse = z.union([
  z.strictObject({ tid: z.number().int().nonnegative(), ok: z.literal(true), result: z.json() }),
  z.strictObject({
    tid: z.number().int().nonnegative().nullable(),
    ok: z.literal(false),
    error: z.strictObject({ code: RpcErrorCode, message: z.string() }),
  }),
]);
export type RpcResponse = z.infer<typeof RpcResponse>;

// Results of the verbs that return more than {}.

export const CreateLinkResult = z.strictObject({
  uid: Uid,
  state: LinkState,
  fingerprint: z.string(),
  description: SessionDescription.optional(),
});
export type CreateLinkResult = z.infer<typeof CreateLinkResult>;

export const CandidateType = z.enum(['host', 'srflx', 'prflx', 'relay', 'unknown']);

export const LinkStats = z.strictObject({
  bytes_in: z.number(),
  bytes_out: z.number(),
  packets_in: z.number(),
  packets_out: z.number(),
  drops_backpressure: z.number(),
  drops_spoofed: z.number(),
  drops_malformed: z.number(),
  /** Of packets_in / packets_out: compact frames (bare IP packets on the compact channel, frame.ts). */
  compact_in: z.number(),
  compact_out: z.number(),
  /**
   * The delay-based limit (docs/architecture.md, "Latency under load"): packets it dropped, probes
   * sent, echoes of ours received, echoes sent for the peer's probes, probe messages refused.
   */
  drops_aqm: z.number(),
  probes_out: z.number(),
  probes_answered: z.number(),
  probes_echoed: z.number(),
  probes_bad: z.number(),
});

export const LinkInfo = z.strictObject({
  uid: Uid,
  jid: z.string().nullable(),
  state: LinkState,
  role: z.enum(['offerer', 'answerer']),
  ip4: z.array(z.string()),
  ip6: z.array(z.string()),
  local_candidate: CandidateType.nullable(),
  remote_candidate: CandidateType.nullable(),
  local_address: z.string().nullable(),
  remote_address: z.string().nullable(),
  rtt_ms: z.number().nullable(),
  /** The last queueing delay (ms) that this node's latency probes measured on the link; null without. */
  queue_delay_ms: z.number().nullable(),
  created_ms: z.number(),
  connected_ms: z.number().nullable(),
  last_rx_ms: z.number().nullable(),
  last_tx_ms: z.number().nullable(),
  stats: LinkStats,
  /**
   * How this node sends its own frames to the peer on this link: `compact` once the peer's description
   * offered compact frames and their channel is open, else `full` (each end decides for itself).
   */
  framing: z.enum(['compact', 'full']),
  /** The path's health (LinkHealth); absent from an older datapath. */
  health: LinkHealth.optional(),
  /** Times this peer's link was replaced by a repair (make-before-break), when the last was, and why. */
  repairs: z.number().int().min(0).optional(),
  last_repair_ms: z.number().nullable().optional(),
  last_repair_reason: z.string().nullable().optional(),
  /**
   * `--lanes N` > 1 only: lane links up to this peer (lane processes' own PeerConnections, set up
   * in-band), not counting the link itself. Their traffic is included in `stats`.
   */
  lanes_up: z.number().int().min(0).optional(),
  /** `--lanes N` > 1 only: the traffic of each lane (0: the link itself), already summed into `stats`. */
  lanes: z.array(z.strictObject({
    lane: z.number().int().min(0),
    up: z.boolean(),
    bytes_in: z.number(),
    bytes_out: z.number(),
    packets_in: z.number(),
    packets_out: z.number(),
    /** The delay-based limit on this lane's link: its drops, and echoes of its probes received. */
    drops_aqm: z.number(),
    probes_answered: z.number(),
  })).optional(),
});
export type LinkInfo = z.infer<typeof LinkInfo>;

export const PeerInfo = z.strictObject({
  uid: Uid,
  jid: z.string(),
  overlay: z.string().nullable(),
  last_heard_ms: z.number(),
  /** The capabilities its presence announced (absent when none). */
  caps: z.array(NodeCap).max(NODE_CAPS_MAX).optional(),
  /** The node certificate its presence announced (absent when none or unreadable). */
  cert: NodeCert.optional(),
  /** The membership certificate its presence announced (absent when none or not of the right form). */
  member_cert: MemberCert.optional(),
});
export type PeerInfo = z.infer<typeof PeerInfo>;

export const DatapathCounters = z.record(z.string(), z.number());

/**
 * The datapath process's memory: its resident set, and its C heap (glibc malloc, which node and the
 * native libraries share): the arena limit it set at start (null: none, glibc's default), the trims
 * after link changes, malloc's totals (null when not on glibc).
 */
export const DatapathMemory = z.strictObject({
  rss_bytes: z.number(),
  malloc_arena_limit: z.number().int().nullable(),
  native_heap_trims: z.number().int(),
  native_heap: z.strictObject({
    heap_bytes: z.number(),
    mmapped_bytes: z.number(),
    in_use_bytes: z.number(),
    free_bytes: z.number(),
  }).nullable(),
});

/**
 * usrsctp's acknowledgement settings in this process, read back from the library once it loaded (null
 * before, or where the datapath could not reach them): the receiver's SACK frequency in packets, slow
 * start's byte-counting limit in packets, the sender's burst limit in packets per SACK.
 */
export const DatapathSctp = z.strictObject({
  sack_freq: z.number().int().nullable(),
  abc_l: z.number().int().nullable(),
  max_burst: z.number().int().nullable(),
});

/** An installed overlay route; `packets_out`: vNIC packets this node sent to `uid` through `via`. */
export const RouteInfo = z.strictObject({
  uid: Uid,
  via: Uid,
  packets_out: z.number(),
});
export type RouteInfo = z.infer<typeof RouteInfo>;

/** A routed subnet (router mode) and the peer it lies behind. */
export const SubnetInfo = z.strictObject({
  subnet: z.string(),
  uid: Uid,
});
export type SubnetInfo = z.infer<typeof SubnetInfo>;

export const StateResult = z.strictObject({
  node: z.strictObject({
    uid: Uid.nullable(),
    vnic: z.string().nullable(),
    ip4: z.string().nullable(),
    ip6: z.string().nullable(),
    mtu: z.number().nullable(),
    /** TUN segmentation offload on (the default; off with --no-offload or --no-compact-frames). */
    offload: z.boolean(),
    fingerprint: z.string(),
    uptime_s: z.number(),
    controller: z.string().nullable(),
  }),
  xmpp: z.strictObject({
    state: z.enum(['unregistered', 'connecting', 'online', 'offline']),
    jid: z.string().nullable(),
    overlay: z.string().nullable(),
  }),
  links: z.array(LinkInfo),
  peers: z.array(PeerInfo),
  routes: z.array(RouteInfo),
  subnets: z.array(SubnetInfo),
  transit: z.boolean(),
  memory: DatapathMemory.optional(),
  sctp: DatapathSctp.optional(),
  counters: DatapathCounters,
  /**
   * The answer is larger than one datagram: the lists above hold their first items, get_state_page
   * {snapshot, offset: next} returns the next ones (from a snapshot taken at this call). Absent: whole.
   */
  more: z.strictObject({
    snapshot: z.number().int().min(1),
    next: z.number().int().min(0),
    /** Items in the four lists together. */
    items: z.number().int().min(0),
  }).optional(),
});
export type StateResult = z.infer<typeof StateResult>;

/** A further page of a get_state answer: the next items of each list, in order; `next` null: the last. */
export const StatePage = z.strictObject({
  links: z.array(LinkInfo),
  peers: z.array(PeerInfo),
  routes: z.array(RouteInfo),
  subnets: z.array(SubnetInfo),
  next: z.number().int().min(0).nullable(),
});
export type StatePage = z.infer<typeof StatePage>;

// ---------------------------------------------------------------------------------------------
// Events (datapath → controller): { event, ... } with no tid.

export const PresenceEvent = z.strictObject({
  event: z.literal('presence'),
  uid: Uid,
  jid: z.string(),
  overlay: z.string().nullable(),
  online: z.boolean(),
  /** The capabilities the peer announced (online only; absent when it announced none). */
  caps: z.array(NodeCap).max(NODE_CAPS_MAX).optional(),
  /**
   * The peer's node certificate (online only; absent when it announced none or one the datapath
   * could not read as an X.509 certificate). Announced, not verified: trusting it is policy.
   */
  cert: NodeCert.optional(),
  /** The peer's membership certificate (online only; as announced, not verified). */
  member_cert: MemberCert.optional(),
});
export const SignalEvent = z.strictObject({
  event: z.literal('signal'),
  uid: Uid,
  jid: z.string(),
  type: z.string(),
  data: z.json(),
});
export const LinkEvent = z.strictObject({
  event: z.literal('link'),
  uid: Uid,
  state: LinkState,
  reason: z.string().optional(),
  /** About a repair's new link (create_link `repair`), not the current one: only `failed` is sent. */
  repair: z.literal(true).optional(),
});
/** An up link's health changed (LinkHealth): `suspect` asks the controller to repair it. */
export const LinkHealthEvent = z.strictObject({
  event: z.literal('link_health'),
  uid: Uid,
  health: LinkHealth,
  reason: z.string().optional(),
});
/**
 * Trickle ICE: a local candidate of a link made with `trickle` (not already in its description), or
 * `done: true` when the link has finished gathering. Follows the create_link answer of its link.
 */
export const CandidateEvent = z.strictObject({
  event: z.literal('candidate'),
  uid: Uid,
  candidate: IceCandidate.optional(),
  done: z.literal(true).optional(),
});
export const XmppEvent = z.strictObject({
  event: z.literal('xmpp'),
  state: z.enum(['connecting', 'online', 'offline']),
  reason: z.string().optional(),
});
export const RosterItem = z.strictObject({
  jid: z.string(),
  subscription: z.enum(['none', 'to', 'from', 'both', 'remove']),
  /** Its roster groups (e.g. a shared roster group); absent from an older datapath. */
  groups: z.array(z.string().max(256)).max(32).default([]),
});
export type RosterItem = z.infer<typeof RosterItem>;
export const RosterEvent = z.strictObject({
  event: z.literal('roster'),
  items: z.array(RosterItem),
  /** true: the full roster; false: a push of changed items. */
  full: z.boolean(),
});

/**
 * get_roster's answer: the roster as the datapath holds it now (fetched at login, every push since
 * applied). `known`: the roster of the current XMPP login arrived (false: not registered or not
 * logged in yet, and `items` is empty).
 */
export const GetRosterResult = z.strictObject({ known: z.boolean(), items: z.array(RosterItem) });
export type GetRosterResult = z.infer<typeof GetRosterResult>;

export const RpcEvent = z.discriminatedUnion('event', [PresenceEvent, SignalEvent, LinkEvent, LinkHealthEvent, CandidateEvent, XmppEvent, RosterEvent]);
export type RpcEvent = z.infer<typeof RpcEvent>;
export type EventOf<E extends RpcEvent['event']> = Extract<RpcEvent, { event: E }>;

// ---------------------------------------------------------------------------------------------
// What each verb answers (the `result` of an ok response).

export interface RpcResults {
  echo: { data: string };
  set_local_ip: { vnic: string };
  register_svc: { state: string };
  create_link: CreateLinkResult;
  add_candidate: { added: number; filtered: number };
  trim_link: { trimmed: boolean };
  set_remote_ip: Record<string, never>;
  set_route: Record<string, never>;
  set_transit: Record<string, never>;
  set_remote_subnet: Record<string, never>;
  set_peer_cert: { fingerprint: string | null };
  get_state: StateResult;
  get_roster: GetRosterResult;
  get_state_page: StatePage;
  keepalive: { controller: boolean };
  send_signal: { jid: string };
  set_cb_endpoint: Record<string, never>;
  set_logging: Record<string, never>;
}

/** The request of verb M without the envelope fields the client fills in, with defaults optional. */
export type RpcParams<M extends RpcVerb> = Omit<z.input<Extract<(typeof RpcRequest)['options'][number], { shape: { m: z.ZodLiteral<M> } }>>, 'tid' | 'm'>;

/**
 * Plain answers (type 0x04): to `hello` (its result), and errors to datagrams without a valid session;
 * `session`: the unknown or failed session an error is about (then the client handshakes again).
 */
export const PlainResponse = z.union([
  z.strictObject({ tid: z.number().int().nonnegative(), ok: z.literal(true), result: z.json() }),
  z.strictObject({
    tid: z.number().int().nonnegative().nullable(),
    ok: z.literal(false),
    session: z.number().int().optional(),
    error: z.strictObject({ code: RpcErrorCode, message: z.string() }),
  }),
]);
export type PlainResponse = z.infer<typeof PlainResponse>;

/** Where a datapath writes its RPC token (mode 0600): one file per state directory and port. */
export function tokenFilePath(stateDir: string, port: number): string {
  return `${stateDir.replace(/\/+$/, '')}/rpc-${port}.token`;
}
