#!/usr/bin/env node
import { Command } from 'commander';
import { DEFAULT_RPC_PORT, TINCAN_VERSION } from '@tincan/protocol';
import { DatapathClient } from '@tincan/controller';
import { explainRpcError, locateDatapath, type LocateOptions } from './locate.js';
import { renderStatus } from './status-table.js';

const program = new Command()
  .name('tincanctl')
  .description('Inspect a running tincan-datapath over its RPC')
  .version(TINCAN_VERSION)
  // A wrong flag: one line and exit status 2; a datapath that cannot be reached: exit status 1.
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2))
  .configureOutput({ outputError: (text, write) => write(`tincanctl: ${text}`) })
  .option('-n, --network <name>', 'the network NAME of the systemd units (/etc/tincan/NAME.json, /var/lib/tincan/NAME); default: the only one running')
  .option('--config <file>', "a controller's config file: its datapath and state_dir")
  .option('--rpc <address:port>', `the datapath RPC endpoint (default 127.0.0.1:${DEFAULT_RPC_PORT}, or the network's)`)
  .option('--state-dir <dir>', "the datapath's state directory, which holds the RPC token (default: the network's)");

async function withClient<T>(fn: (c: DatapathClient) => Promise<T>): Promise<T> {
  const where = await locateDatapath(program.opts<LocateOptions>());
  const client = await DatapathClient.connect({ rpc: where.rpc, token: where.token, timeoutMs: 2000 });
  try {
    return await fn(client);
  } catch (err) {
    throw explainRpcError(err as Error, where);
  } finally {
    client.close();
  }
}

program
  .command('status')
  .description('node, XMPP session, links (state, candidate types, RTT, traffic) and online peers')
  .option('--json', 'print get_state as JSON')
  .action(async (o: { json?: boolean }) => {
    const s = await withClient((c) => c.call('get_state', { stats: true }));
    console.log(o.json ? JSON.stringify(s, null, 2) : renderStatus(s));
  });

program
  .command('echo')
  .description('check that the datapath answers')
  .argument('[text]', 'text to echo', 'ping')
  .action(async (text: string) => {
    const r = await withClient((c) => c.call('echo', { data: text }));
    console.log(r.data);
  });

program.parseAsync().catch((err: Error) => {
  console.error(`tincanctl: ${err.message}`);
  process.exit(1);
});
