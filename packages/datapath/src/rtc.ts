import { createRequire } from 'node:module';
import type { LogLevel } from 'node-datachannel';
import type { Logger } from 'pino';
import { usrsctpSysctl } from '@tincan/tun';
import { DEFAULT_SCTP_SEND_BUFFER, checkSctpSendBuffer } from './link.js';

/** node-datachannel's module: PeerConnection, initLogger, cleanup… */
export type NodeDataChannel = typeof import('node-datachannel');

/** libdatachannel's log levels and the pino level each of its messages is logged at. */
const RTC_LOG_LEVELS: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'> = {
  Verbose: 'trace', Debug: 'debug', Info: 'info', Warning: 'warn', Error: 'error', Fatal: 'fatal',
};

/**
 * `--sctp-sack-freq`: how many data packets a link's SCTP receiver takes before it acknowledges them
 * (usrsctp's own: 2; it acknowledges at once anyway on a gap, and after libdatachannel's 20 ms delayed-ack
 * timer when fewer arrive). During a bulk transfer every SACK is one more ~93-byte packet to encrypt,
 * send, receive and decrypt at both ends: at 2, one reverse packet per two forward packets, ~3.5 % of the
 * wire bytes and a share of two CPU-bound ends' time. At 8: wire/payload 1.116 → 1.089 and one TCP flow
 * 20–55 % faster in interleaved A/B rounds in the lab (docs/architecture.md, "SCTP acknowledgements"). 2 leaves usrsctp's stock
 * settings; any other value also sets the two sender-side settings that go with it (sctpAckSettings).
 * At most 8: a receiver that waits for more packets than its peer sends per SACK stalls the link (one
 * burst per 20 ms timer), and a peer with usrsctp's stock settings (an older TinCan, or
 * `--sctp-sack-freq 2`) sends at most libdatachannel's 10 per SACK; 8 leaves it room.
 */
export const DEFAULT_SCTP_SACK_FREQ = 8;
export const USRSCTP_SACK_FREQ = 2;
export const MAX_SCTP_SACK_FREQ = 8;

/** An --sctp-sack-freq: a whole number 1–8; throws on anything else. */
export function checkSctpSackFreq(packets: number): number {
  if (!Number.isInteger(packets) || packets < 1 || packets > MAX_SCTP_SACK_FREQ) {
    throw new Error(`expected a whole number of packets, 1–${MAX_SCTP_SACK_FREQ}, got ${String(packets)}`);
  }
  return packets;
}

/** The usrsctp settings (sysctl names) that one SACK frequency takes. */
export interface SctpAckSettings {
  /** The receiver acknowledges every this many packets. */
  sack_freq_default: number;
  /**
   * Slow start grows the congestion window by the bytes a SACK acknowledges, up to this many packets
   * (RFC 3465's L; usrsctp's 2 assumes a SACK per 2 packets): the SACK frequency, so that slow start
   * still doubles the window each round trip.
   */
  L2_abc_variable: number;
  /**
   * The sender sends at most this many packets per SACK it receives (libdatachannel: 10). It must stay
   * well above the SACK frequency: at 16 with a burst of 10 the receiver waits for packets that the
   * sender holds back, and each exchange waits for the 20 ms timer (measured: 6 Mbit/s). Twice the
   * frequency leaves room for one lost SACK; 32 measured slower than 16 at a frequency of 8.
   */
  max_burst_default: number;
}

/** The settings for `--sctp-sack-freq packets`, or null for usrsctp's own (2): nothing to set. */
export function sctpAckSettings(packets: number): SctpAckSettings | null {
  checkSctpSackFreq(packets);
  if (packets === USRSCTP_SACK_FREQ) return null;
  return { sack_freq_default: packets, L2_abc_variable: Math.max(2, packets), max_burst_default: Math.max(10, 2 * packets) };
}

/** What get_state shows of the SCTP settings (null before the library loads or where unreachable). */
export interface SctpState {
  sack_freq: number | null;
  abc_l: number | null;
  max_burst: number | null;
}

/** How RtcLibrary reaches usrsctp's settings: @tincan/tun's usrsctpSysctl; tests pass a stand-in. */
export interface UsrsctpSettings {
  get(name: string): number | null;
  set(name: string, value: number): boolean;
}

