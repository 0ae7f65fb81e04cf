import { createSocket, type Socket } from 'node:dgram';
import { isIPv4 } from 'node:net';
import type { Logger } from 'pino';
import {
  CONTROLLER_PORT,
  ip6FromUid,
  ip6ToBytes,
  parseControllerMessage,
  type ControllerMessage,
  type Uid,
} from '@tincan/protocol';
import { channelMac, verifyChannelMac } from './channel-auth.js';
import type { Clock, TimerHandle } from './clock.js';
import { InputGuard } from './input-guard.js';
import { LogLimiter } from './rate-limit.js';

export interface ControllerChannelOptions {
  /** This node's UID: the channel listens on the IPv6 vNIC address derived from it. */
  uid: Uid;
  /** The vNIC MTU: a datagram larger than it leaves in several IPv6 fragments (packets). */
  mtu: number;
  port?: number;
  /**
   * Where this channel binds and where a neighbour's controller is (default: the IPv6 vNIC addresses
   * derived from the UIDs). Tests put controllers on loopback addresses instead.
   */
  address?: string;
  addressOf?(uid: Uid): string;
  /**
   * The key this node shares with `peer` (channel-auth.ts), or null while it is not known: then
   * messages to and from that peer go unauthenticated if `allowUnauthenticated`, else not at all.
   */
  channelKey(peer: Uid): Buffer | null;
  allowUnauthenticated: boolean;
  clock: Clock;
  log: Logger;
  /** A validated, authenticated message whose `from` matches the address it came from. */
  onMessage(msg: ControllerMessage): void;
}

export interface ControllerChannelCounters {
  messages_received: number;
  /** Not JSON, or refused by the schema (bad subnets, UIDs, sizes, …). */
  messages_malformed: number;
  /** `from` is not the UID the source address belongs to. */
  messages_wrong_sender: number;
  /** From a peer whose key we know, without a valid MAC. */
  messages_bad_mac: number;
  /** From a peer whose key we do not know, while unauthenticated messages are refused. */
  messages_no_key: number;
  /** Accepted without a MAC (the peer's key is unknown, and the config allows it). */
  messages_unauthenticated: number;
  /** A handler threw on the message (a bug): dropped. */
  messages_handler_failed: number;
  /** Not sent: no key for the peer and unauthenticated messages refused. */
  send_no_key: number;
  send_errors: number;
  bind_in_use: number;
}

/**
 * Controller-to-controller datagrams over the overlay itself: a UDP socket on this node's IPv6 vNIC
 * address, port 5802; a neighbour's controller is at the address derived from its UID, so the
 * messages travel through the TinCan links like any application traffic. The socket is bound without
 * SO_REUSEADDR (no other local user can bind the same port while the controller runs). A datagram is
 * accepted only if it parses (zod), its `from` UID is the one its source address is derived from, and
 * its MAC verifies under the key this node shares with the sender; every refusal is counted.
 */
export class ControllerChannel {
  readonly address: string;
  readonly counters: ControllerChannelCounters = {
    messages_received: 0, messages_malformed: 0, messages_wrong_sender: 0, messages_bad_mac: 0, messages_no_key: 0,
    messages_unauthenticated: 0, messages_handler_failed: 0, send_no_key: 0, send_errors: 0, bind_in_use: 0,
  };
  private socket: Socket | null = null;
  private retry: TimerHandle | null = null;
  private closed = false;
  private readonly port: number;
  private readonly guard: InputGuard;
  private readonly warn: LogLimiter;
  /** Packets sent to and received from each neighbour's controller (fragments counted). */
  private readonly packets = new Map<Uid, number>();

  constructor(private readonly opts: ControllerChannelOptions) {
    this.address = opts.address ?? ip6FromUid(opts.uid);
    this.port = opts.port ?? CONTROLLER_PORT;
    this.guard = new InputGuard(opts.log, opts.clock);
    this.warn = new LogLimiter(opts.clock, 60_000, 16);
  }

  get bound(): boolean {
    return this.socket !== null;
  }

