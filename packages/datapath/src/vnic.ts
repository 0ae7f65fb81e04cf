import { TunDevice, type PacketBatch, type TunOptions } from '@tincan/tun';
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
  /**
   * `--offload`: open the TUN with IFF_VNET_HDR and TSO (every queue alike); packets read may be
   * TCP super-packets of up to OFFLOAD_GSO_MAX_SIZE bytes with their virtio_net_hdr before them.
   */
  offload?: boolean | undefined;
}

/**
 * --offload: the largest super-packet the kernel hands the vNIC (gso_max_size). It is also what one
 * lost SCTP fragment loses on the unreliable channel, so it stays well under the 64 KiB maximum.
 */
export const OFFLOAD_GSO_MAX_SIZE = 32768;

/** The TUN options of a vNIC queue: FRAME_HEADER_LEN of headroom (the virtio_net_hdr fits in it). */
function tunOptions(config: VnicConfig, multiQueue: boolean): TunOptions {
  const offload = config.offload === true;
  // a super-packet is up to gso_max_size (OFFLOAD_GSO_MAX_SIZE) bytes: the largest slot, so none is cut
  return { name: config.name, headroom: FRAME_HEADER_LEN, slotSize: offload ? 65535 : Math.max(config.mtu, 1500), multiQueue, offload };
}

/**
 * The virtual NIC: a TUN device read in batches (each packet with FRAME_HEADER_LEN bytes of headroom,
 * so the frame header is written in place) and written one packet at a time, as each arrives.
 */
export class Vnic {
  /** Packets the kernel refused (queue full), or that arrived after close: counted, never retried. */
  writeDrops = 0;

  private constructor(
    private readonly tun: TunDevice,
    readonly config: VnicConfig,
  ) {}

  static async open(config: VnicConfig): Promise<Vnic> {
    const tun = TunDevice.open(tunOptions(config, config.multiQueue === true));
    try {
      await tun.setMtu(config.mtu);
      if (config.offload === true) await tun.setGsoMaxSize(OFFLOAD_GSO_MAX_SIZE);
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
    const tun = TunDevice.open(tunOptions(config, true));
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

  /**
   * Writes one IP packet, `buf` from `offset` to its end, to the kernel at once (in the callback that
   * delivered it). A TUN takes one packet per write(2), so the batched write on the next event-loop
   * turn this replaced saved only JavaScript-to-native calls, and it cost every packet of an idle link
   * that turn of the loop: ~0.05–0.1 ms of round-trip time on the rtt bench (docs/bench/analysis/rtt.md).
   */
  write(buf: Buffer, offset = 0): void {
    if (this.tun.closed || !this.tun.write(buf, offset, buf.length - offset)) this.writeDrops++;
  }

  /** --offload: writes [virtio_net_hdr][IP packet], `buf` from `offset` to its end, as it is (see write). */
  writeVnet(buf: Buffer, offset: number): void {
    if (this.tun.closed || !this.tun.writeVnet(buf, offset, buf.length - offset)) this.writeDrops++;
  }

  close(): void {
    this.tun.close();
  }
}
