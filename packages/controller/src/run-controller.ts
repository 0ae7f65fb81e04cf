import { Command } from 'commander';
import pino, { type Logger } from 'pino';
import { parseEndpoint } from '@tincan/protocol';
import { ConfigError } from './config-loader.js';
import { DatapathClient } from './datapath-client.js';
import type { DatapathPort } from './datapath-port.js';

/** The config keys the CLI boilerplate reads. */
export interface RunnableSettings {
  datapath: string;
  state_dir: string;
  log_level: string;
}

export interface ControllerCli<S extends RunnableSettings> {
  /** The program name: tincan-groupvpn, tincan-socialvpn. */
  name: string;
  description: string;
  /** The JSON Schema of the config file (--print-config-schema). */
  schema(): unknown;
  /** Loads and validates the config file (throws ConfigError). */
  load(file: string): Promise<S>;
  /** What --check-config prints after "FILE: ok". */
  summary(config: S): string;
  create(config: S, logger: Logger, connect: () => Promise<DatapathPort>): { start(): Promise<void>; stop(): Promise<void> };
  /**
   * The exit code when create() throws (its message goes to stderr); without it, the error is
   * thrown on.
   */
  setupExitCode?(err: unknown): number;
}

/**
 * A controller's command line: --config, --check-config, --print-config-schema, --log-level; the
 * pino logger; the datapath client; SIGINT / SIGTERM stop the controller (links stay up).
 */
export async function runController<S extends RunnableSettings>(cli: ControllerCli<S>): Promise<void> {
  const program = new Command()
    .name(cli.name)
    .description(cli.description)
    .option('--config <file>', 'the JSON config file (see docs/config.md)')
    .option('--check-config', 'validate the config file and exit')
    .option('--print-config-schema', 'print the JSON Schema of the config file and exit')
    .option('--log-level <level>', 'overrides log_level from the config (fatal|error|warn|info|debug|trace|silent)')
    .parse();

  const opts = program.opts<{ config?: string; checkConfig?: boolean; printConfigSchema?: boolean; logLevel?: string }>();

  if (opts.printConfigSchema) {
    process.stdout.write(`${JSON.stringify(cli.schema(), null, 2)}\n`);
    process.exit(0);
  }
  const configFile = opts.config;
  if (!configFile) {
    process.stderr.write(`${cli.name}: --config FILE is required (see --help)\n`);
    process.exit(2);
  }

  let config: S;
  try {
    config = await cli.load(configFile);
  } catch (err) {
    process.stderr.write(`${cli.name}: ${err instanceof ConfigError ? err.message : String(err)}\n`);
    process.exit(2);
  }
  if (opts.checkConfig) {
    process.stdout.write(`${configFile}: ok (${cli.summary(config)})\n`);
    process.exit(0);
  }

  const logger = pino({ name: cli.name, level: opts.logLevel ?? process.env.TINCAN_LOG_LEVEL ?? config.log_level });
  const rpc = parseEndpoint(config.datapath);
  const connect = () => DatapathClient.connect({ rpc, stateDir: config.state_dir });
  let controller: ReturnType<ControllerCli<S>['create']>;
  try {
    controller = cli.create(config, logger, connect);
  } catch (err) {
    if (!cli.setupExitCode) throw err;
    process.stderr.write(`${cli.name}: ${(err as Error).message}\n`);
    process.exit(cli.setupExitCode(err));
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
}
