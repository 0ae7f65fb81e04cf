#!/usr/bin/env node
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { DEFAULT_RPC_PORT, TINCAN_VERSION } from '@tincan/protocol';
import { DatapathClient, generateMemberCa } from '@tincan/controller';
import { explainRpcError, locateDatapath, locateNode, type LocateOptions } from './locate.js';
import { renderControllerDrops, renderMembership, renderStatus } from './status-table.js';
import {
  describeCertificate,
  pendingChanges,
  renderTrust,
  requestsTaken,
  selectPending,
  signCertificate,
  writeAcceptRequests,
} from './membership.js';

const program = new Command()
  .name('tincanctl')
  .description('Inspect a running tincan-datapath and its controller; manage key trust and the membership CA')
  .version(TINCAN_VERSION)
  // A wrong flag: one line and exit status 2; a datapath that cannot be reached: exit status 1.
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2))
  .configureOutput({ outputError: (text, write) => write(`tincanctl: ${text}`) })
  .option('-n, --network <name>', 'the network NAME of the systemd units (/etc/tincan/NAME.json, /var/lib/tincan/NAME); default: the only one running')
  .option('--config <file>', "a controller's config file: its datapath and state_dir")
  .option('--rpc <address:port>', `the datapath RPC endpoint (default 127.0.0.1:${DEFAULT_RPC_PORT}, or the network's)`)
  .option('--state-dir <dir>', "the node's state directory: RPC token, controller status files, key pins (default: the network's; run as the datapath's user)");

/** The node's state directory (the datapath's and its controller's), found as for the RPC. */
async function stateDir(): Promise<string> {
  return (await locateNode(program.opts<LocateOptions>())).stateDir;
}

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

/** The controllers' status files in the state directory (a missing or garbled one is skipped). */
function controllerStatuses(dir: string): { ctl: string; status: unknown }[] {
  const out: { ctl: string; status: unknown }[] = [];
  for (const ctl of ['groupvpn', 'socialvpn']) {
    try {
      out.push({ ctl, status: JSON.parse(readFileSync(join(dir, `${ctl}-status.json`), 'utf8')) as unknown });
    } catch {
      // none, or being replaced
    }
  }
  return out;
}

program
  .command('status')
  .description('node, XMPP session, links (state, candidate types, RTT, traffic), online peers, and membership: refusals by reason, key changes waiting, certificate expiry')
  .option('--json', 'print get_state as JSON')
  .option('--all-peers', "list every online TinCan peer, not only those of the datapath's overlay")
  .action(async (o: { json?: boolean; allPeers?: boolean }) => {
    // A large state comes in pages (get_state_page); the client reads them all.
    const s = await withClient((c) => c.call('get_state', { stats: true, peers: o.allPeers ? 'all' : 'overlay' }));
    if (o.json) {
      console.log(JSON.stringify(s, null, 2));
      return;
    }
    const lines = [renderStatus(s)];
    for (const { ctl, status } of controllerStatuses(await stateDir())) {
      lines.push(...renderMembership(ctl, status));
      // The controller's drops of hostile input.
      const drops = renderControllerDrops(status);
      if (drops) lines.push('', drops);
    }
    console.log(lines.join('\n'));
  });

program
  .command('echo')
  .description('check that the datapath answers')
  .argument('[text]', 'text to echo', 'ping')
  .action(async (text: string) => {
    const r = await withClient((c) => c.call('echo', { data: text }));
    console.log(r.data);
  });

const trust = program
  .command('trust')
  .description('keys pinned on first use (no membership CA): list them, accept a refused key change');

trust
  .command('list')
  .description('pinned keys and refused key changes, per controller')
  .action(async () => console.log(renderTrust(await stateDir())));

