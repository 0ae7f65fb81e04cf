#!/usr/bin/env node
// Selftest of the lab's XMPP server with a real client (@xmpp/client 0.14 from the repo's node_modules).
// Run inside a lab namespace:  scripts/lab run h1 node scripts/lab.d/xmpp-check.mjs /tmp/tincan-lab/lab.json
// Prints one PASS/FAIL line per check; exits 1 if any check failed.
//
// Trusting the lab CA: @xmpp/client's STARTTLS upgrade calls tls.connect({socket, host: domain}) and
// takes no TLS options, so a CA cannot be passed through the client. Two ways work (both checked here):
//   1. NODE_EXTRA_CA_CERTS=<lab>/ca.pem in the environment of the node process (read at startup);
//   2. in-process: wrap tls.connect to add {ca} (see trustCa below); `ca` replaces the default roots.
// The certificate is then verified for the XMPP domain (SAN DNS:vpn.test) as usual.
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import tls from 'node:tls';
import { client, xml } from '@xmpp/client';

const labFile = process.argv[2] ?? '/tmp/tincan-lab/lab.json';
const lab = JSON.parse(readFileSync(labFile, 'utf8'));
const { host, port, domain, ca_file: caFile } = lab.xmpp;
const password = (name) => lab.accounts.users.find((u) => u.name === name)?.password ?? 'no-such-user';

// Child mode: one login with whatever trust the environment gives (used for NODE_EXTRA_CA_CERTS).
if (process.argv[3] === '--login') {
  const x = await connect(process.argv[4], 'SCRAM-SHA-1');
  await x.stop();
  process.exit(0);
}

setTimeout(() => {
  console.log('FAIL xmpp-check: overall timeout (60 s)');
  process.exit(1);
}, 60_000).unref();

let failures = 0;
async function check(name, fn) {
  try {
    const detail = await fn();
    console.log(`PASS xmpp: ${name}${detail ? ` (${detail})` : ''}`);
  } catch (err) {
    failures++;
    console.log(`FAIL xmpp: ${name}: ${err instanceof Error ? err.message : String(err)}`);
  }
}
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timeout after ${ms} ms`)), ms);
    }),
  ]);
}

/** Log in as `user` with SASL `mechanism`; resolves to the online client with a presence log. */
async function connect(user, mechanism, pass = password(user)) {
  const x = client({
    service: `xmpp://${host}:${port}`,
    domain,
    resource: 'selftest',
    credentials: async (authenticate, mechanisms) => {
      if (!mechanisms.includes(mechanism)) throw new Error(`${mechanism} not offered (${mechanisms})`);
      await authenticate({ username: user, password: pass }, mechanism);
    },
  });
  x.reconnect.stop();
  x.presences = new Map(); // bare JID -> last presence type ('available' | 'unavailable' | ...)
  x.on('stanza', (s) => {
    if (s.is('presence')) x.presences.set(String(s.attrs.from).split('/')[0], s.attrs.type ?? 'available');
  });
  x.on('error', () => {}); // start() rejects with the same error
  try {
    await withTimeout(x.start(), 15_000, `login ${user}`);
  } catch (err) {
    x.stop().catch(() => {});
    throw err;
  }
  return x;
}

async function roster(x) {
  const q = await withTimeout(x.iqCaller.get(xml('query', { xmlns: 'jabber:iq:roster' })), 10_000, 'roster');
  return new Map(q.getChildren('item').map((i) => [i.attrs.jid, i.attrs.subscription]));
}

async function waitFor(cond, ms, what) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function trustCa(pem) {
  const original = tls.connect;
  tls.connect = function (...args) {
    if (args[0] && typeof args[0] === 'object') args[0] = { ...args[0], ca: pem };
    return original.apply(this, args);
  };
}

// --- checks ---------------------------------------------------------------------------------------

await check('TLS is verified: without the lab CA the login fails', async () => {
  try {
    const x = await connect('alice', 'SCRAM-SHA-1');
    await x.stop();
  } catch (err) {
    const code = err?.code ?? err?.message;
    assert(/CERT|SIGNATURE|ISSUER|self.signed/i.test(String(code)), `unexpected error ${code}`);
    return String(code);
  }
  throw new Error('logged in although the lab CA was not trusted');
});

