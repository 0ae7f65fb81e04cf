import * as z from 'zod';
import { CreateLinkRequest, LogLevel, SetLocalIpRequest, XmppAccountFields, checkPasswordSource } from './rpc.js';
import { RoutedSubnet, cidrCovers, cidrOverlaps } from './overlay-messages.js';
import { ip4ToNumber, ip6ToBytes, numberToIp4 } from './uid.js';
import { MemberCaKey } from './member-cert.js';

/**
 * Controller configuration files (JSON), validated here as the single source of truth.
 * docs/config.md explains every key; docs/groupvpn-config.schema.json is generated from these schemas
 * (`tincan-groupvpn --print-config-schema`) for editors.
 */

/** A network id: announced in XMPP presence, so keep it short and plain. */
export const NetworkId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'expected 1–64 letters, digits, "_", "." or "-" (starting with a letter or digit)')
  .describe('The network id, announced in XMPP presence: only nodes announcing the same id become peers.');

/**
 * XMPP account: the RPC's XmppAccount, except that `password_file` may be relative to the config
 * file. Exactly one of `password` and `password_file` is required.
 */
export const XmppConfig = XmppAccountFields.superRefine((x, ctx) => {
  checkXmppHost(x.host, ctx);
  checkPasswordSource(x, ctx, false);
});

/** `host` is a server name alone: a port or a URL in it fails later, at login, far from the config. */
function checkXmppHost(host: string, ctx: z.RefinementCtx): void {
  const hostPort = /^(?:[a-z]+:\/\/)?([^\s/:[\]]+):(\d+)\/?$/i.exec(host);
  if (hostPort) {
    ctx.addIssue({
      code: 'custom',
      path: ['host'],
      message: `"${host}" has a port in it: give "host": "${hostPort[1]}" and "port": ${hostPort[2]}`,
    });
  } else if (/[\s/]|^[a-z]+:/i.test(host)) {
    ctx.addIssue({ code: 'custom', path: ['host'], message: `"${host}" is not a host name: give the server's name alone, e.g. "xmpp.example.org"` });
  }
}
export type XmppConfig = z.infer<typeof XmppConfig>;

/**
 * "a.b.c.d/len" split for a refinement (HostCidr4, SubnetCidr4): null when there is nothing more to
 * check (the format check reported a bad address, or the prefix is not 8–30, reported here).
 */
export function cidr4Parts(s: string, ctx: z.RefinementCtx): { addr: string; prefix: number; n: number } | null {
  const [addr = '', len = ''] = s.split('/');
  const prefix = Number(len);
  let n: number;
  try {
    n = ip4ToNumber(addr);
  } catch {
    return null; // the format check already reported it
  }
  if (prefix < 8 || prefix > 30) {
    ctx.addIssue({ code: 'custom', message: `the prefix length must be 8–30 (got /${prefix})` });
    return null;
  }
  return { addr, prefix, n };
}

/** "a.b.c.d/len" naming a host (not the network or broadcast address) in a subnet of /8 to /30. */
export const HostCidr4 = z
  .cidrv4({ error: 'expected an IPv4 address with its prefix length, e.g. "10.254.0.1/16"' })
  .superRefine((s, ctx) => {
    const parts = cidr4Parts(s, ctx);
    if (!parts) return;
    const { addr, prefix, n } = parts;
    const host = n & (2 ** (32 - prefix) - 1);
    if (host === 0 || host === 2 ** (32 - prefix) - 1) {
      ctx.addIssue({
        code: 'custom',
        message: `${addr} is the ${host === 0 ? 'network' : 'broadcast'} address of ${s}; give this node's own address`,
      });
    }
  });

export const VnicConfig = z
  .strictObject({
    name: SetLocalIpRequest.shape.name.default('tincan0').describe('The TUN interface name.'),
    ip4: HostCidr4.describe("This node's virtual IPv4 address and the network's prefix length; the node UID is SHA-1 of the address."),
    mtu: SetLocalIpRequest.shape.mtu.describe('The vNIC MTU (576–9000). Best safe value on a 1500-byte path: 1376 (1336 if much traffic is relayed); see docs/config.md.'),
  })
  .describe('The virtual network interface.');
export type VnicConfig = z.infer<typeof VnicConfig>;

/** The systemd units keep network NAME's state in STATE_DIR_ROOT/NAME and its config in CONFIG_DIR/NAME.json. */
export const STATE_DIR_ROOT = '/var/lib/tincan';
export const CONFIG_DIR = '/etc/tincan';

