import { createSocket, type Socket } from 'node:dgram';
import type { Logger } from 'pino';
import {
  CONTROLLER_PORT,
  ip6FromUid,
  ip6ToBytes,
  parseControllerMessage,
  type ControllerMessage,
  type Uid,
} from '@tincan/protocol';
import type { Clock, TimerHandle } from './clock.js';

export interface ControllerChannelOptions {
  /** This node's UID: the channel listens on the IPv6 vNIC address derived from it. */
  uid: Uid;
  /** The vNIC MTU: a datagram larger than it leaves in several IPv6 fragments (packets). */
  mtu: number;
  port?: number;
  clock: Clock;
  log: Logger;
  /** A validated message whose `from` matches the address it came from. */
  onMessage(msg: ControllerMessage): void;
}

/**
 * Controller-to-controller datagrams over the overlay itself (issue 6): a UDP socket on this node's
 * IPv6 vNIC address, port 5802; a neighbour's controller is at the address derived from its UID, so
 * the messages travel through the TinCan links like any application traffic. A datagram is accepted
 * only if it parses (zod) and its `from` UID is the one its source address is derived from (the
 * datapath already refuses frames whose inner source does not belong to the sending peer).
 */
export class ControllerChannel {
  readonly address: string;
  readonly counters = { messages_received: 0, messages_malformed: 0, messages_wrong_sender: 0, send_errors: 0 };
  private socket: Socket | null = null;
  private retry: TimerHandle | null = null;
  private closed = false;
  private readonly port: number;
  /** Packets sent to and received from each neighbour's controller (fragments counted). */
  private readonly packets = new Map<Uid, number>();

  constructor(private readonly opts: ControllerChannelOptions) {
    this.address = ip6FromUid(opts.uid);
    this.port = opts.port ?? CONTROLLER_PORT;
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
    const s = createSocket({ type: 'udp6', reuseAddr: true });
    const fail = (err: Error): void => {
      s.removeAllListeners();
      s.close();
      if (this.closed) return;
      this.opts.log.debug({ err: err.message }, 'controller channel: cannot bind yet');
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
      s.on('message', (buf, rinfo) => this.onDatagram(buf, rinfo.address));
      this.opts.log.info({ address: `[${this.address}]:${this.port}` }, 'controller channel open');
    });
  }

  /** Sends one message to a neighbour's controller (dropped, counted, if the channel is not bound). */
  send(to: Uid, msg: ControllerMessage): void {
    const s = this.socket;
    if (!s) {
      this.counters.send_errors++;
      return;
    }
    const buf = Buffer.from(JSON.stringify(msg));
    this.count(to, buf.length);
    s.send(buf, this.port, ip6FromUid(to), (err) => {
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

  private onDatagram(buf: Buffer, from: string): void {
    const parsed = parseControllerMessage(buf);
    if (!parsed.ok) {
      this.counters.messages_malformed++;
      return;
    }
    if (!sameIp6(ip6FromUid(parsed.msg.from), from)) {
      this.counters.messages_wrong_sender++;
      return;
    }
    this.counters.messages_received++;
    this.count(parsed.msg.from, buf.length);
    this.opts.onMessage(parsed.msg);
  }
}

function sameIp6(a: string, b: string): boolean {
  try {
    return ip6ToBytes(a).equals(ip6ToBytes(b));
  } catch {
    return false;
  }
}
