// Sealed relayed frames and key-bound links, in the lab: three real datapaths driven over their RPC
// (scripted controllers). A (h1) reaches C (h2) only through B (pub): A–B and B–C are links, A and C
// never link. B runs with --debug-dump-forwarded, so its own record of what it relayed can be read.
import { X509Certificate, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ip4ToNumber, isSealedFrame, uidToBytes } from '@tincan/protocol';
import { readForwardDump } from '@tincan/datapath/debug-dump';
import { ns } from './harness/namespace.js';
import {
  NsProcess, connectNodes, eventuallyValue, inHost, labServers, linkOf, peerCert, scriptedNode, useNodes, type TinCanNode,
} from './support/tincan-node.js';

const servers = labServers();
const dumpDir = mkdtempSync(join(tmpdir(), 'tincan-sealed-relay-'));
const DUMP = join(dumpDir, 'pub-forwarded.pcap');
const PORT = 40555;

/** The datapath counters this file reads (docs/rpc.md, "Counters"): all present in get_state. */
type Counted = Record<
  'sealedOut' | 'sealedIn' | 'sealedAuthFailed' | 'sealedReplays' | 'sealedNoKeyOut' | 'framesRelayedIn' | 'framesForwarded' |
  'framesSpoofedAddress' | 'framesSpoofedUid' | 'injectedDropped' | 'linkCertMismatch',
  number
>;
const counters = async (n: TinCanNode): Promise<Counted> => (await n.state()).counters as Counted;

/** Waits until counter `key` of `n` exceeds `than`; returns it. */
function counterAbove(n: TinCanNode, key: keyof Counted, than: number): Promise<number> {
  return eventuallyValue(async () => {
    const v = (await counters(n))[key];
    return v > than ? v : undefined;
  }, 15_000, `${n.spec.host} ${key} > ${than}`);
}

/** An IPv4 UDP packet (header checksum right, UDP checksum 0: none). */
function udp4(src: string, dst: string, port: number, payload: Buffer): Buffer {
  const p = Buffer.alloc(28 + payload.length);
  p[0] = 0x45;
  p.writeUInt16BE(p.length, 2);
  p[8] = 64;
  p[9] = 17;
  p.writeUInt32BE(ip4ToNumber(src), 12);
  p.writeUInt32BE(ip4ToNumber(dst), 16);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += p.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  p.writeUInt16BE(~sum & 0xffff, 10);
  p.writeUInt16BE(40000, 20);
  p.writeUInt16BE(port, 22);
  p.writeUInt16BE(8 + payload.length, 24);
  payload.copy(p, 28);
  return p;
}

/** A UDP listener on C's virtual address: resolves with the payload (hex) of the first datagram. */
async function listen(host: string, address: string): Promise<{ got: Promise<string>; stop: () => Promise<unknown> }> {
  const script = `const s = require('node:dgram').createSocket('udp4');
s.on('message', (m) => { console.log('got ' + m.toString('hex')); process.exit(0); });
s.bind(${PORT}, '${address}', () => console.log('ready'));`;
  const p = new NsProcess(ns(host), `${host}/listener`, process.execPath, ['-e', script]);
  const lines: string[] = [];
  let onLine: (() => void) | null = null;
  p.child.stdout!.on('data', (d: Buffer) => {
    lines.push(...d.toString().split('\n').filter(Boolean));
    onLine?.();
  });
  const waitLine = (prefix: string) => new Promise<string>((resolve) => {
    const check = () => {
      const l = lines.find((x) => x.startsWith(prefix));
      if (l) resolve(l.slice(prefix.length));
    };
    onLine = check;
    check();
  });
  await waitLine('ready');
  return { got: waitLine('got '), stop: () => p.stop() };
}

function sendUdp(host: string, to: string, payload: Buffer): Promise<unknown> {
  const script = `const s = require('node:dgram').createSocket('udp4');
s.send(Buffer.from('${payload.toString('hex')}', 'hex'), ${PORT}, '${to}', () => s.close());`;
  return inHost(host, [process.execPath, '-e', script]);
}

