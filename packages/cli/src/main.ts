#!/usr/bin/env node
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command } from 'commander';
import { DEFAULT_RPC_PORT, parseEndpoint } from '@tincan/protocol';
import { DatapathClient } from '@tincan/controller';
import { renderControllerDrops, renderStatus } from './status-table.js';

const program = new Command()
  .name('tincanctl')
  .description('Inspect a running tincan-datapath over its RPC')
  .option('--rpc <address:port>', 'the datapath RPC endpoint', `127.0.0.1:${DEFAULT_RPC_PORT}`)
  .option('--state-dir <dir>', "the datapath's state directory (holds the RPC token: run as the datapath's user)", '/var/lib/tincan');

async function withClient<T>(fn: (c: DatapathClient) => Promise<T>): Promise<T> {
  const { rpc, stateDir } = program.opts<{ rpc: string; stateDir: string }>();
  const client = await DatapathClient.connect({ rpc: parseEndpoint(rpc), stateDir, timeoutMs: 2000 });
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

program
  .command('status')
  .description('node, XMPP session, links (state, candidate types, RTT, traffic) and online peers')
  .option('--json', 'print get_state as JSON')
  .option('--all-peers', "list every online TinCan peer, not only those of the datapath's overlay")
  .action(async (o: { json?: boolean; allPeers?: boolean }) => {
    // A large state comes in pages (get_state_page); the client reads them all.
    const s = await withClient((c) => c.call('get_state', { stats: true, peers: o.allPeers ? 'all' : 'overlay' }));
    if (o.json) {
      console.log(JSON.stringify(s, null, 2));
      return;
    }
    console.log(renderStatus(s));
    // The controller's drops of hostile input, from its status file next to the datapath's token.
    for (const file of ['groupvpn-status.json', 'socialvpn-status.json']) {
      const text = await readFile(join(program.opts<{ stateDir: string }>().stateDir, file), 'utf8').catch(() => null);
      let drops: string | null = null;
      try {
        drops = text === null ? null : renderControllerDrops(JSON.parse(text));
      } catch {
        drops = null; // being rewritten: nothing to show this time
      }
      if (drops) console.log(`\n${drops}`);
    }
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
