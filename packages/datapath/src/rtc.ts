import { createRequire } from 'node:module';
import type { LogLevel } from 'node-datachannel';
import type { Logger } from 'pino';
import { DEFAULT_SCTP_SEND_BUFFER, checkSctpSendBuffer } from './link.js';

/** node-datachannel's module: PeerConnection, initLogger, cleanup… */
export type NodeDataChannel = typeof import('node-datachannel');

/** libdatachannel's log levels and the pino level each of its messages is logged at. */
const RTC_LOG_LEVELS: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'> = {
  Verbose: 'trace', Debug: 'debug', Info: 'info', Warning: 'warn', Error: 'error', Fatal: 'fatal',
};

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
   * SCTP transport as it starts).
   */
  constructor(
    private readonly level: LogLevel,
    private readonly log: Logger,
    private readonly sctpSendBufferBytes: number = DEFAULT_SCTP_SEND_BUFFER,
  ) {
    checkSctpSendBuffer(sctpSendBufferBytes);
  }

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
    this.lib = lib;
    return lib;
  }

  /** Closes every PeerConnection and stops libdatachannel's threads, if it was ever loaded. */
  cleanup(): void {
    this.lib?.cleanup();
  }
}