/** state_dir when the config file leaves it out: STATE_DIR_ROOT/NAME for a file NAME.json (the units' layout). */
export function defaultStateDir(configFile: string): string {
  const base = configFile.replace(/\\/g, '/').split('/').pop() ?? '';
  const name = base.replace(/\.json$/i, '');
  return `${STATE_DIR_ROOT}/${name || 'default'}`;
}

/** The datapath's RPC endpoint: loopback only. */
export const DatapathEndpoint = z
  .string()
  .regex(/^(127\.0\.0\.1|\[::1\]):\d{1,5}$/, 'expected "127.0.0.1:PORT" or "[::1]:PORT" (the datapath listens on loopback)')
  .default('127.0.0.1:5801')
  .describe("The datapath's RPC endpoint (tincan-datapath --rpc).");

export const LinkPolicyName = z.enum(['on-demand', 'proactive']);
export type LinkPolicyName = z.infer<typeof LinkPolicyName>;

/**
 * `members`: narrows who may be a peer beyond the roster gate (a mutual roster subscription, or our
 * own account). Empty or absent: every such contact. Otherwise a contact must be in one of the roster
 * groups, or be one of the bare JIDs, or be of one of the domains. Our own account always passes.
 */
export const MembersConfig = z
  .strictObject({
    groups: z.array(z.string().min(1).max(256)).max(64).default([]).describe('Roster groups (e.g. a shared roster group of the server) whose contacts may be peers.'),
    jids: z
      .array(z.string().max(1024).regex(/^[^@/\s]+@[^@/\s]+$/, 'expected a bare JID, user@domain'))
      .max(4096)
      .default([])
      .describe('Bare JIDs that may be peers.'),
    domains: z
      .array(z.string().max(255).regex(/^[^@/\s]+$/, 'expected a domain, e.g. example.org'))
      .max(256)
      .default([])
      .describe('XMPP domains whose accounts may be peers.'),
  })
  .describe('Who may be a peer, beyond the mutual roster subscription: any of these roster groups, JIDs or domains (empty: every mutual contact).');
export type MembersConfig = z.infer<typeof MembersConfig>;

/**
 * `membership`: a membership CA for the network. When set, every peer must present a membership
 * certificate signed by `ca_key` (docs/security.md), and this node announces its own (`cert_file`).
 */
export const MembershipConfig = z
  .strictObject({
    ca_key: MemberCaKey.describe('The network\'s membership CA public key (tincanctl ca init prints it).'),
    cert_file: z
      .string()
      .min(1)
      .describe("This node's membership certificate (tincanctl ca sign writes it); relative to the config file."),
  })
  .describe('A membership CA: peers must present a certificate signed by it (binding JID, node key, address, subnets, validity).');
export type MembershipConfig = z.infer<typeof MembershipConfig>;

/** Keys every controller config shares. */
const common = {
  /** JSON Schema reference for editors; ignored. */
  $schema: z.string().optional().describe('The JSON Schema of this file, for editors; ignored.'),
  xmpp: XmppConfig.describe('The XMPP account of this node (the notification overlay).'),
  stun: CreateLinkRequest.shape.stun.describe('STUN servers, "host:port".'),
  turn: CreateLinkRequest.shape.turn.describe('TURN servers (relays for peers behind symmetric NATs).'),
  link_policy: LinkPolicyName.default('on-demand').describe(
    'on-demand: link when traffic wants a peer; proactive: link to every member as soon as it is online.',
  ),
  max_links: z.number().int().min(1).max(1024).default(32).describe('At most this many links; the least recently used is trimmed first.'),
  /** Links with no traffic for this long are trimmed (on-demand policy); 0 = never. */
  idle_timeout_s: z
    .number()
    .int()
    .min(0)
    .max(7 * 86_400)
    .default(300)
    .describe('On-demand: links without traffic for this many seconds are trimmed; 0 = never.'),
  datapath: DatapathEndpoint,
  /**
   * Where the datapath keeps its RPC token (its --state-dir) and the controller writes its status.
   * Without it: STATE_DIR_ROOT/NAME for a config file NAME.json (defaultStateDir, the loader's).
   */
  state_dir: z
    .string()
    .min(1)
    .optional()
    .describe(
      "The datapath's --state-dir (its RPC token is read from there); the controller writes groupvpn-status.json there. " +
        'Default: /var/lib/tincan/NAME for a config file NAME.json (the systemd units\' layout).',
    ),
  log_level: LogLevel.default('info').describe('Log level.'),
  members: MembersConfig.optional(),
};

