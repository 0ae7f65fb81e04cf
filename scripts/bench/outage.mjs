#!/usr/bin/env node
// npm run bench -- outage: an XMPP server outage of 30 s and of 3 minutes (prosody stopped with SIGTERM,
// so that it announces every session unavailable on its way down, then started again) while h1 pings
// h2 every 0.2 s over an existing proactive GroupVPN link (real datapaths and controllers in lab hosts):
// the pings lost, whether the link was replaced, and how long a node started after the outage takes
// to link to both. Writes docs/bench/outage.json.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { groupBench, groupNode, pingDuring, until } from './lib/group-nodes.mjs';
import { ROOT } from './lib/lab-nodes.mjs';
import { figure } from './lib/results.mjs';

const run = promisify(execFile);
const LAB = join(ROOT, 'scripts/lab');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

await groupBench('outage', async (labInfo, nodes) => {
const figures = [];
  const a = groupNode(labInfo, 'h1', '10.254.13.1', 'node54', 'bench-outage');
  const b = groupNode(labInfo, 'h2', '10.254.13.2', 'node55', 'bench-outage');
  const c = groupNode(labInfo, 'pub', '10.254.13.3', 'node56', 'bench-outage');
  nodes.push(a, b, c);
  a.start();
  b.start();
  await until(async () => (await a.upTo([b.uid])) && (await b.upTo([a.uid])), 60_000, 'h1-h2 link');
  const connected = async () => (await a.links())?.find((l) => l.uid === b.uid)?.connected_ms ?? null;
  for (const downS of [30, 180]) {
    await until(async () => (await a.upTo([b.uid])) && (await b.upTo([a.uid])), 60_000, 'h1-h2 link');
    const before = await connected();
    const r = await pingDuring('h1', b.ip4, downS + 40, async () => {
      await run(LAB, ['server', 'stop', 'prosody', '--graceful'], { timeout: 60_000 });
      await sleep(downS * 1000);
      await run(LAB, ['server', 'start', 'prosody'], { timeout: 60_000 });
    }, 0.2);
    const kept = (await connected()) === before;
    const lostPct = r.sent > 0 ? (100 * (r.sent - r.replies)) / r.sent : NaN;
    console.log(`XMPP server down ${downS} s: ${r.sent - r.replies}/${r.sent} pings lost (${lostPct.toFixed(2)} %), link ${kept ? 'kept' : 'replaced'}`);
    figures.push(figure({
      key: `outage_${downS}s_lost_pct`, label: `XMPP server down ${downS} s: pings lost on an existing link`, unit: '%', median: lostPct, n: 1,
      target: { op: '<=', value: 1 }, note: `${r.sent - r.replies} of ${r.sent} (every 0.2 s, from 1 s before the stop to 40 s after it came back); link ${kept ? 'kept' : 'replaced'}`,
    }));
  }
  const t0 = Date.now();
  c.start();
  await until(async () => c.upTo([a.uid, b.uid]), 180_000, 'the new node linked to both');
  console.log(`after the outage, a node started linked to both others in ${Date.now() - t0} ms`);
  figures.push(figure({ key: 'outage_new_node_ms', label: 'after the 3-minute outage: a node started linked to both others', unit: 'ms', median: Date.now() - t0, n: 1, note: 'the others\' XMPP reconnect backoff is up to 60 s' }));
  return {
    title: 'Existing links through an XMPP server outage (prosody stopped gracefully: it announces everyone unavailable)',
    settings: { nodes: 3, 'ping interval': '200 ms', outages: '30 s, 180 s' },
    figures,
    notes: ['one run of each outage'],
  };
});