describe('relayed frames are sealed end to end; links and addresses are bound to keys', () => {
  const a = scriptedNode(servers, 'h1', '10.254.0.1', 1);
  const b = scriptedNode(servers, 'pub', '10.254.0.6', 6, ['--debug-dump-forwarded', DUMP]);
  const c = scriptedNode(servers, 'h2', '10.254.0.2', 2);
  useNodes([a, b, c], servers.xmpp);
  afterAll(() => rmSync(dumpDir, { recursive: true, force: true }));

  /** Sealed frames A → C in B's dump of what it forwarded. */
  const forwardedAtoC = (): Buffer[] => readForwardDump(readFileSync(DUMP))
    .filter((f) => f.subarray(0, 20).equals(uidToBytes(a.uid)) && f.subarray(20, 40).equals(uidToBytes(c.uid)));

  it('A pings C through B: sealed by A, forwarded unopened by B, opened by C; links verified against the trusted keys', async () => {
    await connectNodes(a, b);
    await connectNodes(b, c);
    // A and C know each other's addresses and reach each other via B; transit on everywhere (GroupVPN).
    await a.call('set_remote_ip', { uid: c.uid, ip4: c.spec.ip4, ip6: c.ip6 });
    await c.call('set_remote_ip', { uid: a.uid, ip4: a.spec.ip4, ip6: a.ip6 });
    await a.call('set_route', { uid: c.uid, via: b.uid });
    await c.call('set_route', { uid: a.uid, via: b.uid });
    for (const n of [a, b, c]) await n.call('set_transit', { enabled: true });

    // Without trusted certificates nothing can be sealed: A drops its packets for C, counted.
    const noKey = (await counters(a)).sealedNoKeyOut;
    await inHost('h1', ['ping', '-c', '1', '-W', '1', c.spec.ip4]).catch(() => undefined);
    expect(await counterAbove(a, 'sealedNoKeyOut', noKey)).toBeGreaterThan(noKey);

    // The controllers' part (after admission): each trusts the certificate the other's presence carries.
    const certC = await peerCert(a, c);
    const certA = await peerCert(c, a);
    const fpC = new X509Certificate(Buffer.from(certC, 'base64')).fingerprint256;
    expect(await a.call('set_peer_cert', { uid: c.uid, cert: certC })).toEqual({ fingerprint: fpC });
    await c.call('set_peer_cert', { uid: a.uid, cert: certA });
    // B trusts A's and C's: its links to them were made with those keys, so they stay up.
    await b.call('set_peer_cert', { uid: a.uid, cert: await peerCert(b, a) });
    await b.call('set_peer_cert', { uid: c.uid, cert: await peerCert(b, c) });
    expect((await linkOf(b, a)).state).toBe('up');
    expect((await linkOf(b, c)).state).toBe('up');
    expect((await counters(b)).linkCertMismatch).toBe(0);
    // node-datachannel reports the certificate DTLS verified: B logged C's at link up.
    const logged = b.datapath.log.map((l) => { try { return JSON.parse(l) as Record<string, unknown>; } catch { return {}; } })
      .filter((o) => o.msg === 'link up: the certificate DTLS verified' && String(o.peer) === c.uid.slice(0, 12));
    expect(logged.map((o) => o.dtlsFingerprint)).toContain(fpC);

    const before = { a: await counters(a), b: await counters(b), c: await counters(c) };
    const ping = await inHost('h1', ['ping', '-c', '3', '-i', '0.2', '-W', '2', c.spec.ip4]);
    expect(ping.stdout).toMatch(/3 received/);
    const after = { a: await counters(a), b: await counters(b), c: await counters(c) };
    expect(after.a.sealedOut - before.a.sealedOut).toBeGreaterThanOrEqual(3);
    expect(after.c.sealedIn - before.c.sealedIn).toBeGreaterThanOrEqual(3);
    expect(after.c.sealedOut - before.c.sealedOut).toBeGreaterThanOrEqual(3); // the replies, sealed for A
    expect(after.a.framesRelayedIn - before.a.framesRelayedIn).toBeGreaterThanOrEqual(3);
    expect(after.b.framesForwarded - before.b.framesForwarded).toBeGreaterThanOrEqual(6);
    expect(after.b.sealedIn + after.b.sealedOut).toBe(0); // B opened and sealed nothing
    for (const n of [a, c]) expect(after[n === a ? 'a' : 'c'].sealedAuthFailed).toBe(0);
    expect((await a.state()).links.some((l) => l.uid === c.uid)).toBe(false);
  });

  it('the relay never holds the packet in plaintext: a marker A sends reaches C but is nowhere in B\'s dump', async () => {
    const marker = randomBytes(16);
    const listener = await listen('h2', c.spec.ip4);
    try {
      await sendUdp('h1', c.spec.ip4, marker);
      expect(await listener.got).toBe(marker.toString('hex'));
    } finally {
      await listener.stop();
    }
    const dump = readFileSync(DUMP);
    const frames = readForwardDump(dump);
    expect(frames.length).toBeGreaterThanOrEqual(7);
    expect(frames.every((f) => isSealedFrame(f))).toBe(true);
    // The marker's frame is there (44-byte packet + 74 bytes of sealed framing), its content is not.
    expect(forwardedAtoC().some((f) => f.length === 44 + 74)).toBe(true);
    expect(dump.includes(marker)).toBe(false);
    expect(dump.includes(Buffer.from(ip4ToNumber(c.spec.ip4).toString(16).padStart(8, '0'), 'hex'))).toBe(false); // no inner header either
  });

  it('a relayed frame B alters is dropped by C (authentication), and one B replays too (replay window)', async () => {
    const frame = forwardedAtoC().find((f) => f.length === 44 + 74)!;
    const before = await counters(c);
    const forwarded = (await counters(b)).framesForwarded;
    // B (its controller injecting into its datapath) sends the frame on once more, unchanged.
    await b.command({ inject: Buffer.from(frame).toString('hex') });
    await counterAbove(c, 'sealedReplays', before.sealedReplays);
    // ... and altered: its counter (so C has not seen it), its counter and ciphertext, its epoch. (The
    // ciphertext alone altered keeps a counter C has seen: refused as a replay before decryption.)
    for (const bits of [[55], [55, 80], [45]]) {
      const altered = Buffer.from(frame);
      for (const at of bits) altered[at]! ^= 0x04;
      const failed = (await counters(c)).sealedAuthFailed;
      await b.command({ inject: altered.toString('hex') });
      await counterAbove(c, 'sealedAuthFailed', failed);
    }
    const after = await counters(c);
    expect(after.sealedAuthFailed - before.sealedAuthFailed).toBe(3);
    expect(after.sealedReplays - before.sealedReplays).toBe(1);
    expect(after.sealedIn).toBe(before.sealedIn);
    expect((await counters(b)).framesForwarded - forwarded).toBe(4); // B did forward all four
  });

  it('B cannot get a packet from A\'s or C\'s address delivered to C, directly or claimed as relayed', async () => {
    const before = await counters(c);
    const hex = (src: string, dst: string, packet: Buffer) => Buffer.concat([uidToBytes(src), uidToBytes(dst), packet]).toString('hex');
    const payload = randomBytes(16);
    // Directly: B's own frame to C, from A's address, and from C's own.
    await b.command({ inject: hex(b.uid, c.uid, udp4(a.spec.ip4, c.spec.ip4, PORT, payload)) });
    await b.command({ inject: hex(b.uid, c.uid, udp4(c.spec.ip4, c.spec.ip4, PORT, payload)) });
    await counterAbove(c, 'framesSpoofedAddress', before.framesSpoofedAddress + 1);
    // Claimed as relayed for A, in plaintext, on B's link to C.
    await b.command({ inject: hex(a.uid, c.uid, udp4(a.spec.ip4, c.spec.ip4, PORT, payload)) });
    await counterAbove(c, 'framesSpoofedUid', before.framesSpoofedUid);
    const after = await counters(c);
    expect(after.framesSpoofedAddress - before.framesSpoofedAddress).toBe(2);
    expect(after.framesSpoofedUid - before.framesSpoofedUid).toBe(1);
    expect(after.framesRelayedIn).toBe(before.framesRelayedIn);
    // And B's datapath sends no plaintext through a relay: C's own frame for A (A reached via B).
    const injected = (await counters(c)).injectedDropped;
    await c.command({ inject: hex(b.uid, a.uid, udp4(b.spec.ip4, a.spec.ip4, PORT, payload)) });
    expect(await counterAbove(c, 'injectedDropped', injected)).toBe(injected + 1);
  });

  it('a link comes up only with the trusted key: a description with another is refused, a link with another is closed', async () => {
    // C is told to trust A's certificate for B: its link to B (made with B's key) goes down at once.
    const mismatch = (await counters(c)).linkCertMismatch;
    const since = c.events.length;
    await c.call('set_peer_cert', { uid: b.uid, cert: await peerCert(c, a) });
    const down = await c.waitEvent((e) => e.event === 'link' && e.uid === b.uid && e.state === 'down', 10_000, 'link to B down', since);
    expect(down.reason).toBe('peer certificate not trusted');
    expect((await counters(c)).linkCertMismatch).toBe(mismatch + 1);
    // B offers a new link: C's create_link with B's description (B's real fingerprint) is refused.
    const errors = c.events.length;
    await b.call('trim_link', { uid: c.uid });
    const offer = await b.call<{ description: { type: string; sdp: string } }>('create_link', { uid: c.uid, ...b.ice });
    await b.call('send_signal', { uid: c.uid, type: 'con_req', data: { description: offer.description } });
    const err = await c.waitEvent((e) => e.event === 'driver_error', 15_000, 'create_link refused', errors);
    expect(String(err.message)).toMatch(/another certificate/);
    expect((await counters(c)).linkCertMismatch).toBe(mismatch + 2);
    expect((await c.state()).links.some((l) => l.uid === b.uid && l.state === 'up')).toBe(false);
  });
});