/**
 * node-datachannel (libdatachannel and its native addon), loaded when the first link needs it: a
 * datapath without links never maps the library, ~4 MB less resident memory while idle
 * (docs/architecture.md, "Memory"). The load is synchronous (require), so a link is created in the
 * same turn of the event loop as before. One per process: the library and its log are process-wide.
 */
export class RtcLibrary {
  private lib: NodeDataChannel | null = null;

  /**
   * `level` and `log`: libdatachannel's own log (`--rtc-log-level`), routed once the library loads.
   * `sctpSendBufferBytes` (`--sctp-send-buffer`, checked here): the SCTP send buffer of every link,
   * set when the library loads (libdatachannel's SCTP settings are process-wide, taken by each link's
   * SCTP transport as it starts). `sackFreq` (`--sctp-sack-freq`, checked here): set in usrsctp as the
   * library loads, through `usrsctp` (sctpAckSettings).
   */
  constructor(
    private readonly level: LogLevel,
    private readonly log: Logger,
    private readonly sctpSendBufferBytes: number = DEFAULT_SCTP_SEND_BUFFER,
    sackFreq: number = DEFAULT_SCTP_SACK_FREQ,
    private readonly usrsctp: UsrsctpSettings = usrsctpSysctl,
  ) {
    checkSctpSendBuffer(sctpSendBufferBytes);
    this.ackSettings = sctpAckSettings(sackFreq);
  }

  private readonly ackSettings: SctpAckSettings | null;

  /** True once a link has loaded the library. */
  get loaded(): boolean {
    return this.lib !== null;
  }

  /** The library, loaded (and its log sent to the logger) on the first call. */
  get(): NodeDataChannel {
    if (this.lib) return this.lib;
    const lib = createRequire(import.meta.url)('node-datachannel') as NodeDataChannel;
    // Each libdatachannel message at the pino level matching its own (`rtc` in the line).
    lib.initLogger(this.level, (rtcLevel, message) => this.log[RTC_LOG_LEVELS[rtcLevel as LogLevel] ?? 'warn']({ rtc: rtcLevel }, message));
    lib.setSctpSettings({ sendBufferSize: this.sctpSendBufferBytes });
    // usrsctp_init resets usrsctp's settings, and libdatachannel runs it when a link needs it after none
    // did (at the first, and again after the last is gone). preload() runs it now and keeps usrsctp up
    // until cleanup(), so the settings set here stay for every link this process makes.
    lib.preload();
    if (this.ackSettings) this.applyAckSettings(this.ackSettings);
    this.lib = lib;
    this.sctp = {
      sack_freq: this.usrsctp.get('sack_freq_default'),
      abc_l: this.usrsctp.get('L2_abc_variable'),
      max_burst: this.usrsctp.get('max_burst_default'),
    };
    return lib;
  }

  /**
   * Sets the sender's two settings first and the SACK frequency only if both took: a frequency above the
   * stock burst limit without its burst stalls links (SctpAckSettings). Logs (warn) and leaves the rest
   * at usrsctp's defaults when a setting cannot be reached.
   */
  private applyAckSettings(s: SctpAckSettings): void {
    // find() stops at the first that fails: the frequency, last, is set only if the other two took.
    const failed = (['max_burst_default', 'L2_abc_variable', 'sack_freq_default'] as const).find((name) => !this.usrsctp.set(name, s[name]));
    if (failed) {
      this.log.warn({ failed, wanted: s }, "could not set usrsctp's settings in node-datachannel's addon (a stripped or different build?): links keep usrsctp's SACK frequency");
    }
  }

  /**
   * The SCTP acknowledgement settings usrsctp held once the library loaded, read back from it (all null
   * before, each null where unreachable).
   */
  sctpState(): SctpState {
    return this.sctp;
  }

  private sctp: SctpState = { sack_freq: null, abc_l: null, max_burst: null };

  /** Closes every PeerConnection and stops libdatachannel's threads, if it was ever loaded. */
  cleanup(): void {
    this.lib?.cleanup();
  }
}
