/** Datapath-wide drop and event counters, shown by get_state. Plain fields: bumped per packet. */
export class Counters {
  rpcRequests = 0;
  rpcBadDatagrams = 0;
  rpcUnauthorized = 0;
  rpcBadRequests = 0;
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
  injectedFromController = 0;
  injectedDropped = 0;

  snapshot(extra: Record<string, number> = {}): Record<string, number> {
    return { ...Object.fromEntries(Object.entries(this).filter(([, v]) => typeof v === 'number')), ...extra };
  }
}
