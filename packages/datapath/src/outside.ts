import { FRAME_DST_OFFSET, FRAME_HEADER_LEN, UID_BYTES } from '@tincan/protocol';
import type { Counters } from './counters.js';
import type { ForwardingTable } from './forwarding-table.js';
import type { Link } from './link.js';
import { translateIPv4 } from './translator.js';
import type { Vnic } from './vnic.js';

/** Frames addressed to another node (multi-hop transit) go to the controller, which routes them. */
export interface TransitSink {
  transit(frame: Buffer): void;
}

const MIN_IP4 = 20;
const MIN_IP6 = 40;

/**
 * Wire → TUN. A frame from a link is delivered to the vNIC only if its source UID is the link's peer
 * and the inner packet's source address is mapped to that same peer: no member can spoof another's
 * address. Everything else is dropped and counted, per link and datapath-wide.
 */
export class Outside {
  private localUid: Buffer | null = null;
  private vnic: Vnic | null = null;
  /** This node's IPv4 address as a number: the destination of translated packets. */
  private localIp4 = -1;

  constructor(
    private readonly table: ForwardingTable,
    private readonly sink: TransitSink,
    private readonly counters: Counters,
  ) {}

  attach(localUid: Buffer, vnic: Vnic, localIp4: number | null): void {
    this.localUid = localUid;
    this.vnic = vnic;
    this.localIp4 = localIp4 ?? -1;
  }

  readonly onFrame = (link: Link, frame: Buffer): void => {
    const local = this.localUid;
    const vnic = this.vnic;
    const peer = this.table.peer(link.uid);
    if (frame.length < FRAME_HEADER_LEN + MIN_IP4 || local === null || vnic === null || peer === undefined) {
      link.counters.dropsMalformed++;
      this.counters.framesMalformed++;
      return;
    }
    if (frame.compare(peer.uidBytes, 0, UID_BYTES, 0, UID_BYTES) !== 0) {
      link.counters.dropsSpoofed++;
      this.counters.framesSpoofedUid++;
      return;
    }
    if (frame.compare(local, 0, UID_BYTES, FRAME_DST_OFFSET, FRAME_DST_OFFSET + UID_BYTES) !== 0) {
      this.counters.framesTransitToController++;
      this.sink.transit(frame);
      return;
    }
    const version = frame[FRAME_HEADER_LEN]! >> 4;
    let owner;
    if (version === 4 && peer.translate4 !== null) {
      // SocialVPN: the peer uses its own subnet; rewrite the packet into ours. Rewriting the source
      // to the peer's mapped address also means it cannot claim anyone else's.
      if (this.localIp4 < 0 || !translateIPv4(frame, FRAME_HEADER_LEN, frame.length - FRAME_HEADER_LEN, peer.translate4, this.localIp4)) {
        link.counters.dropsMalformed++;
        this.counters.framesMalformed++;
        return;
      }
      owner = peer;
    } else if (version === 4) owner = this.table.lookup4(frame, FRAME_HEADER_LEN + 12);
    else if (version === 6 && frame.length >= FRAME_HEADER_LEN + MIN_IP6) {
      owner = this.table.lookup6(frame, FRAME_HEADER_LEN + 8);
    } else {
      link.counters.dropsMalformed++;
      this.counters.framesMalformed++;
      return;
    }
    if (owner !== peer) {
      link.counters.dropsSpoofed++;
      this.counters.framesSpoofedAddress++;
      return;
    }
    vnic.write(frame.subarray(FRAME_HEADER_LEN));
  };
}
