import type { Uid } from '@tincan/protocol';

export interface PacketQueueOptions {
  /** Frames kept per peer (the oldest are dropped beyond it). */
  perPeer?: number;
  /** Frames older than this are dropped. */
  maxAgeMs?: number;
  /** Peers with a queue at most (new peers are not queued beyond it). */
  maxPeers?: number;
}

interface Queue {
  frames: Buffer[];
  firstMs: number;
}

/**
 * The first few packets to a peer while its link is being made (paper §4.3: "packets may be dropped by
 * a controller"): kept briefly and injected once the link is up, so a connection's first SYN or ping
 * is not lost. Bounded in frames per peer, peers and age.
 */
export class PacketQueue {
  private readonly queues = new Map<Uid, Queue>();
  private readonly perPeer: number;
  private readonly maxAgeMs: number;
  private readonly maxPeers: number;
  dropped = 0;

  constructor(opts: PacketQueueOptions = {}) {
    this.perPeer = opts.perPeer ?? 8;
    this.maxAgeMs = opts.maxAgeMs ?? 10_000;
    this.maxPeers = opts.maxPeers ?? 256;
  }

  /** Keeps `frame` (the caller's own copy) for `uid`; false if it was not kept. */
  push(uid: Uid, frame: Buffer, now: number): boolean {
    let q = this.queues.get(uid);
    if (q && now - q.firstMs > this.maxAgeMs) {
      this.dropped += q.frames.length;
      this.queues.delete(uid);
      q = undefined;
    }
    if (!q) {
      if (this.queues.size >= this.maxPeers || this.perPeer === 0) {
        this.dropped++;
        return false;
      }
      q = { frames: [], firstMs: now };
      this.queues.set(uid, q);
    }
    if (q.frames.length >= this.perPeer) {
      q.frames.shift();
      this.dropped++;
    }
    q.frames.push(frame);
    return true;
  }

  /** Takes the frames for `uid` that are still fresh. */
  take(uid: Uid, now: number): Buffer[] {
    const q = this.queues.get(uid);
    if (!q) return [];
    this.queues.delete(uid);
    if (now - q.firstMs > this.maxAgeMs) {
      this.dropped += q.frames.length;
      return [];
    }
    return q.frames;
  }

  drop(uid: Uid): void {
    const q = this.queues.get(uid);
    if (q) {
      this.dropped += q.frames.length;
      this.queues.delete(uid);
    }
  }

  expire(now: number): void {
    for (const [uid, q] of this.queues) {
      if (now - q.firstMs > this.maxAgeMs) {
        this.dropped += q.frames.length;
        this.queues.delete(uid);
      }
    }
  }

  size(uid: Uid): number {
    return this.queues.get(uid)?.frames.length ?? 0;
  }
}