  /**
   * Binds to the vNIC address, retrying while the address is not there yet (the datapath adds it with
   * set_local_ip and the kernel holds it back until duplicate address detection ends) or after the
   * datapath restarted. Returns at once; messages flow when the bind succeeds.
   */
  open(): void {
    if (this.closed || this.socket || this.retry !== null) return;
    const s = createSocket({ type: isIPv4(this.address) ? 'udp4' : 'udp6' });
    const fail = (err: NodeJS.ErrnoException): void => {
      s.removeAllListeners();
      s.close();
      if (this.closed) return;
      if (err.code === 'EADDRINUSE') {
        // Another controller of this node, or another local user, holds the port.
        this.counters.bind_in_use++;
        if (this.warn.allow('in use').ok) this.opts.log.warn({ address: `[${this.address}]:${this.port}` }, 'controller channel: the port is in use by another process; retrying');
      } else {
        this.opts.log.debug({ err: err.message }, 'controller channel: cannot bind yet');
      }
      this.retry = this.opts.clock.setTimeout(() => {
        this.retry = null;
        this.open();
      }, 500);
    };
    s.once('error', fail);
    s.bind(this.port, this.address, () => {
      s.removeListener('error', fail);
      if (this.closed) {
        s.close();
        return;
      }
      this.socket = s;
      s.on('error', (err) => this.opts.log.warn({ err: err.message }, 'controller channel error'));
      s.on('message', (buf, rinfo) => this.guard.run('controller datagram', () => this.onDatagram(buf, rinfo.address)));
      this.opts.log.info({ address: `[${this.address}]:${this.port}` }, 'controller channel open');
    });
  }

  /** Sends one message to a neighbour's controller (dropped, counted, if it cannot go). */
  send(to: Uid, msg: ControllerMessage): void {
    const s = this.socket;
    if (!s) {
      this.counters.send_errors++;
      return;
    }
    const key = this.opts.channelKey(to);
    if (key === null && !this.opts.allowUnauthenticated) {
      this.counters.send_no_key++;
      return;
    }
    let buf: Buffer;
    try {
      buf = Buffer.from(JSON.stringify(key === null ? msg : { ...msg, mac: channelMac(key, this.opts.uid, to, msg) }));
    } catch (err) {
      this.counters.send_errors++; // a message our own schema refuses: a bug, never sent
      if (this.warn.allow('unsendable').ok) this.opts.log.error({ err: String(err) }, 'controller channel: cannot encode a message');
      return;
    }
    this.count(to, buf.length);
    s.send(buf, this.port, this.peerAddress(to), (err) => {
      if (err) this.counters.send_errors++;
    });
  }

  /** Packets this channel exchanged with `uid`'s controller so far. */
  packetsWith(uid: Uid): number {
    return this.packets.get(uid) ?? 0;
  }

  /** Forgets a neighbour's packet count (its link closed; a new link starts from zero). */
  forget(uid: Uid): void {
    this.packets.delete(uid);
  }

  /** Handler failures by kind (the status file). */
  get failures(): Readonly<Record<string, number>> {
    return this.guard.counts;
  }

  private count(uid: Uid, payload: number): void {
    // IPv6 (40) + UDP (8) headers; beyond the MTU the kernel sends fragments of (MTU - 48) bytes.
    const fragments = payload + 48 <= this.opts.mtu ? 1 : Math.ceil((payload + 8) / ((this.opts.mtu - 48) & ~7));
    this.packets.set(uid, (this.packets.get(uid) ?? 0) + fragments);
  }

  close(): void {
    this.closed = true;
    if (this.retry !== null) this.opts.clock.clearTimeout(this.retry);
    this.retry = null;
    this.socket?.close();
    this.socket = null;
  }

  private peerAddress(uid: Uid): string {
    return this.opts.addressOf?.(uid) ?? ip6FromUid(uid);
  }

  private onDatagram(buf: Buffer, from: string): void {
    const parsed = parseControllerMessage(buf);
    if (!parsed.ok) {
      this.counters.messages_malformed++;
      return;
    }
    const msg = parsed.msg;
    if (!sameAddress(this.peerAddress(msg.from), from)) {
      this.counters.messages_wrong_sender++;
      return;
    }
    const key = this.opts.channelKey(msg.from);
    if (key !== null) {
      if (!verifyChannelMac(key, msg.from, this.opts.uid, msg)) {
        this.counters.messages_bad_mac++;
        return;
      }
    } else if (this.opts.allowUnauthenticated) {
      this.counters.messages_unauthenticated++;
    } else {
      this.counters.messages_no_key++;
      return;
    }
    this.counters.messages_received++;
    this.count(msg.from, buf.length);
    try {
      this.opts.onMessage(msg);
    } catch (err) {
      this.counters.messages_handler_failed++;
      throw err; // the guard logs it
    }
  }
}

function sameAddress(a: string, b: string): boolean {
  if (isIPv4(a) || isIPv4(b)) return a === b;
  try {
    return ip6ToBytes(a).equals(ip6ToBytes(b));
  } catch {
    return false;
  }
}
