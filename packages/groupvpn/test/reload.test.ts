import { beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '@tincan/controller';
import { FakeNet, node, unmappedFrame, type TestNode } from './helpers.js';
import { settings } from './helpers.js';

// A config reload (SIGHUP, runController) hands the new settings to GroupVpnController.reload(): the
// live ones take effect, links stay up. The signal path itself: packages/cli/test/commands.test.ts.

let clock: ManualClock;
let net: FakeNet;

beforeEach(() => {
  clock = new ManualClock();
  net = new FakeNet(clock);
});

const offersTo = (n: TestNode, peer: TestNode) => n.dp.callsOf('create_link').filter((c) => !c.params.remote && c.params.uid === peer.uid).length;
const linksMade = (n: TestNode) => n.dp.callsOf('create_link').length;

describe('GroupVpnController.reload', () => {
  it('on-demand → proactive: links to every member are made, the link already up stays as it is', async () => {
    const a = await node(net, clock, '10.254.0.1');
    const b = await node(net, clock, '10.254.0.2');
    const c = await node(net, clock, '10.254.0.3');
    a.dp.emitPacket(unmappedFrame(a.uid, a.ip4, b.ip4));
    await clock.advance(2000);
    expect(a.ctl.signaling.state(b.uid)).toBe('up');
    expect(a.ctl.signaling.state(c.uid)).toBe('idle');
    const toB = offersTo(a, b);
    const bLinks = linksMade(b);

    a.ctl.reload(settings(a.ip4, { link_policy: 'proactive', idle_timeout_s: 60 }));
    await clock.advance(10_000);

    expect(a.ctl.policy.mode).toBe('proactive');
    expect(a.ctl.status().policy).toEqual({ link_policy: 'proactive', max_links: 32, idle_timeout_s: 60 });
    expect(a.ctl.signaling.state(c.uid)).toBe('up');
    expect(a.ctl.signaling.state(b.uid)).toBe('up');
    // Not made again on either side.
    expect(offersTo(a, b)).toBe(toB);
    expect(linksMade(b)).toBe(bLinks);
    expect(a.dp.links.has(b.uid)).toBe(true);
  });

  it('routing.deny trims the newly denied member\'s link only; a lower max_links trims the least recently used', async () => {
    const cfg = { link_policy: 'proactive' } as const;
    const a = await node(net, clock, '10.254.0.1', cfg);
    const b = await node(net, clock, '10.254.0.2', cfg);
    const c = await node(net, clock, '10.254.0.3', cfg);
    const d = await node(net, clock, '10.254.0.4', cfg);
    await clock.advance(10_000);
    for (const p of [b, c, d]) expect(a.ctl.signaling.state(p.uid)).toBe('up');
    const made = linksMade(a);

    a.ctl.reload(settings(a.ip4, { ...cfg, routing: { ...settings(a.ip4).routing, deny: [c.ip4] } }));
    await clock.advance(10_000);
    expect(a.ctl.signaling.state(c.uid)).toBe('idle');
    expect(a.ctl.routing.denied(c.uid)).toBe(true);
    expect(a.ctl.signaling.state(b.uid)).toBe('up');
    expect(a.ctl.signaling.state(d.uid)).toBe('up');
    expect(linksMade(a)).toBe(made); // nothing re-made
    await clock.advance(60_000);
    expect(a.ctl.signaling.state(c.uid)).toBe('idle'); // and c's retries are refused

    a.dp.traffic(d.uid); // d is busy, b is not
    a.ctl.reload(settings(a.ip4, { ...cfg, max_links: 1, routing: { ...settings(a.ip4).routing, deny: [c.ip4] } }));
    await clock.advance(10_000);
    expect(a.ctl.signaling.state(b.uid)).toBe('idle');
    expect(a.ctl.signaling.state(d.uid)).toBe('up');
    expect(a.ctl.counters.links_trimmed_lru).toBe(1);
  });
});