/** "a.b.c.d/len" or an IPv6 prefix naming a network: no host bits set. */
export const NetworkCidr = z
  .union([z.cidrv4(), z.cidrv6()], { error: 'expected a subnet such as "10.44.0.0/24" or "fd00:44::/64"' })
  .superRefine((s, ctx) => {
    const [addr = '', len = ''] = s.split('/');
    const prefix = Number(len);
    const bytes = addr.includes(':') ? ip6ToBytes(addr) : Buffer.from(addr.split('.').map(Number));
    for (let bit = prefix; bit < bytes.length * 8; bit++) {
      if (bytes[bit >> 3]! & (0x80 >> (bit & 7))) {
        ctx.addIssue({ code: 'custom', message: `${s} has host bits set: give the network address` });
        return;
      }
    }
  });

/** Subnets a member may advertise unless the config says otherwise: private IPv4 and ULA IPv6. */
export const DEFAULT_ACCEPTED_SUBNETS = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'];

/** Multi-hop overlay routing, structured topology and router mode. */
export const RoutingConfig = z
  .strictObject({
    multihop: z
      .boolean()
      .default(true)
      .describe(
        'Route packets through other members when there is no direct link (distance-vector routes between controllers); ' +
          'this node also relays for others.',
      ),
    topology: z
      .enum(['mesh', 'structured'])
      .default('mesh')
      .describe(
        'mesh: links as link_policy says; structured: each member links to its ring successors and about log2(n) ' +
          'long-distance members (needs multihop), plus on-demand shortcuts for busy flows.',
      ),
    shortcut_pps: z
      .number()
      .int()
      .min(1)
      .max(1_000_000)
      .default(50)
      .describe('structured: a routed flow above this many packets per second gets a direct (shortcut) link.'),
    deny: z
      .array(z.ipv4())
      .max(1024)
      .default([])
      .describe('Members (virtual IPv4 addresses) this node never links to directly; multihop reaches them through others.'),
    advertise: z
      .array(RoutedSubnet)
      .max(16)
      .default([])
      .describe(
        'Router mode: subnets behind this node; the other members route them to it. Each must lie inside what routing.routers ' +
          'grants this node. Turn on IP forwarding on this host.',
      ),
    routers: z
      .record(z.ipv4(), z.array(RoutedSubnet).min(1).max(16))
      .default({})
      .refine((r) => Object.keys(r).length <= 1024, 'at most 1024 members')
      .describe(
        'Router mode, the same on every member: which members (virtual IPv4 address) may route which subnets. A subnet a member ' +
          'advertises is used only inside its own grant; grants of different members must not overlap.',
      ),
    accept: z
      .array(NetworkCidr)
      .max(64)
      .default(DEFAULT_ACCEPTED_SUBNETS)
      .describe('Subnets other members may advertise (each advertised subnet must lie inside one of these).'),
    allow_unauthenticated: z
      .boolean()
      .default(false)
      .describe(
        "Exchange routes with a neighbour whose node certificate (from its presence) is not known, without a MAC. Off: such a " +
          'neighbour gets and gives no routes until its certificate is known.',
      ),
    max_routes_per_neighbour: z
      .number()
      .int()
      .min(16)
      .max(65_536)
      .default(1024)
      .describe('At most this many destinations are learned from one neighbour (the largest group it can describe, minus one).'),
    max_routes: z
      .number()
      .int()
      .min(16)
      .max(1_048_576)
      .default(32_768)
      .describe("At most this many routes are learned from all neighbours together (bounds the controller's memory)."),
  })
  .describe('Overlay routing between members.');
export type RoutingConfig = z.infer<typeof RoutingConfig>;

/**
 * routing.routers must be consistent: grants inside no other member's grant and outside the VPN's own
 * subnet; this node's routing.advertise inside its own grant (else the other members would refuse it).
 */
