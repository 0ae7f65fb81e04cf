import * as z from 'zod';
import { DatapathEndpoint, MembersConfig, XmppConfig, cidr4Parts, configJsonSchema } from './config.js';
import { CreateLinkRequest, LogLevel, SetLocalIpRequest } from './rpc.js';
import { Uid, ip4ToNumber, numberToIp4 } from './uid.js';

/**
 * tincan-socialvpn (paper §4.3, "social" VPN): its config file, its state file, and the one thing
 * its signals add to the shared con_req / con_resp. docs/config.md explains every key;
 * docs/socialvpn-config.schema.json is generated from SocialVpnConfig
 * (`tincan-socialvpn --print-config-schema`).
 */

/**
 * The overlay id every SocialVPN node announces in its XMPP presence and puts in its con_req /
 * con_resp. It contains a ":" on purpose: a GroupVPN network id cannot (NetworkId), so a GroupVPN
 * node of a friend is never taken for a SocialVPN device, and vice versa.
 */
export const SOCIAL_OVERLAY = 'tincan:social';

/** "a.b.c.0/len": a network address (no host bits) with a prefix of /8 to /30. */
export const SubnetCidr4 = z
  .cidrv4({
    // invalid_type (missing, not a string) is left to checkConfig's "missing (expected string)"
    error: (iss) => (iss.code === 'invalid_type' ? undefined : 'expected an IPv4 subnet with its prefix length, e.g. "172.31.0.0/16"'),
  })
  .superRefine((s, ctx) => {
    const parts = cidr4Parts(s, ctx);
    if (!parts) return;
    const { addr, prefix, n } = parts;
    const mask = (0xffffffff << (32 - prefix)) >>> 0;
    const net = (n & mask) >>> 0;
    if (net !== n) {
      ctx.addIssue({
        code: 'custom',
        message:
          `${s} has host bits set: give the subnet as ${numberToIp4(net)}/${prefix} ` +
          `(and "address": "${addr}" if that is to be this node's own address)`,
      });
    }
  });

export const SocialVnicConfig = z
  .strictObject({
    name: SetLocalIpRequest.shape.name.default('tincan0').describe('The TUN interface name.'),
    mtu: SetLocalIpRequest.shape.mtu.describe('The vNIC MTU (576–9000). Best safe value on a 1500-byte path: 1376 (1336 if much traffic is relayed); see docs/config.md.'),
  })
  .describe('The virtual network interface (its IPv4 address comes from "subnet" / "address").');

/**
 * The "social profile" link policy (paper §4.3): proactive links with the friends' devices this node
 * talks to often, on-demand links for the others. "Often" is an activity score: each day on which at
 * least `active_day_packets` packets went over the link to a device (either way) counts
 * 0.5^(age in days / half_life_days); today counts 1. The devices of online friends whose score is
 * at least `min_score` are ranked, and the best `proactive_links` of them are linked proactively.
 */
export const SocialProfileConfig = z
  .strictObject({
    proactive_links: z
      .number()
      .int()
      .min(0)
      .max(1024)
      .default(4)
      .describe('At most this many friends\' devices (the most active ones) get proactive links; 0 = everything on demand.'),
    min_score: z
      .number()
      .min(0)
      .max(1000)
      .default(1.5)
      .describe('Activity score a device needs for a proactive link (decayed active days, see half_life_days).'),
    half_life_days: z
      .number()
      .gt(0)
      .max(365)
      .default(7)
      .describe('An active day counts half as much after this many days.'),
    active_day_packets: z
      .number()
      .int()
      .min(1)
      .max(1e9)
      .default(50)
      .describe('A day counts as active with a device when at least this many packets went over its link (either way).'),
  })
  .describe('The social-profile link policy: proactive links with frequent friends, on demand for the others.');
export type SocialProfileConfig = z.infer<typeof SocialProfileConfig>;

