import * as z from 'zod';
import { CreateLinkRequest, LogLevel, SetLocalIpRequest, XmppCredentials } from './rpc.js';
import { ip4ToNumber, ip6ToBytes } from './uid.js';

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
 * XMPP account: the RPC's XmppCredentials, except that the password may come from a file
 * (`password_file`, its first line; relative paths are relative to the config file). Exactly one of
 * `password` and `password_file` is required.
 */
export const XmppConfig = XmppCredentials.omit({ password: true })
  .extend({
    password: XmppCredentials.shape.password.optional().describe('The XMPP password (or use password_file).'),
    password_file: z
      .string()
      .min(1)
      .optional()
      .describe('A file whose first line is the XMPP password; relative to the config file.'),
  })
  .superRefine((x, ctx) => {
    const hostPort = /^(?:[a-z]+:\/\/)?([^\s/:[\]]+):(\d+)\/?$/i.exec(x.host);
    if (hostPort) {
      ctx.addIssue({
        code: 'custom',
        path: ['host'],
        message: `"${x.host}" has a port in it: give "host": "${hostPort[1]}" and "port": ${hostPort[2]}`,
      });
    } else if (/[\s/]|^[a-z]+:/i.test(x.host)) {
      ctx.addIssue({ code: 'custom', path: ['host'], message: `"${x.host}" is not a host name: give the server's name alone, e.g. "xmpp.example.org"` });
    }
    if ((x.password === undefined) === (x.password_file === undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: x.password === undefined ? ['password'] : ['password_file'],
        message:
          x.password === undefined
            ? 'missing: give "password" or "password_file"'
            : 'give either "password" or "password_file", not both',
      });
    }
  });
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

/** Multi-hop overlay routing, structured topology and router mode (issue 6). */
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
      .array(NetworkCidr)
      .max(16)
      .default([])
      .describe('Router mode: subnets behind this node; the other members route them to it. Turn on IP forwarding on this host.'),
    accept: z
      .array(NetworkCidr)
      .max(64)
      .default(DEFAULT_ACCEPTED_SUBNETS)
      .describe('Subnets other members may advertise (each advertised subnet must lie inside one of these).'),
  })
  .describe('Overlay routing between members.');
export type RoutingConfig = z.infer<typeof RoutingConfig>;

/** tincan-groupvpn: one flat virtual subnet, address assigned by the network's creator. */
export const GroupVpnConfig = z
  .strictObject({
    network_id: NetworkId,
    vnic: VnicConfig,
    routing: RoutingConfig.prefault({}),
    ...common,
  })
  .superRefine((c, ctx) => {
    if (c.routing.topology === 'structured' && !c.routing.multihop) {
      ctx.addIssue({ code: 'custom', path: ['routing', 'multihop'], message: 'the structured topology needs multihop routing' });
    }
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
