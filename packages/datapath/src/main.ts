#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import pino from 'pino';
import {
  DEFAULT_RPC_PORT, LOG_LEVELS, MAX_LANES, TINCAN_VERSION, parseEndpoint, parseLogLevel, terminalDestination, type Endpoint, type LogLevelName,
} from '@tincan/protocol';
import { DEFAULT_AQM_SETTINGS } from './aqm.js';
import { MAX_MALLOC_ARENAS, nativeHeap } from '@tincan/tun';
import { Datapath } from './datapath.js';
import {
  DEFAULT_ICE_PORTS, DEFAULT_SCTP_SEND_BUFFER, MAX_SCTP_SEND_BUFFER, MIN_SCTP_SEND_BUFFER, checkSctpSendBuffer, parseIcePortRange, type IcePortRange,
} from './link.js';
import { missingNodeFlags } from './node-flags.js';
import { DEFAULT_SCTP_SACK_FREQ, MAX_SCTP_SACK_FREQ, USRSCTP_SACK_FREQ, checkSctpSackFreq } from './rtc.js';
import { DEFAULT_MALLOC_ARENAS, limitMallocArenas } from './native-heap.js';
import { DEFAULT_WATCHDOG_S, MAX_WATCHDOG_S, WatchdogSeconds } from './watchdog.js';

const program = new Command()
  .name('tincan-datapath')
  .description('TinCan datapath: vNIC, ICE/DTLS links, UID forwarding table, XMPP session; driven over a local RPC')
  .version(TINCAN_VERSION)
  // A wrong flag or value: one line on stderr and exit status 2 (the unit does not restart on 2).
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2))
  .configureOutput({ outputError: (text, write) => write(`tincan-datapath: ${text}`) })
  .addOption(new Option('--rpc <address:port>', 'loopback address and port of the JSON-over-UDP RPC')
    .argParser(parseRpc).default(parseEndpoint(`127.0.0.1:${DEFAULT_RPC_PORT}`), `127.0.0.1:${DEFAULT_RPC_PORT}`))
  .option('--state-dir <dir>', 'node certificate and RPC token live here (one per datapath; the systemd unit gives /var/lib/tincan/NETWORK)', '/var/lib/tincan')
  .addOption(new Option('--log-level <level>', LOG_LEVELS.join('|')).env('TINCAN_LOG_LEVEL').argParser(parseLevel).default('info'))
  .addOption(new Option('--rtc-log-level <level>', "libdatachannel's log level (logged at the matching --log-level)").choices(['Verbose', 'Debug', 'Info', 'Warning', 'Error']).default('Warning'))
  .option('--vnic-queue <packets>', "the vNIC's kernel queue (txqueuelen): shorter queues less delay under load", parseQueue, 64)
  .option('--sctp-send-buffer <bytes>', `bytes SCTP holds per link, unsent and in flight, before the data channel's bounded queue takes over (${MIN_SCTP_SEND_BUFFER}–${MAX_SCTP_SEND_BUFFER}): smaller cuts delay under load but caps a link at bytes / RTT`, parseSctpSendBuffer, DEFAULT_SCTP_SEND_BUFFER)
  .option('--sctp-sack-freq <packets>', `data packets a link's SCTP receiver takes per acknowledgement (1–${MAX_SCTP_SACK_FREQ}; ${USRSCTP_SACK_FREQ}: usrsctp's stock settings): fewer acknowledgements, fewer bytes and less CPU per transfer (docs/architecture.md, "SCTP acknowledgements")`, parseSctpSackFreq, DEFAULT_SCTP_SACK_FREQ)
  .option('--no-compact-frames', 'full frames only on every link: neither offer nor send compact frames (docs/architecture.md)')
  .option('--no-offload', 'no TUN segmentation offload (on by default): the vNIC hands over TCP super-packets, sent whole to peers that take them and segmented in software for any other (docs/architecture.md); off with --no-compact-frames')
  .option('--offload', 'the default: accepted, does nothing')
  .option('--no-aqm', 'no delay-based limit on the links\' send queues (on by default): neither probe a link\'s queueing delay nor drop when it stays above target, nor echo the peer\'s probes (docs/architecture.md, "Latency under load")')
  .option('--aqm-target <ms>', 'queueing delay above the path\'s own round trip that the delay-based limit tolerates before it drops; on longer paths 5% of its interval where that is more (0.5–1000)', parseAqmTarget, DEFAULT_AQM_SETTINGS.targetMs)
  .option('--aqm-interval <ms>', 'the longest interval of the delay-based limit: how long the queueing delay stays above target before a drop, and the base of the drop spacing (interval / √drops); on shorter paths four round trips, at least 30 ms (5–1000)', parseAqmInterval, DEFAULT_AQM_SETTINGS.intervalMs)
  .option('--lanes <n>', `datapath processes, this one included, each on its own queue of a multi-queue vNIC (1..${MAX_LANES}); 1: a plain TUN, no lane processes`, parseLanes, 1)
  .addOption(new Option('--ice-ports <begin-end>', "local UDP ports of the links' ICE agents, handed out in turn so that a new link does not reuse a closed one's port (and its TURN allocation, which lives on at the server)")
    .argParser(parseIcePorts).default(DEFAULT_ICE_PORTS, `${DEFAULT_ICE_PORTS.begin}-${DEFAULT_ICE_PORTS.end}`))
  .option('--watchdog <seconds>', `kill this process (SIGKILL) when its main thread stalls this long, so that its supervisor restarts it; lane processes too (0..${MAX_WATCHDOG_S}; 0: off)`, parseWatchdog, DEFAULT_WATCHDOG_S)
  .option('--malloc-arenas <n>', `cap the C heap's malloc arenas (glibc; set at start, lane processes too) at n, 1..${MAX_MALLOC_ARENAS}: ~0.5 MB less resident with links, but may cost link throughput; 0 (the default): glibc's own, an arena per thread up to 8 per core (docs/architecture.md, "Memory")`, parseMallocArenas, DEFAULT_MALLOC_ARENAS)
  .option('--debug-dump-forwarded <file>', 'debug only: write every frame this node forwards for others (transit), as sent, to a pcap file (link type USER0, one full frame per record; sealed relayed frames as the relay sees them). Slows forwarding; the primary process only (docs/rpc.md, "Debugging")')
  .parse();

