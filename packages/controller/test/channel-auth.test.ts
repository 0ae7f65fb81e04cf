import { createSocket, type Socket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { uidFromIp4, type ControllerMessage, type Uid } from '@tincan/protocol';
import { ChannelKeyring, channelMac, loadNodeKey, verifyChannelMac } from '../src/channel-auth.js';
import { systemClock } from '../src/clock.js';
import { ControllerChannel } from '../src/controller-channel.js';
import { captureLogger, makeNodeIdentity } from './test-helpers.js';

/** Real P-256 node identities made with openssl, as the datapath makes them (node-key.pem, node certificate). */
const root = mkdtempSync(join(tmpdir(), 'tincan-channel-auth-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const A = uidFromIp4('10.254.0.1');
const B = uidFromIp4('10.254.0.2');
const C = uidFromIp4('10.254.0.3');

async function identity(uid: Uid): Promise<{ ring: ChannelKeyring; certB64: string }> {
  const dir = mkdtempSync(join(root, 'node-'));
  const { certB64 } = makeNodeIdentity(dir, 'node'); // dir/node-key.pem, where the datapath keeps it
  const ring = new ChannelKeyring(uid);
  ring.setPrivateKey(await loadNodeKey(dir));
  expect(ring.hasPrivateKey).toBe(true);
  return { ring, certB64 };
}

async function pair() {
  const a = await identity(A);
  const b = await identity(B);
  return { a, b };
}

const advert = (from: Uid, hops = 1): ControllerMessage => ({
  t: 'routes', from, overlay: 'lab', routes: [{ uid: from, hops: 0, ip4: '10.254.0.1' }, { uid: C, hops }],
});

describe('channel keys and MACs (real P-256 keys)', () => {
  it('both ends of a pair derive the same key from ECDH of their node keys and certificates', async () => {
    const { a, b } = await pair();
    const kab = a.ring.key(B, b.certB64);
    const kba = b.ring.key(A, a.certB64);
    expect(kab).toHaveLength(32);
    expect(kab!.equals(kba!)).toBe(true);
    // Another pair has another key.
    const c = await identity(C);
    expect(c.ring.key(A, a.certB64)!.equals(kab!)).toBe(false);
    expect(c.ring.key(A, a.certB64)!.equals(a.ring.key(C, c.certB64)!)).toBe(true);
    // A peer's trusted certificate changes (an accepted new key): the key follows it.
    expect(a.ring.key(B, c.certB64)!.equals(kab!)).toBe(false);
    expect(a.ring.key(B, b.certB64)!.equals(kab!)).toBe(true);
  });

  it('knows no key without a trusted certificate or without its own key', async () => {
    const { a, b } = await pair();
    expect(a.ring.key(B, null)).toBeNull();
    const noKey = new ChannelKeyring(A);
    expect(noKey.key(B, b.certB64)).toBeNull();
    expect(await loadNodeKey(join(root, 'nowhere'))).toBeNull();
  });

  it('refuses garbage certificates, counted', async () => {
    const { a } = await pair();
    for (const junk of ['', 'not base64 at all', Buffer.from('garbage').toString('base64'), 'A'.repeat(4096)]) {
      expect(a.ring.key(C, junk)).toBeNull();
      expect(a.ring.key(C, junk)).toBeNull(); // counted once per certificate
    }
    expect(a.ring.counters.certs_refused).toBe(4);
  });

  it('a MAC verifies only for the same message, sender, receiver and key', async () => {
    const { a, b } = await pair();
    const key = a.ring.key(B, b.certB64)!;
    const msg = advert(A);
    const signed = { ...msg, mac: channelMac(key, A, B, msg) } as ControllerMessage;
    expect(verifyChannelMac(b.ring.key(A, a.certB64)!, A, B, signed)).toBe(true);
    expect(verifyChannelMac(key, A, B, { ...signed, routes: [...signed.routes.slice(0, 1), { uid: C, hops: 2 }] })).toBe(false);
    expect(verifyChannelMac(key, B, A, signed)).toBe(false); // reflected back to its sender
    expect(verifyChannelMac(key, A, C, signed)).toBe(false); // replayed to another node
    expect(verifyChannelMac(Buffer.alloc(32, 7), A, B, signed)).toBe(false);
    expect(verifyChannelMac(key, A, B, msg)).toBe(false); // no MAC
    expect(verifyChannelMac(key, A, B, { ...signed, mac: 'A'.repeat(43) })).toBe(false);
  });
});

describe('ControllerChannel: authenticated, exclusive', () => {
  const sockets: (Socket | ControllerChannel)[] = [];
  afterEach(() => {
    for (const s of sockets.splice(0)) s.close();
  });

  async function freePort(): Promise<number> {
    const s = createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
    const port = s.address().port;
    s.close();
    return port;
  }

  async function channels(keys: { a: (u: Uid) => Buffer | null; b: (u: Uid) => Buffer | null }, allowUnauthenticated = false) {
    const port = await freePort();
    const addressOf = (u: Uid): string => (u === A ? '127.0.0.1' : u === B ? '127.0.0.2' : '127.0.0.3');
    const got: { a: ControllerMessage[]; b: ControllerMessage[] } = { a: [], b: [] };
    const make = (uid: Uid, which: 'a' | 'b') => {
      const ch = new ControllerChannel({
        uid, mtu: 1280, port, address: addressOf(uid), addressOf, clock: systemClock, log: captureLogger().logger,
        channelKey: keys[which], allowUnauthenticated, onMessage: (m) => void got[which].push(m),
      });
      sockets.push(ch);
      ch.open();
      return ch;
    };
    const ca = make(A, 'a');
    const cb = make(B, 'b');
    await until(() => ca.bound && cb.bound);
    return { port, ca, cb, got };
  }

  async function until(ok: () => boolean): Promise<void> {
    for (let i = 0; i < 1_000 && !ok(); i++) await new Promise((r) => setTimeout(r, 5));
    if (!ok()) throw new Error('timed out waiting');
  }

  it('delivers signed messages; drops unsigned, forged and reflected ones from a peer whose key it knows', async () => {
    const { a, b } = await pair();
    const { port, ca, cb, got } = await channels({ a: (u) => a.ring.key(u, u === B ? b.certB64 : null), b: (u) => b.ring.key(u, u === A ? a.certB64 : null) });
    ca.send(B, advert(A));
    await until(() => got.b.length === 1);
    expect(got.b[0]!.routes).toEqual(advert(A).routes);
    expect(cb.counters).toMatchObject({ messages_received: 1, messages_unauthenticated: 0, messages_bad_mac: 0 });
    // Another local user on A's host sends from A's address (any other port): no key, no MAC that verifies.
    const intruder = createSocket('udp4');
    sockets.push(intruder);
    await new Promise<void>((r) => intruder.bind(0, '127.0.0.1', r));
    const forged = [advert(A, 1), { ...advert(A, 1), mac: 'A'.repeat(43) }, { ...advert(A, 1), mac: channelMac(Buffer.alloc(32), A, B, advert(A, 1)) }];
    for (const f of forged) intruder.send(JSON.stringify(f), port, '127.0.0.2');
    await until(() => cb.counters.messages_bad_mac === 3);
    expect(got.b).toHaveLength(1);
    // A MAC B made for a message to A, sent to B from A's address: it does not verify (the direction is
    // in the MAC).
    intruder.send(JSON.stringify({ ...advert(A), mac: channelMac(b.ring.key(A, a.certB64)!, B, A, advert(A)) }), port, '127.0.0.2');
    await until(() => cb.counters.messages_bad_mac === 4);
    expect(got.b).toHaveLength(1);
  });

  it('the port cannot be bound a second time, not even with SO_REUSEADDR', async () => {
    const { a, b } = await pair();
    const { port } = await channels({ a: (u) => a.ring.key(u, u === B ? b.certB64 : null), b: (u) => b.ring.key(u, u === A ? a.certB64 : null) });
    const thief = createSocket({ type: 'udp4', reuseAddr: true });
    sockets.push(thief);
    const err = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
      thief.once('error', resolve);
      thief.bind(port, '127.0.0.2', () => resolve(null));
    });
    expect(err?.code).toBe('EADDRINUSE');
  });

  it('without a key: refuses to send and to receive unless unauthenticated messages are allowed', async () => {
    const none = () => null;
    const strict = await channels({ a: none, b: none });
    strict.ca.send(B, advert(A));
    expect(strict.ca.counters.send_no_key).toBe(1);
    const intruder = createSocket('udp4');
    sockets.push(intruder);
    await new Promise<void>((r) => intruder.bind(0, '127.0.0.1', r));
    intruder.send(JSON.stringify(advert(A)), strict.port, '127.0.0.2');
    await until(() => strict.cb.counters.messages_no_key === 1);
    expect(strict.got.b).toHaveLength(0);
    for (const s of sockets.splice(0)) s.close();

    const open = await channels({ a: none, b: none }, true);
    open.ca.send(B, advert(A));
    await until(() => open.got.b.length === 1);
    expect(open.cb.counters).toMatchObject({ messages_received: 1, messages_unauthenticated: 1 });
  });
});
