#!/usr/bin/env node
import { Command } from 'commander';
import pino from 'pino';
import { parseEndpoint, socialVpnConfigJsonSchema } from '@tincan/protocol';
import { ConfigError, DatapathClient, StateFileError } from '@tincan/controller';
import { loadSocialVpnConfig } from './config.js';
import { SocialVpnController } from './controller.js';

const program = new Command()
  .name('tincan-socialvpn')
  .description('TinCan SocialVPN controller: your XMPP friends\' devices mapped into your own private subnet')
  .option('--config <file>', 'the JSON config file (see docs/config.md)')
  .option('--check-config', 'validate the config file and exit')
  .option('--print-config-schema', 'print the JSON Schema of the config file and exit')
  .option('--log-level <level>', 'overrides log_level from the config (fatal|error|warn|info|debug|trace|silent)')
  .parse();

const opts = program.opts<{ config?: string; checkConfig?: boolean; printConfigSchema?: boolean; logLevel?: string }>();

if (opts.printConfigSchema) {
  process.stdout.write(`${JSON.stringify(socialVpnConfigJsonSchema(), null, 2)}\n`);
  process.exit(0);
}
const configFile = opts.config;
if (!configFile) {
  process.stderr.write('tincan-socialvpn: --config FILE is required (see --help)\n');
  process.exit(2);
}

let config;
try {
  config = await loadSocialVpnConfig(configFile);
} catch (err) {
  process.stderr.write(`tincan-socialvpn: ${err instanceof ConfigError ? err.message : String(err)}\n`);
  process.exit(2);
}
if (opts.checkConfig) {
  process.stdout.write(`${configFile}: ok (subnet ${config.subnet}, ${config.xmpp.jid})\n`);
  process.exit(0);
}

const logger = pino({ name: 'tincan-socialvpn', level: opts.logLevel ?? process.env.TINCAN_LOG_LEVEL ?? config.log_level });
const rpc = parseEndpoint(config.datapath);
let controller: SocialVpnController;
try {
  controller = new SocialVpnController({
    config,
    logger,
    connect: () => DatapathClient.connect({ rpc, stateDir: config.state_dir }),
  });
} catch (err) {
  // A state file that cannot be used: restarting will not fix it (exit 2, like a bad config).
  const msg = err instanceof StateFileError ? err.message : (err as Error).message;
  process.stderr.write(`tincan-socialvpn: ${msg}\n`);
  process.exit(err instanceof StateFileError ? 2 : 1);
}

let stopping = false;
const stop = (signal: string) => {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'stopping (links stay up in the datapath)');
  controller.stop().finally(() => process.exit(0));
};
process.on('SIGINT', () => stop('SIGINT'));
process.on('SIGTERM', () => stop('SIGTERM'));

try {
  await controller.start();
} catch (err) {
  logger.fatal({ err }, (err as Error).message);
  process.exit(1);
}