function parseRpc(v: string): Endpoint {
  try {
    return parseEndpoint(v);
  } catch {
    throw new InvalidArgumentError('expected address:port, e.g. 127.0.0.1:5801');
  }
}

function parseLevel(v: string): LogLevelName {
  if (v === '') return 'info'; // TINCAN_LOG_LEVEL= (empty): the default
  try {
    return parseLogLevel(v);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function parseMallocArenas(v: string): number {
  const n = /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > MAX_MALLOC_ARENAS) throw new InvalidArgumentError(`expected a whole number, 0–${MAX_MALLOC_ARENAS} (0: glibc's default)`);
  return n;
}

function parseIcePorts(v: string): IcePortRange {
  try {
    return parseIcePortRange(v);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function parseAqmTarget(v: string): number {
  const n = Number(v);
  if (!(n >= 0.5 && n <= 1000)) throw new InvalidArgumentError('expected milliseconds, 0.5–1000');
  return n;
}

function parseAqmInterval(v: string): number {
  const n = Number(v);
  if (!(n >= 5 && n <= 1000)) throw new InvalidArgumentError('expected milliseconds, 5–1000');
  return n;
}

function parseLanes(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > MAX_LANES) throw new InvalidArgumentError(`expected a whole number, 1–${MAX_LANES}`);
  return n;
}

function parseQueue(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 100_000) throw new InvalidArgumentError('expected a whole number of packets, 1–100000');
  return n;
}

function parseSctpSendBuffer(v: string): number {
  try {
    return checkSctpSendBuffer(/^\d+$/.test(v) ? Number(v) : NaN);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function parseSctpSackFreq(v: string): number {
  try {
    return checkSctpSackFreq(/^\d+$/.test(v) ? Number(v) : NaN);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function parseWatchdog(v: string): number {
  const r = WatchdogSeconds.safeParse(/^\d+$/.test(v) ? Number(v) : NaN);
  if (!r.success) throw new InvalidArgumentError(`expected whole seconds, 0–${MAX_WATCHDOG_S} (0: no watchdog)`);
  return r.data;
}

const opts = program.opts<{ rpc: Endpoint; stateDir: string; logLevel: LogLevelName; rtcLogLevel: 'Verbose' | 'Debug' | 'Info' | 'Warning' | 'Error'; vnicQueue: number; sctpSendBuffer: number; sctpSackFreq: number; compactFrames: boolean; offload: boolean; aqm: boolean; aqmTarget: number; aqmInterval: number; lanes: number; icePorts: IcePortRange; watchdog: number; mallocArenas: number; debugDumpForwarded?: string }>();
const logger = pino({ name: 'tincan-datapath', level: opts.logLevel }, terminalDestination(process.stdout, process.env));
// First, before node-datachannel (loaded with the first link) starts its threads: native-heap.ts.
const mallocArenaLimit = limitMallocArenas(logger, nativeHeap, opts.mallocArenas);
const missingFlags = missingNodeFlags(process.execArgv);
if (missingFlags.length) {
  logger.warn({ missing: missingFlags }, `node was started without ${missingFlags.join(' ')}: the datapath may keep ~7 MB more resident (docs/deployment.md)`);
}

try {
  const datapath = await Datapath.start({
    rpc: opts.rpc, stateDir: opts.stateDir, logger, rtcLogLevel: opts.rtcLogLevel, vnicQueueLen: opts.vnicQueue,
    sctpSendBufferBytes: opts.sctpSendBuffer,
    sctpSackFreq: opts.sctpSackFreq,
    compactFrames: opts.compactFrames,
    // Nothing could go whole without compact frames: segmenting every super-packet in software costs more than it saves.
    offload: opts.offload && opts.compactFrames,
    aqm: opts.aqm && opts.compactFrames ? { targetMs: opts.aqmTarget, intervalMs: opts.aqmInterval } : null,
    lanes: opts.lanes,
    icePorts: opts.icePorts,
    watchdogS: opts.watchdog,
    mallocArenaLimit,
    ...(opts.debugDumpForwarded !== undefined ? { debugDumpForwarded: opts.debugDumpForwarded } : {}),
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    datapath.stop().finally(() => process.exit(0));
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // Its settings are flags: nothing to re-read. Without a handler SIGHUP would end the process.
  process.on('SIGHUP', () => logger.info('SIGHUP: the datapath has no config file to reload (its flags change with a restart; controllers reload theirs)'));
} catch (err) {
  logger.fatal({ err }, (err as Error).message);
  process.exit(1);
}
