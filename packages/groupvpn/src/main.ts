#!/usr/bin/env node
import { Command } from 'commander';
import pino from 'pino';
import { groupVpnConfigJsonSchema, parseEndpoint } from '@tincan/protocol';
import { ConfigError, DatapathClient } from '@tincan/controller';
import { loadGroupVpnConfig } from './config.js';
import { GroupVpnController } from './controller.js';

const program = new Command()
  .name('tincan-groupvpn')
  .description('TinCan GroupVPN controller: one virtual subnet for a group, members admitted by network id over XMPP')
  .option('--config <file>', 'the JSON config file (see docs/config.md)')
  .option('--check-config', 'validate the config file and exit')
  .option('--print-config-schema', 'print the JSON Schema of the config file and exit')
  .option('--log-level <level>', 'overrides log_level from the config (fatal|error|warn|info|debug|trace|silent)')
  .parse();

const opts = program.opts<{ config?: string; checkConfig?: boolean; printConfigSchema?: boolean; logLevel?: string }>();

if (opts.printConfigSchema) {
  process.stdout.write(`${JSON.stringify(groupVpnConfigJsonSchema(), null, 2)}\n`);
  process.exit(0);
}
const configFile = opts.config;
if (!configFile) {
  process.stderr.write('tincan-groupvpn: --config FILE is required (see --help)\n');
  process.exit(2);
}

let config;
try {
  config = await loadGroupVpnConfig(configFile);
} catch (err) {
  process.stderr.write(`tincan-groupvpn: ${err instanceof ConfigError ? err.message : String(err)}\n`);
  process.exit(2);
}
if (opts.checkConfig) {
  process.stdout.write(`${configFile}: ok (network ${config.network_id}, ${config.vnic.ip4}, ${config.link_policy})\n`);
  process.exit(0);
}

const logger = pino({ name: 'tincan-groupvpn', level: opts.logLevel ?? process.env.TINCAN_LOG_LEVEL ?? config.log_level });
const rpc = parseEndpoint(config.datapath);
const controller = new GroupVpnController({
  config,
  logger,
  connect: () => DatapathClient.connect({ rpc, stateDir: config.state_dir }),
});

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
