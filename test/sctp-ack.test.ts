// SCTP acknowledgements in the lab (docs/architecture.md, "SCTP acknowledgements"): by default a link's
// receiver acknowledges every 8th data packet, so a one-way stream sends about one packet back on the
// underlay per 8 forward; with --sctp-sack-freq 2 (usrsctp's own) one per 2. Counted on the sender's
// own underlay interface during a 3 s inner UDP stream, which has no inner acknowledgements of its own.
// The datapaths read the settings back from usrsctp into get_state. A link between a node with the
// default and one with usrsctp's settings (as during an upgrade) carries TCP both ways at full speed:
// the sender with usrsctp's burst limit of 10 per SACK still covers the default receiver's 8 (a burst
// limit below the receiver's frequency stalls a link at a few Mbit/s: docs/architecture.md).
import { describe, expect, it } from 'vitest';
import { TinCanNode, connectNodes, inHost, iperfTcp, labServers, useNodes } from './support/tincan-node.js';

const { ice, xmpp } = labServers();

function node(host: string, ip4: string, n: number, args: string[] = []): TinCanNode {
  return new TinCanNode({ host, ip4, mtu: 1376, account: { jid: `node${n}@vpn.test`, password: `pw-node${n}` }, datapathArgs: args }, ice);
}

async function underlay(host: string): Promise<{ tx: number; rx: number }> {
  const r = await inHost(host, ['cat', '/sys/class/net/eth0/statistics/tx_packets', '/sys/class/net/eth0/statistics/rx_packets']);
  const [tx, rx] = r.stdout.trim().split('\n').map(Number);
  return { tx: tx!, rx: rx! };
}

/**
 * A 3 s inner UDP stream at 60 Mbit/s from `from` to `to`: the underlay packets `from` sent and
 * received meanwhile (the stream's, its acknowledgements, and the little else the host sends).
 */
async function stream(from: TinCanNode, to: TinCanNode): Promise<{ forward: number; back: number; mbps: number }> {
  const server = inHost(to.spec.host, ['iperf3', '-s', '-1', '-B', to.spec.ip4], 30_000);
  await new Promise((r) => setTimeout(r, 500));
  const before = await underlay(from.spec.host);
  const client = await inHost(from.spec.host, ['iperf3', '-c', to.spec.ip4, '-u', '-b', '60M', '-l', '1300', '-t', '3', '-J'], 30_000);
  const after = await underlay(from.spec.host);
  await server;
  const mbps = (JSON.parse(client.stdout).end.sum_received?.bits_per_second ?? JSON.parse(client.stdout).end.sum.bits_per_second) / 1e6;
  return { forward: after.tx - before.tx, back: after.rx - before.rx, mbps };
}

interface SctpState { sack_freq: number | null; abc_l: number | null; max_burst: number | null }
const sctpOf = async (n: TinCanNode): Promise<SctpState | undefined> => ((await n.state()) as unknown as { sctp?: SctpState }).sctp;

describe('SCTP acknowledgements', () => {
  const h1 = node('h1', '10.254.11.1', 47);
  const h2 = node('h2', '10.254.11.2', 48);
  const lan1 = node('lan1', '10.254.11.5', 49, ['--sctp-sack-freq', '2']);
  const lan2 = node('lan2', '10.254.11.6', 50, ['--sctp-sack-freq', '2']);

  useNodes([h1, h2, lan1, lan2], xmpp);

  it('by default: one packet back per ~8 of a one-way stream, settings read back from usrsctp', async () => {
    await connectNodes(h1, h2);
    expect(await sctpOf(h1)).toEqual({ sack_freq: 8, abc_l: 8, max_burst: 16 });
    const s = await stream(h1, h2);
    const ratio = s.back / s.forward;
    console.log(`default: ${s.forward} packets out, ${s.back} back (${ratio.toFixed(3)}), ${s.mbps.toFixed(0)} Mbit/s received`);
    expect(s.forward).toBeGreaterThan(3000);
    expect(ratio).toBeLessThan(0.3);
  });

  it("with --sctp-sack-freq 2 (usrsctp's own): one back per ~2", async () => {
    await connectNodes(lan1, lan2);
    expect(await sctpOf(lan1)).toEqual({ sack_freq: 2, abc_l: 2, max_burst: 10 });
    const s = await stream(lan1, lan2);
    const ratio = s.back / s.forward;
    console.log(`--sctp-sack-freq 2: ${s.forward} packets out, ${s.back} back (${ratio.toFixed(3)}), ${s.mbps.toFixed(0)} Mbit/s received`);
    expect(s.forward).toBeGreaterThan(3000);
    expect(ratio).toBeGreaterThan(0.4);
  });

  it('between a default node and one with usrsctp\'s settings: TCP both ways, no stall', async () => {
    await connectNodes(h2, lan1);
    const forward = await iperfTcp(h2, lan1);
    const back = await iperfTcp(lan1, h2);
    console.log(`default h2 → lan1 (--sctp-sack-freq 2): ${forward.toFixed(0)} Mbit/s; back: ${back.toFixed(0)} Mbit/s`);
    // A stalled link runs at ~6 Mbit/s (one burst per 20 ms delayed-SACK timer); a working one at hundreds.
    expect(forward).toBeGreaterThan(30);
    expect(back).toBeGreaterThan(30);
  });
});
