#!/usr/bin/env node
import { Command } from 'commander';
import pino from 'pino';
import { DEFAULT_RPC_PORT, parseEndpoint } from '@tincan/protocol';
import { Datapath } from './datapath.js';

const program = new Command()
  .name('tincan-datapath')
  .description('TinCan datapath: vNIC, ICE/DTLS links, UID forwarding table, XMPP session; driven over a local RPC')
  .option('--rpc <address:port>', 'loopback address and port of the JSON-over-UDP RPC', `127.0.0.1:${DEFAULT_RPC_PORT}`)
  .option('--state-dir <dir>', 'node certificate and RPC token live here (one per datapath)', '/var/lib/tincan')
  .option('--log-level <level>', 'fatal|error|warn|info|debug|trace', process.env.TINCAN_LOG_LEVEL ?? 'info')
  .option('--rtc-log-level <level>', "libdatachannel's log level: Verbose|Debug|Info|Warning|Error", 'Warning')
  .parse();

const opts = program.opts<{ rpc: string; stateDir: string; logLevel: string; rtcLogLevel: 'Verbose' | 'Debug' | 'Info' | 'Warning' | 'Error' }>();
const logger = pino({ name: 'tincan-datapath', level: opts.logLevel });

try {
  const datapath = await Datapath.start({
    rpc: parseEndpoint(opts.rpc), stateDir: opts.stateDir, logger, rtcLogLevel: opts.rtcLogLevel,
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
} catch (err) {
  logger.fatal({ err }, (err as Error).message);
  process.exit(1);
}
