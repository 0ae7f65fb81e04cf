import {
  FRAME_DST_OFFSET, FRAME_HEADER_LEN, FRAME_SRC_OFFSET, SEALED_FRAME_TYPE, SEALED_HEADER_LEN, SEALED_HOP_OFFSET, SEALED_TAG_LEN,
  SEALED_TYPE_OFFSET, UID_BYTES,
} from '@tincan/protocol';
import type { Counters } from './counters.js';
import { nextHop, type ForwardingTable, type Peer } from './forwarding-table.js';
import type { Link } from './link.js';
import type { SealedFrames } from './sealing.js';
import { Segmenter, VNET_HDR_LEN, vnetHeaderValid, vnetNeedsWork } from './segmenter.js';
import { translateIPv4 } from './translator.js';
import type { Vnic } from './vnic.js';

/** Frames addressed to another node that the datapath does not forward itself go to the controller. */
export interface TransitSink {
  transit(frame: Buffer): void;
}

/** Debug (`tincan-datapath --debug-dump-forwarded`): sees every frame this node forwards for others, as sent. */
export interface ForwardTap {
  forwarded(frame: Buffer): void;
}

const MIN_IP4 = 20;
const MIN_IP6 = 40;

/**
 * Wire → TUN. A frame from a link (full, or compact: the bare packet, see frame.ts) is delivered to the vNIC only if its source UID is the link's peer
 * and the inner packet's source address is mapped to that same peer: no member can spoof another's
 * address. Everything else is dropped and counted, per link and datapath-wide.
 *
 * A plaintext frame must come from the link's own peer, transit on or off. Frames that cross a relay
 * are sealed by their source for their destination (sealing.ts, docs/security.md). With transit on
 * (set_transit, overlay routing), a sealed frame addressed to another node is forwarded here, on the
 * fast path and unopened, to that node's next hop (its outer hop limit decremented) rather than handed
 * to the controller; a plaintext one is dropped. A sealed frame for this node is opened (its source's
 * trusted key, replay window), and its packet's source address checked against the sealed source.
 * Without `sealed` (a lane process) sealed frames for this node go to the sink: the primary opens
 * them, so that each source's replay window lives in one process.
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
    private readonly sealed: SealedFrames | null = null,
    private readonly tap: ForwardTap | null = null,
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
    const sealed = frame[SEALED_TYPE_OFFSET] === SEALED_FRAME_TYPE;
    const fromPeer = frame.compare(peer.uidBytes, 0, UID_BYTES, FRAME_SRC_OFFSET, FRAME_SRC_OFFSET + UID_BYTES) === 0;
    if (!sealed && !fromPeer) {
      this.spoofedUid(link); // plaintext from anyone but the link's peer: never, transit on or off
      return;
    }
    const forUs = frame.compare(local, 0, UID_BYTES, FRAME_DST_OFFSET, FRAME_DST_OFFSET + UID_BYTES) === 0;
    if (!forUs) {
      this.transitFrame(frame, sealed, link);
      return;
    }
    if (!sealed) this.deliver(link, frame, FRAME_HEADER_LEN, peer, peer, vnic, false);
    else if (!fromPeer && !this.transitOn) this.spoofedUid(link); // relayed to us: only with transit on
    else this.openSealed(frame, link, peer, vnic);
  };

  /**
   * A full frame that a lane process received on a lane link and handed over (lanes/): a sealed frame
   * for this node (lanes do not open them), or one for another node the lane had no next hop for. The
   * lane has made the link checks; the rest is as for a frame from a primary link.
   */
  readonly fromLane = (frame: Buffer): void => {
    const local = this.localUid;
    const vnic = this.vnic;
    if (frame.length < FRAME_HEADER_LEN + MIN_IP4 || local === null || vnic === null) {
      this.malformed(null);
      return;
    }
    const sealed = frame[SEALED_TYPE_OFFSET] === SEALED_FRAME_TYPE;
    if (frame.compare(local, 0, UID_BYTES, FRAME_DST_OFFSET, FRAME_DST_OFFSET + UID_BYTES) !== 0) this.transitFrame(frame, sealed, null);
    else if (sealed) this.openSealed(frame, null, null, vnic);
    else this.malformed(null);
  };

  /** A frame for another node from `link` (null: a lane's): forwarded (transit on), or to the controller. */
  private transitFrame(frame: Buffer, sealed: boolean, link: Link | null): void {
    if (!this.transitOn) {
      this.counters.framesTransitToController++;
      this.sink.transit(frame);
    } else if (!sealed) {
      this.counters.framesTransitUnsealed++; // relayed plaintext: its destination would drop it
    } else if (!this.relay(frame, link)) {
      this.counters.framesTransitToController++;
      this.sink.transit(frame);
    }
  }

  /** A sealed frame for this node: opened with its source's key, then the checks every packet gets. */
  private openSealed(frame: Buffer, link: Link | null, peer: Peer | null, vnic: Vnic): void {
    const sealed = this.sealed;
    if (sealed === null) {
      this.sink.transit(frame); // a lane: the primary opens it
      return;
    }
    const src = this.table.lookupUid(frame, FRAME_SRC_OFFSET);
    if (src === undefined) {
      this.spoofedUid(link);
      return;
    }
    const packet = sealed.open(frame, src); // null: counted there
    if (packet === null) return;
    if (packet.length < MIN_IP4) this.malformed(link);
    else this.deliver(link, packet, 0, src, peer, vnic, false);
  }

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
  private deliver(link: Link | null, buf: Buffer, off: number, src: Peer, peer: Peer | null, vnic: Vnic, vnet: boolean): void {
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
      if (link !== null) link.counters.dropsSpoofed++;
      this.counters.framesSpoofedAddress++;
      return;
    }
    if (src !== peer) this.counters.framesRelayedIn++;
    if (vnet) vnic.writeVnet(buf, off - VNET_HDR_LEN);
    else vnic.write(buf, off);
  }

  /**
   * Transit: a sealed frame for another node (from `link`, or null: a lane or the controller handed it
   * over) on to its next hop, unopened, its outer hop limit decremented. False when there is no usable
   * next hop (the caller decides what then); true when it was sent or dropped (counted).
   */
  relay(frame: Buffer, link: Link | null): boolean {
    const local = this.localUid;
    if (frame.length < SEALED_HEADER_LEN + SEALED_TAG_LEN || local === null) {
      this.malformed(link);
      return true;
    }
    if (frame.compare(local, 0, UID_BYTES, FRAME_SRC_OFFSET, FRAME_SRC_OFFSET + UID_BYTES) === 0) {
      this.counters.framesRouteLoop++; // one of our own frames came back
      return true;
    }
    const dst = this.table.lookupUid(frame, FRAME_DST_OFFSET);
    const hop = dst === undefined ? null : nextHop(dst);
    if (hop === null) return false;
    if (hop === link || this.table.lookupUid(frame, FRAME_SRC_OFFSET)?.link === hop) {
      this.counters.framesRouteLoop++; // back where it came from
      return true;
    }
    const hopLimit = frame[SEALED_HOP_OFFSET]!;
    if (hopLimit <= 1) {
      this.counters.framesHopLimit++;
      return true;
    }
    frame[SEALED_HOP_OFFSET] = hopLimit - 1;
    this.tap?.forwarded(frame);
    // An up link that refuses the frame dropped it by back-pressure (counted by that link).
    if (hop.send(frame)) this.counters.framesForwarded++;
    return true;
  }

  private spoofedUid(link: Link | null): void {
    if (link !== null) link.counters.dropsSpoofed++;
    this.counters.framesSpoofedUid++;
  }

  private malformed(link: Link | null): void {
    if (link !== null) link.counters.dropsMalformed++;
    this.counters.framesMalformed++;
  }
}
