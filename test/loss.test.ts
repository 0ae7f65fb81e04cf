// A link under random loss (docs/architecture.md, "Loss"): 2 % of the wire packets lost each way at
// h1's NAT. The link's probes see it and its TCP super-packets go segmented, one wire packet each, so a
// lost wire packet costs the one segment it carried and the others of its super-packet arrive: the
// messages the receiver takes are about the wire packets that arrived (whole super-packets would lose
// ~40 % of them). usrsctp keeps its congestion window through the loss (the inner TCP answers it).
// The same transfer runs at 0 % and 2 % in this test; only their ratio is checked.
import { describe, expect, it } from 'vitest';
import { impair } from './harness/lab.js';
import { TinCanNode, connectNodes, eventuallyValue, iperfTcp, labServers, linkOf, useNodes } from './support/tincan-node.js';

const { ice, xmpp } = labServers();
/** Throughput at 2 % loss over that at 0 %, at least. Whole super-packets and usrsctp's halving: ~0.03. */
const LEAST_RATIO = 0.1;

function node(host: string, ip4: string, n: number): TinCanNode {
  return new TinCanNode({ host, ip4, mtu: 1376, account: { jid: `node${n}@vpn.test`, password: `pw-node${n}` } }, ice);
}

describe('a link at 2 % loss', () => {
  const h1 = node('h1', '10.254.12.1', 45);
  const pub = node('pub', '10.254.12.2', 46);

  useNodes([h1, pub], xmpp);

  it('sends super-packets segmented, delivers the segments that arrived, and keeps a share of the clean throughput', async () => {
    await connectNodes(h1, pub);
    const clean = await iperfTcp(h1, pub);
    expect((await linkOf(h1, pub)).lossy).toBe(false);
    expect(((await h1.state()) as unknown as { sctp?: { loss_backoff: boolean } }).sctp?.loss_backoff).toBe(false);

    await impair('nat1', { loss: 2 });
    // The probes of a transfer see the loss (nothing probes an idle link): a few seconds of one.
    for (let i = 0; i < 4 && !(await linkOf(h1, pub)).lossy; i++) await iperfTcp(h1, pub);
    await eventuallyValue(async () => (await linkOf(h1, pub)).lossy, 3_000, 'h1 sees the loss');

    const sent0 = (await linkOf(h1, pub)).stats.compact_out!;
    const got0 = (await linkOf(pub, h1)).stats.compact_in!;
    const c0 = (await h1.state()).counters;
    const lossy = await iperfTcp(h1, pub);
    const sent = (await linkOf(h1, pub)).stats.compact_out! - sent0;
    const got = (await linkOf(pub, h1)).stats.compact_in! - got0;
    const c1 = (await h1.state()).counters;
    const segmented = c1.offloadSegmentedOut! - c0.offloadSegmentedOut!;
    const whole = c1.offloadSuperPacketsOut! - c0.offloadSuperPacketsOut!;
    console.log(`iperf3 TCP h1 → pub: ${clean.toFixed(0)} Mbit/s clean, ${lossy.toFixed(0)} at 2 % loss (×${(lossy / clean).toFixed(2)}); ` +
      `${segmented} super-packets segmented, ${whole} whole; messages h1 → pub: ${sent} sent, ${got} taken (${(100 * got / sent).toFixed(1)} %)`);
    expect(lossy / clean).toBeGreaterThanOrEqual(LEAST_RATIO);
    expect(segmented).toBeGreaterThan(100);
    expect(whole).toBeLessThan(segmented / 10);
    // One wire packet a message: ~98 % of them arrive (2 % lost on the way); whole super-packets ~60 %.
    expect(got / sent).toBeGreaterThan(0.9);
  });
});
