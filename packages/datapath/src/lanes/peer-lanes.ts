import type { DataChannel } from 'node-datachannel';
import type { Logger } from 'pino';
import {
  LANE_CONTROL_CHANNEL_ID,
  LANE_CONTROL_LABEL,
  parseLaneControl,
  sdpFingerprint,
  type LaneControlMessage,
  type LinkState,
  type SessionDescription,
  type TurnServer,
  type Uid,
} from '@tincan/protocol';
import type { Link } from '../link.js';

const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 60_000;

/** What a PeerLanes needs from the lane manager. */
export interface PeerLanesHost {
  /** Lanes this datapath runs, the primary included. */
  readonly ourLanes: number;
  rtcMtu(): number;
  /** Asks lane `lane` to make its lane link to `peer` (an offer, or the answer to `remote`). */
  makeLaneLink(lane: number, peer: Uid, attempt: number, ice: LaneIce, remote?: SessionDescription): boolean;
  acceptLaneAnswer(lane: number, peer: Uid, attempt: number, sdp: string): void;
  /** Counted drops: messages from the peer that do not parse or make no sense now. */
  countBadControl(): void;
}

export interface LaneIce {
  stun: readonly string[];
  turn: readonly TurnServer[];
}

interface LaneSlot {
  attempt: number;
  state: LinkState | 'none';
  backoffMs: number;
  retry: NodeJS.Timeout | null;
}

/**
 * The lane control of one primary link: the in-band channel to the peer's datapath (LaneControlMessage,
 * on negotiated data channel LANE_CONTROL_CHANNEL_ID) and the state of each lane link to that peer.
 * The primary link's offerer offers every lane link, and only when the link's selected pair is direct
 * (a lane link through TURN would load the relay N times for no gain); the answerer answers, and asks
 * for a new offer (`renew`) when its lane link is gone. Lane links verify the same certificate
 * fingerprint as the primary link: an offer or answer carrying another is dropped.
 */
export class PeerLanes {
  readonly uid: Uid;
  private readonly channel: DataChannel;
  private readonly slots: LaneSlot[] = [];
  private remoteFingerprint: string | null = null;
  /** min(ours, theirs) once the peer's hello arrived; 1 (no lane links) until then. */
  agreed = 1;
  private closed = false;

  constructor(
    private readonly link: Link,
    private readonly ice: LaneIce,
    private readonly host: PeerLanesHost,
    private readonly log: Logger,
  ) {
    this.uid = link.uid;
    for (let i = 0; i < host.ourLanes; i++) this.slots.push({ attempt: 0, state: 'none', backoffMs: RETRY_MIN_MS, retry: null });
    this.channel = link.createControlChannel(LANE_CONTROL_LABEL, { negotiated: true, id: LANE_CONTROL_CHANNEL_ID });
    this.channel.onOpen(() => this.sendControl({ t: 'hello', lanes: host.ourLanes }));
    this.channel.onMessage((msg) => {
      if (typeof msg !== 'string') {
        this.host.countBadControl();
        return;
      }
      this.onControl(msg);
    });
    this.channel.onError(() => undefined);
  }

  private get offerer(): boolean {
    return this.link.role === 'offerer';
  }

  /** The peer's description of the primary link: the fingerprint its lane links must present too. */
  setRemoteDescription(sdp: string): void {
    this.remoteFingerprint = sdpFingerprint(sdp);
  }

  onControl(text: string): void {
    if (this.closed) return;
    const msg = parseLaneControl(text);
    if (msg === null) {
      this.host.countBadControl();
      return;
    }
    switch (msg.t) {
      case 'hello': {
        const agreed = Math.min(this.host.ourLanes, msg.lanes);
        if (agreed === this.agreed) return;
        this.agreed = agreed;
        this.log.info({ ours: this.host.ourLanes, theirs: msg.lanes, lanes: agreed }, 'lanes agreed');
        if (this.offerer) for (let i = 1; i < agreed; i++) this.offer(i);
        return;
      }
      case 'offer': {
        if (this.offerer || msg.lane >= this.agreed || !this.fingerprintMatches(msg.sdp)) {
          this.host.countBadControl();
          return;
        }
        const slot = this.slots[msg.lane]!;
        this.clearRetry(slot);
        slot.attempt = msg.attempt;
        slot.state = 'connecting';
        if (!this.host.makeLaneLink(msg.lane, this.uid, msg.attempt, this.ice, { type: 'offer', sdp: msg.sdp })) slot.state = 'none';
        return;
      }
      case 'answer': {
        const slot = this.slots[msg.lane];
        if (!this.offerer || !slot || msg.lane >= this.agreed || !this.fingerprintMatches(msg.sdp)) {
          this.host.countBadControl();
          return;
        }
        if (msg.attempt !== slot.attempt) return; // an answer to an older offer: the newer one wins
        this.host.acceptLaneAnswer(msg.lane, this.uid, msg.attempt, msg.sdp);
        return;
      }
      case 'renew':
        if (!this.offerer || msg.lane >= this.agreed) {
          this.host.countBadControl();
          return;
        }
        this.scheduleRetry(msg.lane);
        return;
    }
  }

