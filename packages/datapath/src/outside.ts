import { FRAME_DST_OFFSET, FRAME_HEADER_LEN, FRAME_SRC_OFFSET, UID_BYTES } from '@tincan/protocol';
import type { Counters } from './counters.js';
import { nextHop, type ForwardingTable, type Peer } from './forwarding-table.js';
import type { Link } from './link.js';
import { Segmenter, VNET_HDR_LEN, vnetHeaderValid, vnetNeedsWork } from './segmenter.js';
import { decrementIPv4Ttl, translateIPv4 } from './translator.js';
import type { Vnic } from './vnic.js';

/** Frames addressed to another node that the datapath does not forward itself go to the controller. */
export interface TransitSink {
  transit(frame: Buffer): void;
}

const MIN_IP4 = 20;
const MIN_IP6 = 40;
/** Where the inner packet's IPv4 TTL and IPv6 hop limit are, in a frame. */
const IP4_TTL = FRAME_HEADER_LEN + 8;
const IP6_HOP_LIMIT = FRAME_HEADER_LEN + 7;

/**
 * Wire → TUN. A frame from a link (full, or compact: the bare packet, see frame.ts) is delivered to the vNIC only if its source UID is the link's peer
 * and the inner packet's source address is mapped to that same peer: no member can spoof another's
 * address. Everything else is dropped and counted, per link and datapath-wide.
 *
 * With transit on (set_transit, overlay routing), two things change. A frame addressed to another
 * node is forwarded here, on the fast path, to that node's next hop (its hop limit decremented) rather
 * than handed to the controller. And a frame for this node whose source UID is another known peer
 * than the link's is accepted as relayed, with the inner source address checked against that source
 * peer instead of the link's.
 *
 * With `offload`, a compact message whose first nibble is 0 is [virtio_net_hdr][IP packet] (segmenter.ts),
 * accepted only on a link that advertised offload: the header is validated, the packet gets the same
 * checks, and both go to the vNIC as they are (the kernel segments, or completes the checksum). A
 * translated (SocialVPN IPv4) peer's super-packet is segmented / completed in software first: the
 * translator's incremental checksum update is wrong on a partial checksum.
 */
export class Outside {
  private localUid: Buffer | null = null;
  private vnic: Vnic | null = null;
  /** This node's IPv4 address as a number: the destination of translated packets. */
  private localIp4 = -1;
  private transitOn = false;
  /** --offload: segments received super-packets that must be translated; null without. */
  private readonly segmenter: Segmenter | null;

  constructor(
    private readonly table: ForwardingTable,
    private readonly sink: TransitSink,
    private readonly counters: Counters,
    offload = false,
  ) {
    this.segmenter = offload ? new Segmenter(0) : null;
  }

  attach(localUid: Buffer, vnic: Vnic, localIp4: number | null): void {
    this.localUid = localUid;
    this.vnic = vnic;
    this.localIp4 = localIp4 ?? -1;
  }

  get transit(): boolean {
    return this.transitOn;
  }

  setTransit(enabled: boolean): void {
    this.transitOn = enabled;
  }

  readonly onFrame = (link: Link, frame: Buffer): void => {
    const local = this.localUid;
    const vnic = this.vnic;
    const peer = this.table.peer(link.uid);
    if (frame.length < FRAME_HEADER_LEN + MIN_IP4 || local === null || vnic === null || peer === undefined) {
      this.malformed(link);
      return;
    }
    const fromPeer = frame.compare(peer.uidBytes, 0, UID_BYTES, FRAME_SRC_OFFSET, FRAME_SRC_OFFSET + UID_BYTES) === 0;
    const forUs = frame.compare(local, 0, UID_BYTES, FRAME_DST_OFFSET, FRAME_DST_OFFSET + UID_BYTES) === 0;
    let src: Peer | undefined = peer;
    if (!this.transitOn) {
      if (!fromPeer) {
        link.counters.dropsSpoofed++;
        this.counters.framesSpoofedUid++;
        return;
      }
      if (!forUs) {
        this.counters.framesTransitToController++;
        this.sink.transit(frame);
        return;
      }
    } else if (!forUs) {
      this.forward(link, frame, local);
      return;
    } else if (!fromPeer) {
      src = this.table.lookupUid(frame, FRAME_SRC_OFFSET);
      if (src === undefined) {
        link.counters.dropsSpoofed++;
        this.counters.framesSpoofedUid++;
        return;
      }
    }
    this.deliver(link, frame, FRAME_HEADER_LEN, src, peer, vnic, false);
  };

