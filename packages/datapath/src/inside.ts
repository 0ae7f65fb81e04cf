import { FRAME_HEADER_LEN, UID_BYTES, writeFrameHeader } from '@tincan/protocol';
import type { PacketBatch } from '@tincan/tun';
import type { Counters } from './counters.js';
import { nextHop, type ForwardingTable } from './forwarding-table.js';
import type { SealedFrames } from './sealing.js';
import { Segmenter, VNET_HDR_LEN, vnetNeedsWork } from './segmenter.js';

/** Where packets go that the forwarding table cannot send on a link (the controller, if any). */
export interface UnmappedSink {
  /** `frame` is [src UID][dst UID, zero if unknown][IP packet]; the callee copies what it keeps. */
  unmapped(frame: Buffer): void;
}

const ZERO_UID = Buffer.alloc(UID_BYTES);

/**
 * TUN → wire. For each packet read from the vNIC: find the destination's peer by its virtual address
 * (or, in router mode, the subnet it lies in) and send it on the peer's next hop: its direct link when
 * up, else its overlay route's link. On the peer's own direct link, when the peer takes compact frames,
 * the packet goes as it is (frame.ts); otherwise the frame header is written into the headroom in
 * front of the packet. A packet for a peer reached through a relay (its route's link) is sealed for that
 * peer (sealing.ts), or dropped and counted when the peer has no trusted certificate: relays never see
 * plaintext. Without `sealed` (a lane process) such packets go to the sink, and the primary seals them.
 * Packets with no mapping or no usable link go to the controller (paper §4.1: "unmapped IP
 * packets are forwarded to the controller"). Nothing here logs per packet, nor allocates but the
 * sealing's cipher objects.
 *
 * With `offload` (a vNIC opened with IFF_VNET_HDR, segmenter.ts), each packet has its virtio_net_hdr
 * just before it. One that needs no work is an ordinary packet. A super-packet (GSO, or a partial
 * checksum) goes as it is, header in front, only on the destination's own direct link to a peer that
 * took offload; anywhere else it is segmented / completed in software first and each result goes the
 * ordinary way.
 */
export class Inside {
  private localUid: Buffer | null = null;
  /** --offload: where super-packets are cut when they cannot go as they are; null without. */
  private readonly segmenter: Segmenter | null;

  constructor(
    private readonly table: ForwardingTable,
    private readonly sink: UnmappedSink,
    private readonly counters: Counters,
    offload = false,
    private readonly sealed: SealedFrames | null = null,
  ) {
    this.segmenter = offload ? new Segmenter(FRAME_HEADER_LEN) : null;
  }

  setLocalUid(uid: Buffer): void {
    this.localUid = uid;
  }

  /** A batch read from the vNIC (with --offload, each packet has its virtio_net_hdr before it). */
  readonly onPackets = (batch: PacketBatch): void => {
    this.process(batch, this.segmenter);
  };

  /**
   * A batch of plain packets, with no virtio_net_hdr before them whatever --offload says: a lane's
   * fallback (lanes/), which the lane has already segmented.
   */
  readonly onPlainPackets = (batch: PacketBatch): void => {
    this.process(batch, null);
  };

  private process(batch: PacketBatch, segmenter: Segmenter | null): void {
    const buf = batch.buffer;
    const local = this.localUid;
    for (let i = 0; i < batch.count; i++) {
      const off = batch.offsets[i]!;
      const len = batch.lengths[i]!;
      this.counters.tunPacketsIn++;
      if (local === null) continue;
      if (segmenter === null || !vnetNeedsWork(buf, off - VNET_HDR_LEN)) {
        this.route(buf, off, len, local, false);
        continue;
      }
      if (this.route(buf, off, len, local, true)) continue;
      const count = segmenter.process(buf, off - VNET_HDR_LEN, off, len);
      if (count === 0) {
        this.counters.tunMalformed++;
        continue;
      }
      this.counters.offloadSegmentedOut++;
      for (let s = 0; s < count; s++) this.route(segmenter.buffer, segmenter.offsets[s]!, segmenter.lengths[s]!, local, false);
    }
  }

  /**
   * One packet at `off` (`len` bytes, FRAME_HEADER_LEN bytes of headroom) to its next hop or the
   * controller. `superPacket`: it has a virtio_net_hdr before it that needs work; it is sent, as it is,
   * only on an offload link (true), else nothing is done (false: segment it and come back per segment).
   */
  private route(buf: Buffer, off: number, len: number, local: Buffer, superPacket: boolean): boolean {
    const version = len > 0 ? buf[off]! >> 4 : 0;
    let peer;
    if (version === 4 && len >= 20) {
      if (buf[off + 16]! >= 224) { // multicast and broadcast: no peer owns them
        this.counters.tunMulticastDropped++;
        return true;
      }
      peer = this.table.lookup4(buf, off + 16);
    } else if (version === 6 && len >= 40) {
      if (buf[off + 24] === 0xff) {
        this.counters.tunMulticastDropped++;
        return true;
      }
      peer = this.table.lookup6(buf, off + 24);
    } else {
      this.counters.tunMalformed++;
      return true;
    }
    const hop = peer === undefined ? null : nextHop(peer);
    if (superPacket) {
      // [virtio_net_hdr][packet] as it is, on the destination's own link to a peer that takes it.
      if (hop === null || hop !== peer!.link || !hop.sendsOffload) return false;
      if (hop.sendCompact(buf.subarray(off - VNET_HDR_LEN, off + len))) this.counters.offloadSuperPacketsOut++;
      return true;
    }
    if (peer !== undefined) {
      if (hop !== null && hop === peer.link && hop.sendsCompact) {
        // The destination's own direct link, to a peer that takes compact frames: the bare packet
        // (source and destination are the link's two ends). A refused one is dropped, as below.
        hop.sendCompact(buf.subarray(off, off + len));
        return true;
      }
      if (hop !== null && hop === peer.link) {
        // An up link that refuses the frame dropped it by back-pressure (counted by the link).
        hop.send(frameAt(buf, off, len, local, peer.uidBytes));
        return true;
      }
      if (hop !== null) {
        // Through the route's relay: sealed end to end (null: no trusted key, counted).
        const sealed = this.sealed;
        if (sealed === null) {
          this.sink.unmapped(frameAt(buf, off, len, local, peer.uidBytes)); // a lane: the primary seals
          return true;
        }
        const frame = sealed.seal(buf, off, len, peer);
        if (frame !== null && hop.send(frame)) peer.routePacketsOut++;
        return true;
      }
    }
    const frame = frameAt(buf, off, len, local, peer ? peer.uidBytes : ZERO_UID);
    this.sink.unmapped(frame);
    return true;
  }
}

/** Writes the frame header into the headroom in front of the packet at `off`; the whole frame. */
function frameAt(buf: Buffer, off: number, len: number, src: Buffer, dst: Buffer): Buffer {
  writeFrameHeader(buf, off - FRAME_HEADER_LEN, src, dst);
  return buf.subarray(off - FRAME_HEADER_LEN, off + len);
}
