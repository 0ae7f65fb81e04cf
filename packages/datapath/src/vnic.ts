import { TunDevice, type PacketBatch } from '@tincan/tun';
import { FRAME_HEADER_LEN } from '@tincan/protocol';

export interface VnicConfig {
  name: string;
  mtu: number;
  /** Packets the kernel queues for us to read (the TUN's txqueuelen); undefined: the kernel's 500. */
  queueLen?: number | undefined;
  ip4?: string | undefined;
  ip6?: string | undefined;
  /** Open the TUN with IFF_MULTI_QUEUE (`--lanes` > 1): lane processes attach more queues to it. */
  multiQueue?: boolean | undefined;
}

/**
 * The virtual NIC: a TUN device read in batches (each packet with FRAME_HEADER_LEN bytes of headroom,
 * so the frame header is written in place) and written in batches once per event-loop turn.
 */
export class Vnic {
  private readonly pending: Buffer[] = [];
  private flushScheduled = false;
  /** Packets the kernel refused (queue full): counted, never retried. */
  writeDrops = 0;

  private constructor(
    private readonly tun: TunDevice,
    readonly config: VnicConfig,
  ) {}

  static async open(config: VnicConfig): Promise<Vnic> {
    const tun = TunDevice.open({
      name: config.name, headroom: FRAME_HEADER_LEN, slotSize: Math.max(config.mtu, 1500), multiQueue: config.multiQueue === true,
    });
    try {
      await tun.setMtu(config.mtu);
      if (config.queueLen !== undefined) await tun.setTxQueueLen(config.queueLen);
      if (config.ip4) await tun.addAddress(config.ip4);
      if (config.ip6) await tun.addAddress(config.ip6);
      await tun.setUp();
    } catch (err) {
      tun.close();
      throw err;
    }
    return new Vnic(tun, config);
  }

  /**
   * Lanes: one more queue of a multi-queue vNIC that the primary datapath has opened and configured
   * (addresses, MTU, up); the kernel spreads flows over the queues by flow hash.
   */
  static attachQueue(config: VnicConfig): Vnic {
    const tun = TunDevice.open({ name: config.name, headroom: FRAME_HEADER_LEN, slotSize: Math.max(config.mtu, 1500), multiQueue: true });
    return new Vnic(tun, config);
  }

  get name(): string {
    return this.tun.name;
  }

  /** Routes a remote subnet (router mode) into the vNIC; idempotent. */
  addRoute(cidr: string): Promise<void> {
    return this.tun.replaceRoute(cidr);
  }

  /** Removes a route added with addRoute; false if the kernel had none. */
  removeRoute(cidr: string): Promise<boolean> {
    return this.tun.removeRoute(cidr);
  }

  onPackets(cb: (batch: PacketBatch) => void): void {
    this.tun.onPackets(cb);
  }

  onError(cb: (err: Error) => void): void {
    this.tun.onError(cb);
  }

  /** Queues one IP packet for the kernel; all queued packets go down in one native call per turn. */
  write(packet: Buffer): void {
    this.pending.push(packet);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    const n = this.pending.length;
    if (n === 0) return;
    const written = this.tun.writeBatch(this.pending, n);
    if (written < n) this.writeDrops += n - written;
    this.pending.length = 0;
  };

  close(): void {
    this.pending.length = 0;
    this.tun.close();
  }
}
