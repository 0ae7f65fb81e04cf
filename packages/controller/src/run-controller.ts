import { Command, InvalidArgumentError, Option } from 'commander';
import pino, { type Logger } from 'pino';
import { LOG_LEVELS, TINCAN_VERSION, parseEndpoint, parseLogLevel, terminalDestination, tokenFilePath, type LogLevelName } from '@tincan/protocol';
import { ConfigError } from './config-loader.js';
import { LiveLevel, changedKeys, splitChanges } from './reload.js';
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
  create(config: S, logger: Logger, connect: () => Promise<DatapathPort>): RunnableController<S>;
  /**
   * Settings (key paths; a key covers the keys below it) that the controller's reload() applies
   * while it runs. log_level is always live. A change to any other key is logged as waiting for a
   * restart.
   */
  liveKeys?: readonly string[];
  /**
   * The exit code when create() throws (its message goes to stderr); without it, the error is
   * thrown on.
   */
  setupExitCode?(err: unknown): number;
}

/** What runController drives. */
export interface RunnableController<S> {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Applies the liveKeys of a reloaded config (SIGHUP), without dropping links. */
  reload?(config: S): void;
}

/**
 * A controller's command line: --config, --check-config, --print-config-schema, --log-level; the
 * pino logger (JSON lines, or readable ones on a terminal); the datapath client; SIGINT / SIGTERM
 * stop the controller (links stay up); SIGHUP reloads the config file. A wrong flag or config file
 * is one line on stderr and exit status 2.
 */
export async function runController<S extends RunnableSettings>(cli: ControllerCli<S>): Promise<void> {
  const program = new Command()
    .name(cli.name)
    .description(cli.description)
    .version(TINCAN_VERSION)
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2))
    .configureOutput({ outputError: (text, write) => write(`${cli.name}: ${text}`) })
    .option('--config <file>', 'the JSON config file (see docs/config.md); SIGHUP reloads it')
    .option('--check-config', 'validate the config file and exit')
    .option('--print-config-schema', 'print the JSON Schema of the config file and exit')
    .addOption(
      new Option('--log-level <level>', `overrides log_level from the config (${LOG_LEVELS.join('|')})`)
        .env('TINCAN_LOG_LEVEL')
        .argParser((v): LogLevelName | undefined => {
          if (v === '') return undefined; // TINCAN_LOG_LEVEL= (empty): the config's log_level
          try {
            return parseLogLevel(v);
          } catch (err) {
            throw new InvalidArgumentError((err as Error).message);
          }
        }),
    )
    .parse();

  const opts = program.opts<{ config?: string; checkConfig?: boolean; printConfigSchema?: boolean; logLevel?: LogLevelName }>();

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
    process.stdout.write(`${configFile}: ok (${cli.summary(config)}; datapath ${config.datapath}, state_dir ${config.state_dir})\n`);
    process.exit(0);
  }

  const levels = new LiveLevel();
  const logger = pino(
    { name: cli.name, level: opts.logLevel ?? config.log_level, onChild: levels.onChild },
    terminalDestination(process.stdout, process.env),
  );
  levels.track(logger);
  const rpc = parseEndpoint(config.datapath);
  const connect = async () => {
    try {
      return await DatapathClient.connect({ rpc, stateDir: config.state_dir });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      throw new Error(
        `no RPC token at ${tokenFilePath(config.state_dir, rpc.port)} yet: is tincan-datapath running with ` +
          `--state-dir ${config.state_dir} --rpc ${config.datapath}? (waiting for it)`,
      );
    }
  };
  let controller: RunnableController<S>;
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

  let current = config;
  let reloading = false;
  const reload = async () => {
    if (reloading || stopping) return;
    reloading = true;
    try {
      let next: S;
      try {
        next = await cli.load(configFile);
      } catch (err) {
        const msg = err instanceof ConfigError ? err.message.replace(/\n\s*/g, '; ') : String(err);
        logger.error(`reload (SIGHUP) refused, the running config stays: ${msg}`);
        return;
      }
      const changes = splitChanges(changedKeys(current, next), ['log_level', ...(cli.liveKeys ?? [])]);
      if (!changes.live.length && !changes.restart.length) {
        logger.info({ file: configFile }, 'reload (SIGHUP): nothing changed');
        return;
      }
      if (changes.live.includes('log_level')) {
        if (opts.logLevel) logger.warn({ log_level: next.log_level }, `reload (SIGHUP): log_level stays ${opts.logLevel} (--log-level / TINCAN_LOG_LEVEL)`);
        else levels.setLevel(next.log_level as LogLevelName);
      }
      controller.reload?.(next);
      // Live keys took effect; the others keep their running values until a restart.
      const running = current;
      current = { ...next };
      for (const k of changes.restart) copyKey(current, running, k);
      if (changes.live.length) logger.info({ applied: changes.live }, `reload (SIGHUP): applied ${changes.live.join(', ')}`);
      if (changes.restart.length) {
        logger.warn(
          { not_applied: changes.restart },
          `reload (SIGHUP): ${changes.restart.join(', ')} changed but cannot change while running; restart ${cli.name} to apply (links stay up)`,
        );
      }
    } finally {
      reloading = false;
    }
  };
  process.on('SIGHUP', () => void reload());

  try {
    await controller.start();
  } catch (err) {
    logger.fatal({ err }, (err as Error).message);
    process.exit(1);
  }
}

/** Sets key path `key` ("routing.deny") of `to` to its value in `from` (copying the objects on the way). */
function copyKey(to: Record<string, unknown> | object, from: Record<string, unknown> | object, key: string): void {
  const parts = key.split('.');
  let t = to as Record<string, unknown>;
  let f = from as Record<string, unknown> | undefined;
  for (const p of parts.slice(0, -1)) {
    const child = t[p];
    t[p] = child !== null && typeof child === 'object' ? { ...(child as object) } : {};
    t = t[p] as Record<string, unknown>;
    f = f?.[p] as Record<string, unknown> | undefined;
  }
  const last = parts[parts.length - 1]!;
  if (f && last in f) t[last] = f[last];
  else delete t[last];
}
