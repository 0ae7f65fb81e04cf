import * as z from 'zod';
import { isNetworkCidr } from './rpc.js';
import { Uid, ip4ToNumber, ip6ToBytes, parseCidr } from './uid.js';

/**
 * Inter-controller messages (paper §4.1): controllers talk to their overlay neighbours over
 * the TinCan links themselves, as UDP datagrams between the IPv6 vNIC addresses derived from their
 * UIDs (fd50:dbc:41f2:4a3c::/64 + the UID's first 64 bits), port CONTROLLER_PORT. Each datagram is one
 * UTF-8 JSON document validated here. Objects are not strict: newer controllers may add keys.
 *
 * `routes` is a distance-vector advertisement: "I reach these nodes in this many overlay hops". The
 * sender's own entry has hops 0 and carries its virtual IPv4 address (GroupVPN checks that the UID is
 * SHA-1 of it) and the subnets it routes for (router mode). An entry at UNREACHABLE_HOPS withdraws a
 * route (poison reverse). A table larger than one datagram is sent in several.
 */
export const CONTROLLER_PORT = 5802;
/** The hop count meaning "unreachable" (larger than any usable route). */
export const UNREACHABLE_HOPS = 16;
/** Routes per datagram: keeps one advertisement well under a 1280-byte vNIC MTU's fragment. */
export const ROUTES_PER_MESSAGE = 8;

/** The widest subnet a member may route: anything wider is (part of) a default route. */
export const MIN_ROUTED_PREFIX = { 4: 8, 6: 16 } as const;

/** IPv4 and IPv6 ranges no member may route: unspecified, loopback, link-local, multicast, reserved, mapped. */
const UNROUTABLE: readonly string[] = [
  '0.0.0.0/8', '127.0.0.0/8', '169.254.0.0/16', '224.0.0.0/4', '240.0.0.0/4',
  '::/96', '::ffff:0:0/96', '64:ff9b::/96', 'fe80::/10', 'ff00::/8',
];

/**
 * Why a subnet in a route advertisement is unusable, or null: it must parse with the project's own
 * address parser (so "::ffff:1.2.3.4/96" and other dotted IPv6 forms are refused here, not later), name
 * a network (no host bits), be no wider than MIN_ROUTED_PREFIX (no default route, no halves of one)
 * and not touch an UNROUTABLE range.
 */
export function routedSubnetProblem(cidr: string): string | null {
  let c: ReturnType<typeof parseCidr>;
  try {
    c = parseCidr(cidr);
  } catch {
    return 'not an address/prefix this node can parse';
  }
  if (!isNetworkCidr(cidr)) return 'host bits set';
  if (c.prefix < MIN_ROUTED_PREFIX[c.family]) return `wider than /${MIN_ROUTED_PREFIX[c.family]}`;
  for (const bad of UNROUTABLE) if (cidrOverlaps(bad, cidr)) return `overlaps ${bad}`;
  return null;
}

/** Whether two CIDRs of the same family share an address (false across families or for garbage). */
export function cidrOverlaps(a: string, b: string): boolean {
  try {
    const x = parseCidr(a);
    const y = parseCidr(b);
    if (x.family !== y.family) return false;
    const prefix = Math.min(x.prefix, y.prefix);
    const xb = x.family === 4 ? ip4Bytes(x.address) : ip6ToBytes(x.address);
    const yb = y.family === 4 ? ip4Bytes(y.address) : ip6ToBytes(y.address);
    for (let bit = 0; bit < prefix; bit++) {
      const m = 0x80 >> (bit & 7);
      if ((xb[bit >> 3]! & m) !== (yb[bit >> 3]! & m)) return false;
    }
    return true;
  } catch {
    return false;
  }
}

/** Whether CIDR `outer` contains CIDR `inner` entirely (false across families or for garbage). */
export function cidrCovers(outer: string, inner: string): boolean {
  try {
    return parseCidr(outer).prefix <= parseCidr(inner).prefix && cidrOverlaps(outer, inner);
  } catch {
    return false;
  }
}

function ip4Bytes(a: string): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(ip4ToNumber(a));
  return out;
}

/** A subnet a route advertisement may carry (router mode): see routedSubnetProblem. */
export const RoutedSubnet = z.union([z.cidrv4(), z.cidrv6()]).superRefine((s, ctx) => {
  const problem = routedSubnetProblem(s);
  if (problem !== null) ctx.addIssue({ code: 'custom', message: `${s}: ${problem}` });
});

export const OverlayRoute = z.object({
  uid: Uid,
  hops: z.number().int().min(0).max(UNREACHABLE_HOPS),
  ip4: z.ipv4().optional(),
  subnets: z.array(RoutedSubnet).max(16).optional(),
});
export type OverlayRoute = z.infer<typeof OverlayRoute>;

export const RoutesMessage = z.object({
  t: z.literal('routes'),
  /** The sender's UID (the receiver also checks it against the datagram's source address). */
  from: Uid,
  /** The sender's overlay (GroupVPN network id): messages of another overlay are dropped. */
  overlay: z.string().min(1).max(64),
  routes: z.array(OverlayRoute).max(ROUTES_PER_MESSAGE),
  /**
   * HMAC-SHA256 (base64url) of the rest of the message under the key this pair of nodes shares
   * (controller/src/channel-auth.ts); absent only where the config allows unauthenticated neighbours.
   */
  mac: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'a MAC is 43 base64url characters').optional(),
});
export type RoutesMessage = z.infer<typeof RoutesMessage>;

export const ControllerMessage = z.discriminatedUnion('t', [RoutesMessage]);
export type ControllerMessage = z.infer<typeof ControllerMessage>;

export type ParsedControllerMessage = { ok: true; msg: ControllerMessage } | { ok: false; reason: string };

/** Validates a received datagram; never throws, whatever it holds. */
export function parseControllerMessage(buf: Buffer): ParsedControllerMessage {
  let json: unknown;
  try {
    json = JSON.parse(buf.toString('utf8'));
  } catch {
    return { ok: false, reason: 'not JSON' };
  }
  const r = ControllerMessage.safeParse(json);
  if (!r.success) return { ok: false, reason: z.prettifyError(r.error).slice(0, 300) };
  return { ok: true, msg: r.data };
}