await check('NODE_EXTRA_CA_CERTS=ca.pem makes the lab CA trusted', async () => {
  const r = spawnSync(process.execPath, [process.argv[1], labFile, '--login', 'stranger'], {
    env: { ...process.env, NODE_EXTRA_CA_CERTS: caFile },
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert(r.status === 0, `child exited ${r.status}: ${r.stderr}`);
});

trustCa(readFileSync(caFile, 'utf8'));

const clients = [];
try {
  let alice, bob, carol, node1, node2;
  await check('alice logs in (SCRAM-SHA-1, TLS verified against the lab CA)', async () => {
    alice = await connect('alice', 'SCRAM-SHA-1');
    clients.push(alice);
    assert(alice.socket?.socket instanceof tls.TLSSocket && alice.socket.socket.authorized, 'socket not TLS-verified');
    return `${alice.jid}`;
  });
  await check('bob logs in with PLAIN over TLS', async () => {
    bob = await connect('bob', 'PLAIN');
    clients.push(bob);
  });
  await check('carol logs in', async () => {
    carol = await connect('carol', 'SCRAM-SHA-1');
    clients.push(carol);
  });
  await check('a wrong password is refused', async () => {
    try {
      const x = await connect('alice', 'PLAIN', 'wrong-password');
      await x.stop();
    } catch (err) {
      assert(/not-authorized/.test(String(err?.condition ?? err?.message)), `unexpected error ${err}`);
      return 'not-authorized';
    }
    throw new Error('logged in with a wrong password');
  });
  await check("alice's roster: bob and carol, subscription both", async () => {
    const r = await roster(alice);
    assert(r.get(`bob@${domain}`) === 'both' && r.get(`carol@${domain}`) === 'both', `roster ${[...r]}`);
    assert(r.size === 2, `unexpected roster size ${r.size}: ${[...r.keys()]}`);
  });
  await check("bob's roster: alice only (no bob<->carol)", async () => {
    const r = await roster(bob);
    assert(r.get(`alice@${domain}`) === 'both' && r.size === 1, `roster ${[...r]}`);
  });
  await check("carol's roster: alice only", async () => {
    const r = await roster(carol);
    assert(r.get(`alice@${domain}`) === 'both' && r.size === 1, `roster ${[...r]}`);
  });
  await check('alice sees presence of bob and carol; bob does not see carol', async () => {
    await Promise.all([alice, bob, carol].map((x) => x.send(xml('presence'))));
    await waitFor(
      () => alice.presences.get(`bob@${domain}`) === 'available' && alice.presences.get(`carol@${domain}`) === 'available',
      5000,
      'presence at alice',
    );
    await new Promise((r) => setTimeout(r, 300));
    assert(!bob.presences.has(`carol@${domain}`), 'bob received carol presence');
  });
  await check('node1 and node2 log in', async () => {
    [node1, node2] = await Promise.all([connect('node1', 'SCRAM-SHA-1'), connect('node2', 'PLAIN')]);
    clients.push(node1, node2);
  });
  await check("node1's roster holds the shared group lab (node2..node64), not stranger", async () => {
    const r = await roster(node1);
    const nodes = lab.accounts.users.filter((u) => u.groups.includes('lab')).length;
    assert(r.get(`node2@${domain}`) === 'both', `node2 missing: ${[...r.keys()].slice(0, 5)}`);
    assert(r.size === nodes - 1, `roster has ${r.size} entries, expected ${nodes - 1}`);
    assert(!r.has(`stranger@${domain}`) && !r.has(`alice@${domain}`), 'foreign JIDs in the group roster');
    return `${r.size} contacts`;
  });
  await check('node1 sees node2 online via the shared group', async () => {
    await Promise.all([node1, node2].map((x) => x.send(xml('presence'))));
    await waitFor(() => node1.presences.get(`node2@${domain}`) === 'available', 5000, 'presence of node2 at node1');
  });
  await check('a message from node1 reaches node2', async () => {
    let got = false;
    node2.on('stanza', (s) => {
      if (s.is('message') && s.getChildText('body') === 'hello from node1') got = true;
    });
    await node1.send(xml('message', { to: node2.jid.toString(), type: 'chat' }, xml('body', {}, 'hello from node1')));
    await waitFor(() => got, 5000, 'message');
  });
  await check('XEP-0215 lists the lab TURN server with its credentials', async () => {
    const res = await withTimeout(
      node1.iqCaller.get(xml('services', { xmlns: 'urn:xmpp:extdisco:2' }), domain),
      10_000,
      'extdisco',
    );
    const turn = res.getChildren('service').find((s) => s.attrs.type === 'turn' && s.attrs.transport === 'udp');
    assert(turn, `no turn service in ${res}`);
    const { host: h, port: p, username, password: pw } = turn.attrs;
    assert(`${h}:${p}` === lab.turn.address && username === lab.turn.username && pw === lab.turn.password, `${turn}`);
    return `${h}:${p}`;
  });
  await check('stranger has an empty roster', async () => {
    const x = await connect('stranger', 'PLAIN');
    clients.push(x);
    const r = await roster(x);
    assert(r.size === 0, `roster ${[...r.keys()]}`);
  });
} finally {
  await Promise.allSettled(clients.map((x) => x.stop()));
}
process.exit(failures ? 1 : 0);
