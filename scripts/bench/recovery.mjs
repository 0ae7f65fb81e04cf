#!/usr/bin/env node
// npm run bench -- recovery: how fast a GroupVPN (real tincan-datapath + tincan-groupvpn nodes in lab
// hosts) recovers from faults: an XMPP server restart (traffic interruption on an existing link, time
// until a new link can be made), a NAT that forgets its mappings (ping gap after `conntrack -F` on h1's
// NAT), a host whose address changes (ping gap), and a peer that vanishes without a goodbye (time until
// the others trim its link), and a NAT that moves to a new public address (10 times: the distribution).
// Writes docs/bench/recovery.json.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { groupBench, groupNode, pingDuring, until } from './lib/group-nodes.mjs';
import { ROOT, nsOf } from './lib/lab-nodes.mjs';
import { figure } from './lib/results.mjs';

const run = promisify(execFile);
const LAB = join(ROOT, 'scripts/lab');

const pingGap = (host, address, seconds, during) => pingDuring(host, address, seconds, during);

await groupBench('recovery', async (labInfo, nodes) => {
const figures = [];
const once = (key, label, ms, note) => figures.push(figure({ key, label, unit: 'ms', median: ms, n: 1, note }));
  const a = groupNode(labInfo, 'h1', '10.254.7.1', 'node51');
  const b = groupNode(labInfo, 'h2', '10.254.7.2', 'node52');
  const c = groupNode(labInfo, 'pub', '10.254.7.3', 'node53');
  nodes.push(a, b, c);
  a.start();
  b.start();
  const setup = await until(async () => (await a.upTo([b.uid])) && (await b.upTo([a.uid])), 60_000, 'h1-h2 link');
  console.log(`h1-h2 link up ${setup} ms after start`);

  // 1. XMPP server restart
  let restartMs = 0;
  const x = await pingGap('h1', b.ip4, 10, async () => {
    const t0 = Date.now();
    await run(LAB, ['server', 'restart', 'prosody'], { timeout: 60_000 });
    restartMs = Date.now() - t0;
  });
  console.log(`XMPP restart (prosody down+up in ${restartMs} ms): longest ping gap on the existing h1-h2 link ${x.gapMs} ms (${x.replies} replies at 50 ms)`);
  once('xmpp_restart_gap_ms', 'XMPP server restart: longest ping gap on an existing link', x.gapMs, `prosody down and up in ${restartMs} ms; pings every 50 ms`);
  const t1 = Date.now();
  c.start();
  const newLink = await until(async () => (await c.upTo([a.uid, b.uid])), 90_000, 'the new node linked to both');
  console.log(`XMPP restart: a node started right after prosody is back linked to both others in ${Date.now() - t1} ms (links up ${newLink} ms)`);
  once('xmpp_restart_new_node_ms', 'XMPP server restart: a node started after it linked to both others', Date.now() - t1);

  // 2. mobility: h1's NAT forgets every mapping
  const m = await pingGap('h1', b.ip4, 15, async () => {
    await run('ip', ['netns', 'exec', nsOf('nat1'), 'conntrack', '-F'], { timeout: 10_000 });
  });
  console.log(`mobility: conntrack -F on nat1: longest ping gap h1 -> h2 ${m.gapMs} ms (${m.replies} replies at 50 ms)`);
  once('nat_flush_gap_ms', "h1's NAT forgets every mapping (conntrack -F): longest ping gap", m.gapMs);

  // 3. mobility: h1's own address changes (10.1.0.2 -> 10.1.0.9 behind the same NAT)
  const sh = (cmd) => run('ip', ['netns', 'exec', nsOf('h1'), 'sh', '-c', cmd], { timeout: 10_000 });
  try {
    const mv = await pingGap('h1', b.ip4, 15, async () => {
      await sh('sysctl -qw net.ipv4.conf.eth0.promote_secondaries=1 && ip addr add 10.1.0.9/24 dev eth0 && '
        + 'ip addr del 10.1.0.2/24 dev eth0 && ip route replace default via 10.1.0.1 src 10.1.0.9');
    });
    console.log(`mobility: h1's address 10.1.0.2 -> 10.1.0.9: longest ping gap h1 -> h2 ${mv.gapMs} ms (${mv.replies} replies at 50 ms)`);
    once('address_change_gap_ms', "h1's address changes (10.1.0.2 → 10.1.0.9): longest ping gap", mv.gapMs);
  } finally {
    await sh('ip addr add 10.1.0.2/24 dev eth0; ip addr del 10.1.0.9/24 dev eth0; ip route replace default via 10.1.0.1; '
      + 'sysctl -qw net.ipv4.conf.eth0.promote_secondaries=0').catch(() => undefined);
  }

  // 4. NAT renumbering: h1's NAT moves to a new public address and forgets its mappings (nothing
  // changes on h1: the link's probes notice, a new link is made beside the old one), 10 times
  const gaps = [];
  try {
    for (let i = 0; i < 10; i++) {
      const back = i % 2 === 1;
      const r = await pingGap('h1', b.ip4, 10, async () => {
        await run(LAB, ['renumber', 'nat1', ...(back ? ['back'] : [])], { timeout: 30_000 });
      });
      gaps.push(r.gapMs);
      console.log(`NAT renumbering ${i + 1}/10 (nat1 ${back ? 'back' : 'moved'}): longest ping gap h1 -> h2 ${r.gapMs} ms (${r.replies} replies at 50 ms)`);
    }
  } finally {
    await run(LAB, ['renumber', 'nat1', 'back'], { timeout: 30_000 }).catch(() => undefined);
  }
  figures.push(figure({
    key: 'nat_renumber_gap_ms', label: "h1's NAT moves to a new public address and forgets its mappings: longest ping gap", unit: 'ms',
    samples: gaps, target: { op: '<=', value: 3000, of: 'max' }, note: '10 repetitions (moved, back, …); pings every 50 ms',
  }));

  // 5. a peer vanishes (kill -9 datapath and controller)
  await until(async () => (await a.upTo([c.uid])) && (await b.upTo([c.uid])), 60_000, 'links to pub');
  const t2 = Date.now();
  c.kill();
  const gone = async (n) => {
    const l = await n.links();
    return !!l && !l.some((x) => x.uid === c.uid);
  };
  await until(async () => (await gone(a)) && (await gone(b)), 90_000, 'the vanished peer trimmed');
  console.log(`vanished peer (kill -9 on pub): its links trimmed by both others after ${Date.now() - t2} ms`);
  once('vanished_peer_trim_ms', 'a peer vanishes (kill -9): its links trimmed by both others after', Date.now() - t2, "the controllers' 10 s departure grace");
  return {
    title: 'How fast a GroupVPN (real datapaths and controllers in lab hosts, proactive links) recovers from faults',
    settings: { nodes: 3, 'ping interval': '50 ms' },
    figures,
    notes: ['one run of each fault (single measurements), except the NAT renumbering: 10 repetitions'],
  };
});
