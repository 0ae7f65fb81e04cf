import * as z from 'zod';
import { Uid } from './uid.js';

/**
 * Inter-controller messages (issue 6, paper §4.1): controllers talk to their overlay neighbours over
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

const Subnet = z.union([z.cidrv4(), z.cidrv6()]);

export const OverlayRoute = z.object({
  uid: Uid,
  hops: z.number().int().min(0).max(UNREACHABLE_HOPS),
  ip4: z.ipv4().optional(),
  subnets: z.array(Subnet).max(16).optional(),
});
export type OverlayRoute = z.infer<typeof OverlayRoute>;

export const RoutesMessage = z.object({
  t: z.literal('routes'),
  /** The sender's UID (the receiver also checks it against the datagram's source address). */
  from: Uid,
  /** The sender's overlay (GroupVPN network id): messages of another overlay are dropped. */
  overlay: z.string().min(1).max(64),
  routes: z.array(OverlayRoute).max(ROUTES_PER_MESSAGE),
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