trust
  .command('accept')
  .description(
    'accept a refused key change (after checking it with its owner): the new key is pinned, and the controller admits the ' +
      'node within a few seconds. WHO is a UID prefix (8+ hex digits) or a JID (all of its refused changes).',
  )
  .argument('<who>', 'UID prefix or JID, as tincanctl status or trust list shows it')
  .option('--fingerprint <fp>', 'accept only the change to this key (the fingerprint its owner reads in tincanctl status)')
  .option('--no-wait', 'do not wait for the controller to take it')
  .action(async (who: string, o: { fingerprint?: string; wait: boolean }) => {
    const dir = await stateDir();
    const hits = selectPending(pendingChanges(dir), who, o.fingerprint);
    if (hits.length === 0) throw new Error(`no refused key change matches ${who}${o.fingerprint ? ` with ${o.fingerprint}` : ''} (tincanctl trust list)`);
    const paths = writeAcceptRequests(dir, hits);
    for (const h of hits) console.log(`accepting ${h.jid} ${h.uid.slice(0, 12)}: ${h.pinned ?? '?'} -> ${h.fingerprint} (${h.ctl})`);
    if (!o.wait) return;
    for (let i = 0; i < 30; i++) {
      if (requestsTaken(dir, paths)) {
        console.log('done: the controller pinned the new key');
        return;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    console.log('written; the controller takes it at its next poll once it runs');
  });

const ca = program
  .command('ca')
  .description('the membership CA of a GroupVPN network: a key pair kept offline, certificates for members (see docs/security.md)');

ca
  .command('init')
  .description('make a CA key pair: DIR/ca-key.pem (private, mode 0600; keep it offline, never on nodes) and DIR/ca-key.pub; prints the public key for the config (membership.ca_key)')
  .requiredOption('--dir <dir>', 'where to write the key pair')
  .action((o: { dir: string }) => {
    const priv = join(o.dir, 'ca-key.pem');
    if (existsSync(priv)) throw new Error(`${priv} exists: refusing to replace a CA key`);
    const k = generateMemberCa();
    writeFileSync(priv, k.privatePem, { mode: 0o600, flag: 'wx' });
    writeFileSync(join(o.dir, 'ca-key.pub'), `${k.publicKey}\n`, { mode: 0o644 });
    console.log(k.publicKey);
  });

const collect = (v: string, prev: string[]) => [...prev, v];
ca
  .command('sign')
  .description("sign a member's certificate: network, bare JID, node key (its node-cert.pem or fingerprint), virtual IPv4, subnets it may route for, validity")
  .requiredOption('--key <file>', 'the CA private key (ca-key.pem)')
  .requiredOption('--network-id <id>', "the network id (the config's network_id)")
  .requiredOption('--jid <jid>', "the member's bare JID")
  .requiredOption('--ip4 <address>', "the member's virtual IPv4 address (no prefix length)")
  .option('--node-cert <file>', "the member's node-cert.pem (from its datapath's state directory)")
  .option('--fingerprint <fp>', "or its node key's SHA-256 fingerprint (tincanctl status, identity line)")
  .option('--subnet <cidr>', 'a subnet it may route for (router mode); repeat for more', collect, [] as string[])
  .option('--days <n>', 'valid for this many days (expiry is how a certificate is revoked: keep it short)', '30')
  .option('--not-before <iso>', 'valid from (default: now)')
  .option('--out <file>', 'write it there (default: print it)')
  .action((o: { key: string; networkId: string; jid: string; ip4: string; nodeCert?: string; fingerprint?: string; subnet: string[]; days: string; notBefore?: string; out?: string }) => {
    const notBefore = o.notBefore !== undefined ? new Date(o.notBefore) : undefined;
    if (notBefore !== undefined && Number.isNaN(notBefore.getTime())) throw new Error(`--not-before: not a date: ${o.notBefore}`);
    const text = signCertificate({
      caKeyPem: readFileSync(o.key, 'utf8'),
      network: o.networkId,
      jid: o.jid,
      ip4: o.ip4,
      ...(o.nodeCert !== undefined ? { nodeCertPem: readFileSync(o.nodeCert, 'utf8') } : {}),
      ...(o.fingerprint !== undefined ? { fingerprint: o.fingerprint } : {}),
      subnets: o.subnet,
      days: Number(o.days),
      ...(notBefore ? { notBefore } : {}),
    });
    if (o.out) writeFileSync(o.out, `${text}\n`, { mode: 0o644 });
    else console.log(text);
  });

ca
  .command('show')
  .description('what a membership certificate says (and whether the CA signed it, with --ca-key)')
  .argument('<file>', 'the certificate file')
  .option('--ca-key <key>', 'the CA public key (ed25519:…) to check the signature against')
  .action((file: string, o: { caKey?: string }) => {
    console.log(describeCertificate(readFileSync(file, 'utf8'), o.caKey));
  });

program.parseAsync().catch((err: Error) => {
  console.error(`tincanctl: ${err.message}`);
  process.exit(1);
});