  /**
   * A compact frame (frame.ts): the bare IP packet, whose source is by construction the link's peer
   * and destination this node. It gets exactly the checks of a full frame from the peer to us.
   */
  readonly onCompactFrame = (link: Link, packet: Buffer): void => {
    const vnic = this.vnic;
    const peer = this.table.peer(link.uid);
    if (packet.length < MIN_IP4 || this.localUid === null || vnic === null || peer === undefined) {
      this.malformed(link);
      return;
    }
    if (packet[0]! >> 4 === 0) this.deliverVnet(link, packet, peer, vnic);
    else this.deliver(link, packet, 0, peer, peer, vnic, false);
  };

  /** --offload: a [virtio_net_hdr][IP packet] compact message from the link's peer. */
  private deliverVnet(link: Link, msg: Buffer, peer: Peer, vnic: Vnic): void {
    const segmenter = this.segmenter;
    if (segmenter === null || !link.takesOffload || !vnetHeaderValid(msg, 0, VNET_HDR_LEN, msg.length - VNET_HDR_LEN)) {
      this.malformed(link);
      return;
    }
    this.counters.offloadSuperPacketsIn++;
    if (peer.translate4 !== null && msg[VNET_HDR_LEN]! >> 4 === 4 && vnetNeedsWork(msg, 0)) {
      const count = segmenter.process(msg, 0, VNET_HDR_LEN, msg.length - VNET_HDR_LEN);
      this.counters.offloadSegmentedIn++;
      for (let i = 0; i < count; i++) {
        const off = segmenter.offsets[i]!;
        this.deliver(link, segmenter.buffer.subarray(off, off + segmenter.lengths[i]!), 0, peer, peer, vnic, false);
      }
      return;
    }
    this.deliver(link, msg, VNET_HDR_LEN, peer, peer, vnic, true);
  }

  /**
   * The checks shared by full and compact frames, then the vNIC: the IP packet at `off` in `buf` came
   * from peer `src` (the link's `peer`, or a peer it relays for) to this node. Its inner source address
   * must belong to `src` (after SocialVPN translation for a translated peer); else it is dropped.
   * `vnet`: a virtio_net_hdr precedes the packet, and goes to the vNIC with it.
   */
  private deliver(link: Link, buf: Buffer, off: number, src: Peer, peer: Peer, vnic: Vnic, vnet: boolean): void {
    const version = buf[off]! >> 4;
    let owner;
    if (version === 4 && src.translate4 !== null) {
      // SocialVPN: the peer uses its own subnet; rewrite the packet into ours. Rewriting the source
      // to the peer's mapped address also means it cannot claim anyone else's.
      if (this.localIp4 < 0 || !translateIPv4(buf, off, buf.length - off, src.translate4, this.localIp4)) {
        this.malformed(link);
        return;
      }
      owner = src;
    } else if (version === 4) owner = this.table.lookup4(buf, off + 12);
    else if (version === 6 && buf.length >= off + MIN_IP6) {
      owner = this.table.lookup6(buf, off + 8);
    } else {
      this.malformed(link);
      return;
    }
    if (owner !== src) {
      link.counters.dropsSpoofed++;
      this.counters.framesSpoofedAddress++;
      return;
    }
    if (src !== peer) this.counters.framesRelayedIn++;
    if (vnet) vnic.writeVnet(buf, off - VNET_HDR_LEN);
    else vnic.write(buf, off);
  }

  /** Transit on, a frame for another node: on to its next hop, hop limit decremented. */
  private forward(link: Link, frame: Buffer, local: Buffer): void {
    if (frame.compare(local, 0, UID_BYTES, FRAME_SRC_OFFSET, FRAME_SRC_OFFSET + UID_BYTES) === 0) {
      this.counters.framesRouteLoop++; // one of our own frames came back
      return;
    }
    const version = frame[FRAME_HEADER_LEN]! >> 4;
    if (!(version === 4 || (version === 6 && frame.length >= FRAME_HEADER_LEN + MIN_IP6))) {
      this.malformed(link);
      return;
    }
    const dst = this.table.lookupUid(frame, FRAME_DST_OFFSET);
    const hop = dst === undefined ? null : nextHop(dst);
    if (hop === null) {
      this.counters.framesTransitToController++;
      this.sink.transit(frame);
      return;
    }
    if (hop === link) {
      this.counters.framesRouteLoop++;
      return;
    }
    if (version === 4) {
      if (frame[IP4_TTL]! <= 1) {
        this.counters.framesHopLimit++;
        return;
      }
      decrementIPv4Ttl(frame, FRAME_HEADER_LEN);
    } else {
      const hopLimit = frame[IP6_HOP_LIMIT]!;
      if (hopLimit <= 1) {
        this.counters.framesHopLimit++;
        return;
      }
      frame[IP6_HOP_LIMIT] = hopLimit - 1;
    }
    // An up link that refuses the frame dropped it by back-pressure (counted by that link).
    if (hop.send(frame)) this.counters.framesForwarded++;
  }

  private malformed(link: Link): void {
    link.counters.dropsMalformed++;
    this.counters.framesMalformed++;
  }
}
