import * as z from 'zod';
import { MAX_MALLOC_ARENAS } from '@tincan/tun';
import { LinkState, MAX_LANES, SessionDescription, TurnServer, Uid, ip4ToNumber } from '@tincan/protocol';
import type { ForwardingTable } from '../forwarding-table.js';
import { MAX_SCTP_SEND_BUFFER, MIN_SCTP_SEND_BUFFER } from '../link.js';
import { MAX_SCTP_SACK_FREQ } from '../rtc.js';
import { WatchdogSeconds } from '../watchdog.js';

/**
 * The IPC between the primary datapath and its lane processes (child_process.fork with 'advanced'
 * serialization, so Buffers cross as bytes). Both ends are our own code, but every message is still
 * parsed here: one schema per message, and a lane never acts on something it did not understand.
 */

/** One forwarding-table change, replayed on each lane's replica in the order the primary made it. */
export const TableOp = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('map4'), uid: Uid, ip: z.ipv4(), translate: z.boolean() }),
  z.strictObject({ op: z.literal('unmap4'), uid: Uid, ip: z.ipv4() }),
  z.strictObject({ op: z.literal('map6'), uid: Uid, ip: z.ipv6() }),
  z.strictObject({ op: z.literal('unmap6'), uid: Uid, ip: z.ipv6() }),
  z.strictObject({ op: z.literal('route'), uid: Uid, via: Uid.nullable() }),
  z.strictObject({ op: z.literal('subnet'), uid: Uid, cidr: z.string(), remove: z.boolean() }),
  z.strictObject({ op: z.literal('transit'), enabled: z.boolean() }),
]);
export type TableOp = z.infer<typeof TableOp>;

const LaneNumber = z.number().int().min(1).max(MAX_LANES - 1);

export const LaneInit = z.strictObject({
  t: z.literal('init'),
  lane: LaneNumber,
  uid: Uid,
  vnic: z.strictObject({ name: z.string(), mtu: z.number().int(), ip4: z.string().optional(), ip6: z.string().optional() }),
  certificatePemFile: z.string(),
  keyPemFile: z.string(),
  maxBufferedBytes: z.number().int().positive(),
  compactFrames: z.boolean(),
  /** The primary's `--offload`: the lane's queue, Inside, Outside and lane links take it alike. */
  offload: z.boolean(),
  /** The primary's delay-based limit (aqm.ts): its settings, or null when off (`--no-aqm`). */
  aqm: z.strictObject({ targetMs: z.number().positive(), intervalMs: z.number().positive() }).nullable(),
  logLevel: z.string(),
  rtcLogLevel: z.enum(['Verbose', 'Debug', 'Info', 'Warning', 'Error', 'Fatal']),
  /** This lane's share of the datapath's ICE ports (link.ts lanePorts). */
  icePorts: z.strictObject({ begin: z.number().int().min(1024).max(65535), end: z.number().int().min(1024).max(65535) }),
  /** The primary's `--watchdog` seconds (0: off): the lane watches its own main thread with it. */
  watchdogS: WatchdogSeconds,
  /** The primary's `--sctp-send-buffer` bytes (link.ts). */
  sctpSendBufferBytes: z.number().int().min(MIN_SCTP_SEND_BUFFER).max(MAX_SCTP_SEND_BUFFER),
  /** The primary's `--sctp-sack-freq` (rtc.ts). */
  sctpSackFreq: z.number().int().min(1).max(MAX_SCTP_SACK_FREQ),
  /** The primary's malloc arena limit (native-heap.ts), set by the lane before its first link; 0: none. */
  mallocArenas: z.number().int().min(0).max(MAX_MALLOC_ARENAS),
});
export type LaneInit = z.infer<typeof LaneInit>;