/** tincan-socialvpn: the user's own subnet, friends mapped into it, IPv4 translated on receive. */
export const SocialVpnConfig = z
  .strictObject({
    $schema: z.string().optional().describe('The JSON Schema of this file, for editors; ignored.'),
    xmpp: XmppConfig.describe('This user\'s XMPP account; its mutually subscribed roster entries are the friends.'),
    subnet: SubnetCidr4.describe(
      'This user\'s private IPv4 subnet, e.g. "172.31.0.0/16": this node takes its first host address (or "address"), friends\' devices the next free ones.',
    ),
    address: z
      .ipv4({ error: (iss) => (iss.code === 'invalid_type' ? undefined : 'expected an IPv4 address (no prefix length), e.g. "172.31.0.1"') })
      .optional()
      .describe('This node\'s own address in the subnet (default: the first host address).'),
    vnic: SocialVnicConfig.prefault({}),
    stun: CreateLinkRequest.shape.stun.describe('STUN servers, "host:port".'),
    turn: CreateLinkRequest.shape.turn.describe('TURN servers (relays for peers behind symmetric NATs).'),
    max_links: z.number().int().min(1).max(1024).default(32).describe('At most this many links; on-demand ones are trimmed least recently used first.'),
    idle_timeout_s: z
      .number()
      .int()
      .min(0)
      .max(7 * 86_400)
      .default(300)
      .describe('On-demand links without traffic for this many seconds are trimmed; 0 = never. Proactive links stay.'),
    social_profile: SocialProfileConfig.prefault({}),
    own_devices: z
      .boolean()
      .default(true)
      .describe('Also link the other TinCan devices of this XMPP account (same bare JID, another resource).'),
    datapath: DatapathEndpoint,
    state_dir: z
      .string()
      .min(1)
      .optional()
      .describe(
        "The datapath's --state-dir (its RPC token is read from there); the controller keeps socialvpn-state.json (node UID, friends' addresses, traffic history) and writes socialvpn-status.json there. " +
          "Default: /var/lib/tincan/NAME for a config file NAME.json (the systemd units' layout).",
      ),
    log_level: LogLevel.default('info').describe('Log level.'),
    members: MembersConfig.optional(),
  })
  .superRefine((c, ctx) => {
    if (c.address !== undefined) {
      let a: number, net: number, prefix: number;
      try {
        a = ip4ToNumber(c.address);
        const [n = '', len = ''] = c.subnet.split('/');
        net = ip4ToNumber(n);
        prefix = Number(len);
      } catch {
        return; // reported by the field checks
      }
      if (!(prefix >= 8 && prefix <= 30)) return;
      const mask = (0xffffffff << (32 - prefix)) >>> 0;
      const bcast = (net | (~mask >>> 0)) >>> 0;
      if (((a & mask) >>> 0) !== net) {
        ctx.addIssue({ code: 'custom', path: ['address'], message: `${c.address} is not in the subnet ${c.subnet}` });
      } else if (a === net || a === bcast) {
        ctx.addIssue({
          code: 'custom',
          path: ['address'],
          message: `${c.address} is the ${a === net ? 'network' : 'broadcast'} address of ${c.subnet}; give a host address`,
        });
      }
    }
    if (c.social_profile.proactive_links > c.max_links) {
      ctx.addIssue({
        code: 'custom',
        path: ['social_profile', 'proactive_links'],
        message: `at most max_links (${c.max_links}); keep some room for on-demand links`,
      });
    }
  });
export type SocialVpnConfig = z.infer<typeof SocialVpnConfig>;
export type SocialVpnConfigInput = z.input<typeof SocialVpnConfig>;

/** JSON Schema of the SocialVPN config file. */
export function socialVpnConfigJsonSchema(): Record<string, unknown> {
  return configJsonSchema(SocialVpnConfig, 'socialvpn-config.schema.json', 'tincan-socialvpn configuration');
}

// ---------------------------------------------------------------------------------------------
// Signals: SocialVPN uses the shared con_req / con_resp / con_reject (controller-messages.ts) with
// `overlay` = SOCIAL_OVERLAY and `ip4` = the sender's own address in the sender's own subnet, which
// means nothing to the receiver (its subnet is its own) and is never used by it. One optional key is
// added (objects there are not strict, so other controllers ignore it):

/**
 * `proactive: true` in a con_req / con_resp: the sender keeps this link proactively (it talks to the
 * receiver often). The receiver then does not trim it for idleness (the sender will when it stops
 * wanting it), so the two ends do not fight over a link one of them wants and the other finds idle.
 */
export const SocialSignalExtras = z.object({ proactive: z.boolean().optional() });
export type SocialSignalExtras = z.infer<typeof SocialSignalExtras>;

// ---------------------------------------------------------------------------------------------
// State file: STATE_DIR/socialvpn-state.json, written atomically (tmp + fsync + rename), mode 0600.

export const RosterSubscription = z.enum(['none', 'to', 'from', 'both', 'remove']);

const Cumulative = z.object({ created_ms: z.number(), bytes: z.number().nonnegative(), packets: z.number().nonnegative() });

export const SocialVpnState = z.object({
  version: z.literal(1),
  /** This node's UID: 160 random bits, made on first start (never derived from the IPv4 address). */
  uid: Uid,
  /** The subnet and own address when the file was written (mappings outside a new subnet are dropped). */
  subnet: z.string(),
  address: z.ipv4(),
  /** Where the search for the next free address starts (so freed addresses are reused last). */
  next_ip4: z.ipv4().nullable().default(null),
  /** Friend device UID → its address in our subnet, its owner's bare JID, first and last seen. */
  mappings: z.record(
    Uid,
    z.object({
      jid: z.string().min(1),
      ip4: z.ipv4(),
      since_ms: z.number(),
      last_seen_ms: z.number(),
      /** The friend's controller asked to keep the current link (a restarted controller honours it). */
      peer_keeps: z.boolean().optional(),
    }),
  ),
  /** The last roster the datapath reported (a restarted controller uses it until the next login). */
  roster: z
    .object({ updated_ms: z.number(), items: z.record(z.string(), RosterSubscription) })
    .nullable()
    .default(null),
  /** Per friend device: traffic per UTC day, and the link counters already counted. */
  traffic: z
    .record(
      Uid,
      z.object({
        days: z.record(z.string().regex(/^\d{4}-\d{2}-\d{2}$/), z.object({ bytes: z.number().nonnegative(), packets: z.number().nonnegative() })),
        link: Cumulative.nullable().default(null),
      }),
    )
    .default({}),
});
export type SocialVpnState = z.infer<typeof SocialVpnState>;
