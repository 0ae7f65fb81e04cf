// GroupVPN end to end, in the lab: real tincan-datapath + tincan-groupvpn pairs in lab hosts behind
// cone, symmetric and no NAT, with the lab's prosody and coturn.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GroupNode, eventually, printLogsOnFailure, type LabInfo } from './support/group-node.js';

const lab = JSON.parse(readFileSync(`${process.env.TINCAN_LAB_DIR ?? '/tmp/tincan-lab'}/lab.json`, 'utf8')) as LabInfo;

async function allPairsPing(nodes: GroupNode[]): Promise<string[]> {
  const failures: string[] = [];
  await Promise.all(nodes.map(async (a) => {
    for (const b of nodes) {
      if (a !== b && !(await a.ping(b.spec.ip4))) failures.push(`${a.spec.host} -> ${b.spec.host}`);
    }
  }));
  return failures;
}

describe('GroupVPN, proactive: a full mesh across cone, symmetric and no NAT', () => {
  const hosts = ['h1', 'h2', 'h3', 'pub', 'lan1', 'lan2'];
  const nodes = hosts.map((host, i) => new GroupNode({
    host, ip4: `10.254.1.${i + 1}`, account: `node${11 + i}`, networkId: 'gv-mesh', policy: 'proactive',
  }, lab));
  const [h1, h2, h3, pub, lan1, lan2] = nodes as [GroupNode, GroupNode, GroupNode, GroupNode, GroupNode, GroupNode];
  printLogsOnFailure(() => nodes);

  beforeAll(async () => {
    const t0 = Date.now();
    for (const n of nodes) n.start();
    await eventually(async () => {
      const counts = await Promise.all(nodes.map(async (n) => (await n.upLinks()).size));
      return counts.every((c) => c === nodes.length - 1);
    }, 90_000, 'a full mesh (every node with 5 links up)');
    console.log(`proactive full mesh of ${nodes.length} up ${Date.now() - t0} ms after the processes were started`);
  });

  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.remove()));
  });

  it('every member pings every other member by virtual IP, and IPv6 works too', async () => {
    expect(await allPairsPing(nodes)).toEqual([]);
    expect(await h2.ping(h1.ip6)).toBe(true);
  });

  it('every first link trickled both descriptions: each member announced trickle in its presence', async () => {
    await eventually(async () => nodes.every((n) => (n.controllerStatus()?.trickle.descriptions_trickled ?? 0) >= nodes.length - 1),
      10_000, 'every node\'s status file counting a trickled description per link');
    for (const n of nodes) expect(n.controllerStatus()!.trickle.descriptions_whole, n.spec.host).toBe(0);
  });

  it('relays the NATed-to-symmetric-NAT pairs through TURN, links the others directly, the LAN pair by host candidates', async () => {
    // pub has no NAT, so even h3 behind its symmetric NAT reaches it directly (as on the internet).
    for (const n of [h1, h2, lan1, lan2]) {
      const links = await n.upLinks();
      const toH3 = links.get(h3.uid)!;
      expect([toH3.local_candidate, toH3.remote_candidate], `${n.spec.host}-h3`).toContain('relay');
    }
    const h1Links = await h1.upLinks();
    for (const peer of [h2, pub, lan1, lan2]) {
      const l = h1Links.get(peer.uid)!;
      expect(l.local_candidate, `h1-${peer.spec.host}`).not.toBe('relay');
      expect(l.remote_candidate, `h1-${peer.spec.host}`).not.toBe('relay');
    }
    const lan = (await lan1.upLinks()).get(lan2.uid)!;
    // A LAN address learned from a connectivity check shows as peer-reflexive: same path.
    expect(['host', 'prflx']).toContain(lan.local_candidate);
    expect(['host', 'prflx']).toContain(lan.remote_candidate);
    expect((lan as unknown as { remote_address: string }).remote_address).toMatch(/^(10\.4\.0\.3|\[fd00:4::3\]):\d+$/);
  });

  it('restarting a node\'s controller, then its datapath, restores it without touching the other links', async () => {
    const others = nodes.filter((n) => n !== h1);
    const snapshot = async () => {
      const m = new Map<string, number | null>();
      for (const n of others) {
        for (const [uid, l] of await n.upLinks()) {
          if (uid !== h1.uid) m.set(`${n.spec.host}:${uid}`, (l as unknown as { connected_ms: number | null }).connected_ms);
        }
      }
      return m;
    };
    const before = await snapshot();
    expect(before.size).toBe(others.length * (others.length - 1));

    await h1.controller!.stop('SIGKILL');
    h1.startController();
    await new Promise((r) => setTimeout(r, 3000));
    expect((await h1.upLinks()).size).toBe(5); // adopted, not torn down
    expect(await h1.ping(h2.spec.ip4)).toBe(true);

    await h1.datapath!.stop('SIGKILL');
    h1.startDatapath();
    await eventually(async () => (await h1.upLinks()).size === 5, 90_000, 'h1 relinked to all 5 members');
    await eventually(async () => (await allPairsPing([h1, h2, h3, pub])).length === 0, 30_000, 'h1 reachable again');

    expect(await snapshot()).toEqual(before);
  });
});

describe('GroupVPN, on-demand, and admission', () => {
  const a = new GroupNode({ host: 'h1', ip4: '10.254.2.1', account: 'node21', networkId: 'gv-od', policy: 'on-demand', idleTimeoutS: 6 }, lab);
  const b = new GroupNode({ host: 'h2', ip4: '10.254.2.2', account: 'node22', networkId: 'gv-od', policy: 'on-demand', idleTimeoutS: 6 }, lab);
  const stranger = new GroupNode({ host: 'pub', ip4: '10.254.2.9', account: 'stranger', networkId: 'gv-od', policy: 'proactive' }, lab);
  const nodes = [a, b, stranger];
  printLogsOnFailure(() => nodes);

  beforeAll(async () => {
    for (const n of nodes) n.start();
    await eventually(async () => {
      try {
        const [sa, sb] = await Promise.all([a.status(), b.status()]);
        return sa.peers.some((p) => p.uid === b.uid) && sb.peers.some((p) => p.uid === a.uid);
      } catch {
        return false;
      }
    }, 60_000, 'a and b online and seeing each other');
  });

  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.remove()));
  });

  it('makes no link before traffic, one on the first ping, and trims it when idle', async () => {
    await new Promise((r) => setTimeout(r, 3000));
    expect((await a.status()).links).toEqual([]);
    expect(await a.ping(b.spec.ip4, 3)).toBe(true);
    expect((await a.upLinks()).has(b.uid)).toBe(true);
    await eventually(async () => (await a.status()).links.length === 0 && (await b.status()).links.length === 0, 40_000, 'the idle link trimmed');
  });

  it('a node whose XMPP account is not in the group cannot link to or reach a member', async () => {
    expect(await stranger.ping(a.spec.ip4, 3)).toBe(false);
    const sa = await a.status();
    expect(sa.links.some((l) => l.uid === stranger.uid)).toBe(false);
    expect(sa.peers.some((p) => p.uid === stranger.uid)).toBe(false);
    expect((await stranger.status()).links.filter((l) => l.state === 'up')).toEqual([]);
  });
});
