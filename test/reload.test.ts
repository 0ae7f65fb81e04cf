// SIGHUP in the lab: a running GroupVPN controller re-reads its config. routing.deny takes effect
// live (the denied member's link goes, the member is then reached through another one), the other
// links stay up untouched, and the controller says what it applied.
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GroupNode, eventually, printLogsOnFailure, type LabInfo } from './support/group-node.js';

const lab = JSON.parse(readFileSync(`${process.env.TINCAN_LAB_DIR ?? '/tmp/tincan-lab'}/lab.json`, 'utf8')) as LabInfo;

describe('GroupVPN: SIGHUP reloads the config with the links up', () => {
  const hosts = ['h1', 'h2', 'lan1'];
  const nodes = hosts.map((host, i) => new GroupNode({
    host, ip4: `10.254.7.${i + 1}`, account: `node${31 + i}`, networkId: 'gv-reload', policy: 'proactive',
  }, lab));
  const [a, b, c] = nodes as [GroupNode, GroupNode, GroupNode];
  printLogsOnFailure(() => nodes);

  beforeAll(async () => {
    for (const n of nodes) n.start();
    await eventually(async () => {
      const counts = await Promise.all(nodes.map(async (n) => (await n.upLinks()).size));
      return counts.every((k) => k === 2);
    }, 90_000, 'a full mesh of three');
  });

  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.remove()));
  });

  it('routing.deny applies live: the denied link goes, the others stay, the denied member is reached through another', async () => {
    const before = await a.upLinks();
    const toB = before.get(b.uid) as { created_ms: number } | undefined;
    expect(toB?.created_ms).toBeTypeOf('number');
    expect(before.has(c.uid)).toBe(true);

    const config = JSON.parse(readFileSync(a.configFile, 'utf8')) as Record<string, unknown>;
    writeFileSync(a.configFile, JSON.stringify({ ...config, routing: { deny: [c.spec.ip4] }, idle_timeout_s: 600 }));
    a.controller!.child.kill('SIGHUP');

    await eventually(async () => a.controller!.log.some((l) => l.includes('reload (SIGHUP): applied')), 10_000, 'the reload logged');
    const applied = JSON.parse(a.controller!.log.find((l) => l.includes('reload (SIGHUP): applied'))!) as { applied: string[] };
    expect(applied.applied.sort()).toEqual(['idle_timeout_s', 'routing.deny']);

    await eventually(async () => !(await a.upLinks()).has(c.uid), 30_000, "a's link to c trimmed");
    const after = await a.upLinks();
    // The link to b is the same link: not re-made.
    expect((after.get(b.uid) as { created_ms: number } | undefined)?.created_ms).toBe(toB!.created_ms);
    expect(await a.ping(b.spec.ip4)).toBe(true);
    // c through b (multihop), with no direct link coming back.
    await eventually(async () => a.ping(c.spec.ip4), 60_000, 'a reaches c through b');
    expect((await a.upLinks()).has(c.uid)).toBe(false);
    expect(a.controller!.running).toBe(true);
  });
});