function routerGrantProblems(r: RoutingConfig, hostCidr: string, ctx: z.RefinementCtx): void {
  const [addr = '', len = ''] = hostCidr.split('/');
  let vpn: string;
  try {
    const prefix = Number(len);
    vpn = `${numberToIp4((ip4ToNumber(addr) & (prefix === 0 ? 0 : ~0 << (32 - prefix))) >>> 0)}/${prefix}`;
  } catch {
    return; // vnic.ip4 already reported
  }
  const grants = Object.entries(r.routers).flatMap(([member, subnets]) => subnets.map((subnet) => ({ member, subnet })));
  for (const [i, g] of grants.entries()) {
    if (cidrOverlaps(g.subnet, vpn)) {
      ctx.addIssue({ code: 'custom', path: ['routing', 'routers', g.member], message: `${g.subnet} overlaps the VPN's own subnet ${vpn}` });
    }
    const other = grants.slice(i + 1).find((h) => h.member !== g.member && cidrOverlaps(g.subnet, h.subnet));
    if (other) {
      ctx.addIssue({
        code: 'custom',
        path: ['routing', 'routers', g.member],
        message: `${g.subnet} overlaps ${other.subnet}, granted to ${other.member}: one subnet, one router`,
      });
    }
  }
  const own = r.routers[addr] ?? [];
  for (const [i, s] of r.advertise.entries()) {
    if (!own.some((g) => cidrCovers(g, s))) {
      ctx.addIssue({
        code: 'custom',
        path: ['routing', 'advertise', i],
        message: `${s} is not granted to this node (${addr}) in routing.routers: the other members would refuse it`,
      });
    }
  }
}

/** tincan-groupvpn: one flat virtual subnet, address assigned by the network's creator. */
export const GroupVpnConfig = z
  .strictObject({
    network_id: NetworkId,
    vnic: VnicConfig,
    routing: RoutingConfig.prefault({}),
    membership: MembershipConfig.optional(),
    ...common,
  })
  .superRefine((c, ctx) => {
    if (c.routing.topology === 'structured' && !c.routing.multihop) {
      ctx.addIssue({ code: 'custom', path: ['routing', 'multihop'], message: 'the structured topology needs multihop routing' });
    }
    routerGrantProblems(c.routing, c.vnic.ip4, ctx);
    if (c.routing.topology === 'structured' && c.link_policy === 'proactive') {
      ctx.addIssue({
        code: 'custom',
        path: ['link_policy'],
        message: 'proactive links to every member would make the structured topology a full mesh: use "on-demand"',
      });
    }
  });
export type GroupVpnConfig = z.infer<typeof GroupVpnConfig>;
export type GroupVpnConfigInput = z.input<typeof GroupVpnConfig>;

/** JSON Schema (draft 2020-12) of a controller's config file (what editors validate against). */
export function configJsonSchema(schema: z.ZodType, file: string, title: string): Record<string, unknown> {
  return {
    ...z.toJSONSchema(schema, { io: 'input', target: 'draft-2020-12' }),
    $id: `https://tincan.invalid/schemas/${file}`,
    title,
  };
}

/** JSON Schema of the GroupVPN config file. */
export function groupVpnConfigJsonSchema(): Record<string, unknown> {
  return configJsonSchema(GroupVpnConfig, 'groupvpn-config.schema.json', 'tincan-groupvpn configuration');
}

export type ConfigCheck<T> = { ok: true; value: T } | { ok: false; problems: string[] };

/** "vnic.ip4", "turn[0].address", or "(top level)". */
export function formatKeyPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const k of path) {
    if (typeof k === 'number') out += `[${k}]`;
    else out += out ? `.${String(k)}` : String(k);
  }
  return out || '(top level)';
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${String(v)}`;
}

/**
 * Validates a parsed config document against `schema`. Each problem names the key path and what is
 * expected ("vnic.ip4: expected an IPv4 address with its prefix length, …"); the caller adds the file.
 */
export function checkConfig<S extends z.ZodType>(schema: S, data: unknown): ConfigCheck<z.output<S>> {
  const r = schema.safeParse(data, {
    error: (iss) => {
      if (iss.code === 'invalid_type') {
        if (iss.input === undefined) return `missing (expected ${iss.expected})`;
        return `expected ${iss.expected}, got ${describeValue(iss.input)}`;
      }
      return undefined;
    },
  });
  if (r.success) return { ok: true, value: r.data };
  const problems: string[] = [];
  for (const iss of r.error.issues) {
    if (iss.code === 'unrecognized_keys') {
      for (const k of iss.keys) problems.push(`${formatKeyPath([...iss.path, k])}: unknown key (not part of the configuration; a typo?)`);
    } else {
      problems.push(`${formatKeyPath(iss.path)}: ${iss.message}`);
    }
  }
  return { ok: false, problems };
}
