/** Datapath-wide drop and event counters, shown by get_state. Plain fields: bumped per packet. */
export class Counters {
  rpcRequests = 0;
  rpcBadDatagrams = 0;
  rpcUnauthorized = 0;
  rpcBadRequests = 0;
  /** Sessions authenticated (hello, auth), and handshakes refused (a wrong proof, an unknown one). */
  rpcHandshakes = 0;
  rpcHandshakeFailures = 0;
  /** Sealed datagrams dropped: no such session, another sender's, or a wrong tag. */
  rpcUnauthenticated = 0;
  /** Sealed datagrams dropped because their sequence number was seen already or is too old. */
  rpcReplayed = 0;
  /** Datagrams of the old protocol version 2 (answered with one error). */
  rpcLegacy = 0;
  /** Controllers forgotten because they stopped sending keepalives. */
  rpcControllerTimeouts = 0;
  eventsSent = 0;
  eventsDroppedNoController = 0;
  tunPacketsIn = 0;
  tunMalformed = 0;
  tunMulticastDropped = 0;
  unmappedToController = 0;
  unmappedDroppedRateLimit = 0;
  unmappedDroppedNoController = 0;
  framesMalformed = 0;
  framesSpoofedUid = 0;
  framesSpoofedAddress = 0;
  framesTransitToController = 0;
  /** Transit on: frames for another node sent on towards it. */
  framesForwarded = 0;
  /** Transit on: frames dropped because the inner IPv4 TTL / IPv6 hop limit was ≤ 1. */
  framesHopLimit = 0;
  /** Transit on: frames dropped because their next hop was the link they came in on, or they were our own. */
  framesRouteLoop = 0;
  /** Transit on: frames for this node relayed by a peer on behalf of another known peer, accepted. */
  framesRelayedIn = 0;
  /** Transit on: plaintext frames for another node, dropped (a relayed frame must be sealed). */
  framesTransitUnsealed = 0;
  /** Sealed relayed frames (sealing.ts): this node's frames sealed for a peer reached through a relay. */
  sealedOut = 0;
  /** Sealed frames for this node opened (authenticated, not replayed). */
  sealedIn = 0;
  /** Sealed frames for this node that failed authentication (altered, or sealed with another key). */
  sealedAuthFailed = 0;
  /** Sealed frames for this node whose counter was seen before (or is too old) in their source's epoch. */
  sealedReplays = 0;
  /** Frames to a peer reached through a relay, dropped: no trusted certificate (set_peer_cert) to seal with. */
  sealedNoKeyOut = 0;
  /** Sealed frames for this node from a source with no trusted certificate, dropped. */
  sealedNoKeyIn = 0;
  /** Links refused or closed because the peer's certificate is not the one set_peer_cert trusts. */
  linkCertMismatch = 0;
  /** --offload: [virtio_net_hdr][packet] messages (TCP super-packets, partial checksums) sent as they are. */
  offloadSuperPacketsOut = 0;
  /** --offload: such messages received and written to the vNIC as they are (or segmented, below). */
  offloadSuperPacketsIn = 0;
  /** --offload: packets from the vNIC segmented / checksum-completed in software (no capable next hop). */
  offloadSegmentedOut = 0;
  /** --offload: received super-packets segmented in software (SocialVPN translation). */
  offloadSegmentedIn = 0;
  injectedFromController = 0;
  injectedDropped = 0;

  snapshot(extra: Record<string, number> = {}): Record<string, number> {
    return { ...Object.fromEntries(Object.entries(this).filter(([, v]) => typeof v === 'number')), ...extra };
  }
}