/** Parent → lane. */
export const ToLane = z.discriminatedUnion('t', [
  LaneInit,
  z.strictObject({ t: z.literal('table'), ops: z.array(TableOp) }),
  /** Make the lane link to `peer`: an offer, or the answer to `remote`. Replaces any lane link to it. */
  z.strictObject({
    t: z.literal('link'), peer: Uid, attempt: z.number().int().min(0),
    stun: z.array(z.string()), turn: z.array(TurnServer), rtcMtu: z.number().int(),
    remote: SessionDescription.optional(),
  }),
  z.strictObject({ t: z.literal('answer'), peer: Uid, attempt: z.number().int().min(0), sdp: z.string() }),
  /** The primary link to `peer` is gone: close the lane link and forget its counters. */
  z.strictObject({ t: z.literal('close'), peer: Uid }),
  /** set_logging, passed on. */
  z.strictObject({ t: z.literal('logging'), level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']) }),
]);
export type ToLane = z.infer<typeof ToLane>;

export const LaneLinkStats = z.strictObject({
  peer: Uid,
  up: z.boolean(),
  bytesIn: z.number(), bytesOut: z.number(), packetsIn: z.number(), packetsOut: z.number(),
  dropsBackpressure: z.number(), dropsSpoofed: z.number(), dropsMalformed: z.number(),
  compactIn: z.number(), compactOut: z.number(),
  dropsAqm: z.number(), probesOut: z.number(), probesAnswered: z.number(), probesEchoed: z.number(), probesBad: z.number(),
  /** vNIC packets sent to this peer on its route's lane link (get_state routes[].packets_out). */
  routePacketsOut: z.number(),
});
export type LaneLinkStats = z.infer<typeof LaneLinkStats>;

const Bytes = z.instanceof(Uint8Array);

/** Lane → parent. */
export const FromLane = z.discriminatedUnion('t', [
  z.strictObject({ t: z.literal('ready') }),
  z.strictObject({ t: z.literal('description'), peer: Uid, attempt: z.number().int(), description: SessionDescription }),
  z.strictObject({ t: z.literal('description-error'), peer: Uid, attempt: z.number().int(), message: z.string() }),
  z.strictObject({ t: z.literal('state'), peer: Uid, attempt: z.number().int(), state: LinkState }),
  z.strictObject({ t: z.literal('stats'), counters: z.record(z.string(), z.number()), links: z.array(LaneLinkStats) }),
  /**
   * Packets this lane could not send on a lane link, for the primary to handle as its own: `inside`
   * frames were read from the lane's queue (header written, destination UID zero if unmapped);
   * `transit` frames arrived on a lane link addressed to another node. All frames are packed into
   * `buffer` at `offsets` (each with the 40-byte frame header in front) with `lengths` (IP packet).
   */
  z.strictObject({ t: z.literal('fallback'), kind: z.enum(['inside', 'transit']), buffer: Bytes, offsets: z.array(z.number().int()), lengths: z.array(z.number().int()) }),
]);
export type FromLane = z.infer<typeof FromLane>;

/** Applies one replicated change to a lane's table replica. Transit is not a table op: it returns it. */
export function applyTableOp(table: ForwardingTable, op: TableOp): void {
  switch (op.op) {
    case 'map4': table.map4(op.uid, op.ip, op.translate); break;
    case 'unmap4': table.unmap4(op.uid, op.ip); break;
    case 'map6': table.map6(op.uid, op.ip); break;
    case 'unmap6': table.unmap6(op.uid, op.ip); break;
    case 'route': table.setRoute(op.uid, op.via); break;
    case 'subnet':
      if (op.remove) table.unmapSubnet(op.uid, op.cidr);
      else table.mapSubnet(op.uid, op.cidr);
      break;
    case 'transit': break;
  }
}

/**
 * The operations that rebuild `table` from empty (a lane that starts or restarts): every address
 * mapping (with its translation flag), routed subnet and overlay route, then the transit switch.
 */
export function snapshotOps(table: ForwardingTable, transit: boolean): TableOp[] {
  const ops: TableOp[] = [];
  const routes: TableOp[] = [];
  for (const p of table.allPeers()) {
    for (const ip of p.ip4) ops.push({ op: 'map4', uid: p.uid, ip, translate: p.translate4 === ip4ToNumber(ip) });
    for (const ip of p.ip6) ops.push({ op: 'map6', uid: p.uid, ip });
    for (const cidr of p.subnets) ops.push({ op: 'subnet', uid: p.uid, cidr, remove: false });
    if (p.via !== null) routes.push({ op: 'route', uid: p.uid, via: p.via.uid });
  }
  return [...ops, ...routes, { op: 'transit', enabled: transit }];
}