  private fingerprintMatches(sdp: string): boolean {
    const fp = sdpFingerprint(sdp);
    return fp !== null && this.remoteFingerprint !== null && fp === this.remoteFingerprint;
  }

  /** Lane links only on a direct path (never through TURN). */
  private direct(): boolean {
    const info = this.link.info([], []);
    return info.local_candidate !== null && info.local_candidate !== 'relay' && info.remote_candidate !== 'relay';
  }

  private offer(lane: number): void {
    if (this.closed || lane >= this.agreed) return;
    if (this.link.state !== 'up') {
      // The primary link is down (the peer went away or restarts): no lane link can be signaled
      // now. Try again later; the controller trims the link if it stays down.
      this.scheduleRetry(lane);
      return;
    }
    if (!this.direct()) {
      this.log.info({ lane }, 'no lane link: the link is relayed');
      return;
    }
    const slot = this.slots[lane]!;
    this.clearRetry(slot);
    slot.attempt++;
    slot.state = 'connecting';
    if (!this.host.makeLaneLink(lane, this.uid, slot.attempt, this.ice)) slot.state = 'none';
  }

  /** A description from the lane process: our offer or answer, for the peer. */
  onLaneDescription(lane: number, attempt: number, description: SessionDescription): void {
    const slot = this.slots[lane];
    if (this.closed || !slot || slot.attempt !== attempt) return;
    if (description.type === 'offer') this.sendControl({ t: 'offer', lane, attempt, sdp: description.sdp });
    else this.sendControl({ t: 'answer', lane, attempt, sdp: description.sdp });
  }

  onLaneState(lane: number, attempt: number, state: LinkState | 'none'): void {
    const slot = this.slots[lane];
    if (this.closed || !slot || slot.attempt !== attempt) return;
    slot.state = state;
    if (state === 'up') {
      slot.backoffMs = RETRY_MIN_MS;
      this.log.info({ lane }, 'lane link up');
    } else if (state === 'down' || state === 'failed' || state === 'none') {
      this.scheduleRetry(lane);
    }
  }

  /** Lane `lane`'s process (re)started: it has no lane links; make this one again. */
  onLaneRestarted(lane: number): void {
    const slot = this.slots[lane];
    if (this.closed || !slot || lane >= this.agreed) return;
    slot.state = 'none';
    slot.backoffMs = RETRY_MIN_MS;
    if (this.offerer) this.offer(lane);
    else this.sendControl({ t: 'renew', lane });
  }

  private scheduleRetry(lane: number): void {
    const slot = this.slots[lane]!;
    if (this.closed || slot.retry) return;
    const delay = slot.backoffMs;
    slot.backoffMs = Math.min(RETRY_MAX_MS, slot.backoffMs * 2);
    slot.retry = setTimeout(() => {
      slot.retry = null;
      if (this.offerer) this.offer(lane);
      else this.sendControl({ t: 'renew', lane });
    }, delay * (0.75 + Math.random() / 2));
  }

  private clearRetry(slot: LaneSlot): void {
    if (slot.retry) clearTimeout(slot.retry);
    slot.retry = null;
  }

  private sendControl(msg: LaneControlMessage): void {
    if (this.closed) return;
    try {
      if (this.channel.isOpen()) this.channel.sendMessage(JSON.stringify(msg));
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'lane control send failed');
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.slots) this.clearRetry(s);
    try {
      this.channel.close();
    } catch { /* already closed */ }
  }
}
