import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CONFIG_DIR, DEFAULT_RPC_PORT, STATE_DIR_ROOT, defaultStateDir, parseEndpoint, tokenFilePath, type Endpoint,
} from '@tincan/protocol';
import { ConfigError, fileProblem, parseJsonText } from '@tincan/controller';

/**
 * Where tincanctl finds a node's datapath: its RPC endpoint and its RPC token. The systemd units lay
 * network NAME out as /etc/tincan/NAME.json (the controller's config: "datapath", "state_dir"),
 * /etc/tincan/NAME.env (TINCAN_RPC for the datapath) and /var/lib/tincan/NAME (the datapath's state
 * directory, with the token file rpc-PORT.token).
 */

export interface LocateOptions {
  /** -n / --network NAME */
  network?: string;
  /** --config FILE: a controller's config file. */
  config?: string;
  /** --rpc and --state-dir given by hand: they win. */
  rpc?: string;
  stateDir?: string;
  /** Tests point these elsewhere. */
  configDir?: string;
  stateRoot?: string;
}

export interface DatapathLocation {
  rpc: Endpoint;
  stateDir: string;
  token: string;
  /** How it was found, for error messages ("network lab", "/etc/tincan/lab.json"). */
  what: string;
}

/** A problem finding the datapath: one line, saying what to check. */
export class LocateError extends Error {
  override readonly name = 'LocateError';
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'ENOENT';
}

/** The "datapath" and "state_dir" of a controller's config (GroupVPN or SocialVPN); the rest is not checked here. */
async function fromConfig(file: string, optional = false): Promise<{ rpc?: string; stateDir: string } | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (optional && isMissing(err)) return null;
    throw new LocateError(`cannot read ${file}: ${fileProblem(err)}`);
  }
  let data: unknown;
  try {
    data = parseJsonText(file, text);
  } catch (err) {
    throw new LocateError((err as ConfigError).message);
  }
  const c = (data ?? {}) as { datapath?: unknown; state_dir?: unknown };
  return {
    ...(typeof c.datapath === 'string' ? { rpc: c.datapath } : {}),
    stateDir: typeof c.state_dir === 'string' ? c.state_dir : defaultStateDir(file),
  };
}

/** TINCAN_RPC from the datapath unit's environment file, if there is one. */
async function rpcFromEnvFile(file: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return undefined;
  }
  const m = /^\s*TINCAN_RPC\s*=\s*["']?([^"'\s#]+)/m.exec(text);
  return m?.[1];
}

/** The networks under the state root whose datapath left a token: [name, port][]. */
async function runningNetworks(stateRoot: string): Promise<{ name: string; port: number }[]> {
  let names: string[];
  try {
    names = await readdir(stateRoot);
  } catch {
    return [];
  }
  const found: { name: string; port: number }[] = [];
  for (const name of names.sort()) {
    let files: string[];
    try {
      files = await readdir(join(stateRoot, name));
    } catch {
      continue; // not a directory, or not ours to read
    }
    for (const f of files) {
      const m = /^rpc-(\d+)\.token$/.exec(f);
      if (m) found.push({ name, port: Number(m[1]) });
    }
  }
  return found;
}

function endpoint(text: string, from: string): Endpoint {
  try {
    return parseEndpoint(text);
  } catch {
    throw new LocateError(`${from}: expected the datapath's RPC as address:port (e.g. 127.0.0.1:${DEFAULT_RPC_PORT}), got "${text}"`);
  }
}

/**
 * Finds the datapath to talk to. In order: --config FILE; -n NAME (its config file if there is one,
 * else the units' layout); neither: the one network under /var/lib/tincan with a token (several:
 * an error naming them), else /var/lib/tincan itself. --rpc and --state-dir override what was found.
 */
/**
 * Where a node's datapath and controller keep their state and which RPC endpoint its datapath uses,
 * as locateDatapath finds them, without reading the token (the controller's files need no datapath).
 */
export async function locateNode(o: LocateOptions): Promise<{ rpc: Endpoint; stateDir: string; what: string; network: string | undefined }> {
  const configDir = o.configDir ?? CONFIG_DIR;
  const stateRoot = o.stateRoot ?? STATE_DIR_ROOT;
  let rpc: string | undefined;
  let stateDir: string;
  let what: string;
  let network = o.network;
  if (o.config !== undefined) {
    ({ rpc, stateDir } = (await fromConfig(o.config))!);
    what = o.config;
  } else {
    if (network === undefined && o.stateDir === undefined) {
      const running = await runningNetworks(stateRoot);
      const names = [...new Set(running.map((r) => r.name))];
      if (names.length > 1) {
        throw new LocateError(`several networks run here (${names.join(', ')}): pick one with -n NETWORK`);
      }
      if (names.length === 1) {
        network = names[0]!;
        if (o.rpc === undefined && running.length === 1) rpc = `127.0.0.1:${running[0]!.port}`;
      }
    }
    if (network !== undefined) {
      if (!/^[A-Za-z0-9_.-]+$/.test(network)) throw new LocateError(`-n ${network}: a network name is letters, digits, "_", "." or "-"`);
      const fromFile = await fromConfig(join(configDir, `${network}.json`), true);
      stateDir = fromFile?.stateDir ?? join(stateRoot, network);
      rpc = fromFile?.rpc ?? rpc ?? (await rpcFromEnvFile(join(configDir, `${network}.env`)));
      what = `network ${network}`;
    } else {
      stateDir = o.stateDir ?? stateRoot;
      what = o.stateDir !== undefined ? `state directory ${o.stateDir}` : 'this host';
    }
  }
  if (o.rpc !== undefined) rpc = o.rpc;
  if (o.stateDir !== undefined) stateDir = o.stateDir;
  const ep = endpoint(rpc ?? `127.0.0.1:${DEFAULT_RPC_PORT}`, o.rpc !== undefined ? '--rpc' : what);
  return { rpc: ep, stateDir, what, network };
}

export async function locateDatapath(o: LocateOptions): Promise<DatapathLocation> {
  const { rpc: ep, stateDir, what, network } = await locateNode(o);
  const tokenFile = tokenFilePath(stateDir, ep.port);
  let token: string;
  try {
    token = (await readFile(tokenFile, 'utf8')).trim();
  } catch (err) {
    if (isMissing(err)) {
      const check = network !== undefined ? `check: systemctl status tincan-datapath@${network}` : 'start it';
      throw new LocateError(
        `is tincan-datapath running for ${what}? no RPC token at ${tokenFile} (${check}; ` +
          'or say which datapath: -n NETWORK, --config FILE, or --state-dir DIR --rpc ADDRESS:PORT)',
      );
    }
    throw new LocateError(
      `cannot read the RPC token ${tokenFile}: ${(err as NodeJS.ErrnoException).code === 'EACCES' ? 'permission denied (run tincanctl as root or as user tincan)' : fileProblem(err)}`,
    );
  }
  if (!token) throw new LocateError(`the RPC token ${tokenFile} is empty: restart tincan-datapath for ${what}`);
  return { rpc: ep, stateDir, token, what };
}

/** An RPC error with a hint: a datapath that left its token but does not answer has probably stopped. */
export function explainRpcError(err: Error, where: DatapathLocation): Error {
  if (!/no answer/.test(err.message)) return err;
  return new Error(
    `${err.message} (for ${where.what}: its token is at ${tokenFilePath(where.stateDir, where.rpc.port)}, so it ran there; is it still running?)`,
  );
}
