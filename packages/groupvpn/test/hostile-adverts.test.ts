import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { RoutingConfig, uidFromIp4, type ControllerMessage, type OverlayRoute, type Uid } from '@tincan/protocol';
import { ChannelKeyring, ManualClock, Subnet4, channelMac, loadNodeKey } from '@tincan/controller';
import { captureLogger, makeNodeIdentity } from '../../controller/test/test-helpers.js';
import { GroupRouting } from '../src/routing.js';
import { recordingSupervisor } from './helpers.js';

/**
 * Hostile controller datagrams against a real ControllerChannel (UDP) and router, with the
 * controllers on loopback addresses: 127.0.0.1 is the node under test, 127.0.0.2 its neighbour, a
 * member that turned hostile and holds a real node key (its datagrams carry valid MACs). A fake
 * supervisor records the datapath calls (the lab covers the real datapath, test/routing.test.ts).
 */
const SELF = '10.254.0.1';
const NEIGHBOUR = '10.254.0.4';
const OTHER = '10.254.0.2'; // another member, granted 10.45.0.0/24
const uid = (ip: string): Uid => uidFromIp4(ip);
const ROUTERS = { [NEIGHBOUR]: ['10.44.0.0/24'], [OTHER]: ['10.45.0.0/24'] };

const root = mkdtempSync(join(tmpdir(), 'tincan-hostile-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A node's state directory with node-key.pem (as the datapath keeps it) and its certificate. */
function nodeIdentity(name: string): { dir: string; certB64: string } {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  return { dir, certB64: makeNodeIdentity(dir, 'node').certB64 };
}

async function freePort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function until(what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 4_000 && !ok(); i++) await new Promise((r) => setTimeout(r, 5));
  if (!ok()) throw new Error(`never happened: ${what}`);
}

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

async function setup(routing: Partial<RoutingConfig> = {}) {
  const port = await freePort();
  const clock = new ManualClock();
  const { supervisor, calls } = recordingSupervisor();
  const members = new Set([NEIGHBOUR, OTHER, '10.254.0.3'].map(uid));
  const addresses = new Map<Uid, string>([[uid(SELF), '127.0.0.1'], [uid(NEIGHBOUR), '127.0.0.2']]);
  const self = nodeIdentity('self');
  const neighbour = nodeIdentity('neighbour');
  const r = new GroupRouting({
    uid: uid(SELF),
    ip4: SELF,
    subnet: new Subnet4(`${SELF}/16`),
    networkId: 'lab',
    vnicName: 'tincan-test0',
    mtu: 1280,
    routing: RoutingConfig.parse({ routers: ROUTERS, ...routing }),
    supervisor,
    clock,
    log: captureLogger().logger,
    pollIntervalMs: 5_000,
    isMember: (u) => members.has(u),
    memberCert: (u) => (u === uid(NEIGHBOUR) && members.has(u) ? neighbour.certB64 : null),
    stateDir: self.dir,
    mapPeer: async () => undefined,
    unmapPeer: () => undefined,
    linked: () => false,
    peerIp4: () => undefined,
    hostSubnets: () => [],
    channel: { port, address: '127.0.0.1', addressOf: (u) => addresses.get(u) ?? '127.0.0.254' },
  });
  cleanup.push(() => r.stop());
  await r.attached();
  await until('the channel is bound', () => r.channel!.bound);
  r.linkUp(uid(NEIGHBOUR));
  // The neighbour's side of the key: its own node key and our certificate.
  const ring = new ChannelKeyring(uid(NEIGHBOUR));
  ring.setPrivateKey(await loadNodeKey(neighbour.dir));
  const key = ring.key(uid(SELF), self.certB64)!;
  const sender: Socket = createSocket('udp4');
  await new Promise<void>((res) => sender.bind(port, '127.0.0.2', res));
  cleanup.push(() => sender.close());
  /** Sends raw bytes, or a message signed with the neighbour's real key. */
  const send = (doc: Buffer | ControllerMessage): void => {
    sender.send(Buffer.isBuffer(doc) ? doc : JSON.stringify({ ...doc, mac: channelMac(key, doc.from, uid(SELF), doc) }), port, '127.0.0.1');
  };
  const advert = (routes: OverlayRoute[], from = uid(NEIGHBOUR)): ControllerMessage => ({ t: 'routes', from, overlay: 'lab', routes });
  /** Datagrams the channel has dealt with (accepted or dropped). */
  const handled = (): number => {
    const c = r.channel!.counters;
    return c.messages_received + c.messages_malformed + c.messages_wrong_sender + c.messages_bad_mac + c.messages_no_key;
  };
  return { r, clock, calls, send, advert, handled };
}

describe('controller channel: hostile datagrams', () => {
  it('a route advert with a mapped IPv6 subnet is a counted drop, not a crash', async () => {
    const { r, send, advert } = await setup();
    const ch = r.channel!;
    // Not through send(): the schema refuses to sign it (as it refuses to parse it).
    const bad = { ...advert([{ uid: uid(NEIGHBOUR), hops: 0, ip4: NEIGHBOUR }]), routes: [{ uid: uid(NEIGHBOUR), hops: 0, ip4: NEIGHBOUR, subnets: ['::ffff:1.2.3.4/96'] }] };
    send(Buffer.from(JSON.stringify(bad)));
    // A good advert after it: the channel is still there and still works.
    send(advert([{ uid: uid(NEIGHBOUR), hops: 0, ip4: NEIGHBOUR }]));
    await until('both datagrams handled', () => ch.counters.messages_received + ch.counters.messages_malformed >= 2);
    expect(ch.counters.messages_malformed).toBe(1);
    expect(ch.counters.messages_received).toBe(1);
    expect(r.router!.route(uid(NEIGHBOUR))).toMatchObject({ hops: 1, ip4: NEIGHBOUR });
  });

  it('20,000 malformed and hostile datagrams from a member: nobody crashes, every kind is counted, learned routes stay bounded', async () => {
    const { r, calls, send, advert, handled } = await setup({ max_routes_per_neighbour: 64, max_routes: 128 });
    const self = uid(NEIGHBOUR);
    const own = (subnets: string[]): OverlayRoute => ({ uid: self, hops: 0, ip4: NEIGHBOUR, subnets });
    const madeUp = (): OverlayRoute => ({ uid: randomBytes(20).toString('hex'), hops: 1 + (randomBytes(1)[0]! % 9) });
    const raw = (doc: unknown): Buffer => Buffer.from(JSON.stringify(doc));
    const unsigned = (routes: unknown[]): Buffer => raw({ t: 'routes', from: self, overlay: 'lab', routes });
    /** Each kind: how to make one datagram of it. */
    const kinds: Record<string, () => Buffer | ControllerMessage> = {
      garbage: () => randomBytes(1 + (randomBytes(1)[0]! % 200)),
      not_an_advert: () => raw({ t: 'hello', from: self, routes: 'all of them' }),
      too_many_routes: () => unsigned(Array.from({ length: 9 }, () => ({ uid: self, hops: 0 }))),
      mapped_ipv6: () => unsigned([{ ...own([]), subnets: ['::ffff:1.2.3.4/96'] }]),
      default_routes: () => unsigned([{ ...own([]), subnets: ['0.0.0.0/0', '::/0'] }]),
      half_default: () => unsigned([{ ...own([]), subnets: ['0.0.0.0/1', '128.0.0.0/1'] }]),
      wrong_sender: () => advert([{ uid: uid(OTHER), hops: 0, ip4: OTHER }], uid(OTHER)),
      unsigned: () => unsigned([own(['10.44.0.0/24'])]),
      overlay_subnet: () => advert([own(['10.254.0.0/16', '10.254.9.0/24'])]),
      slice_of_other: () => advert([own(['10.45.0.128/25', '10.45.0.0/24'])]),
      made_up_members: () => advert(Array.from({ length: 8 }, madeUp)),
      false_origin: () => advert([{ uid: uid(OTHER), hops: 0, ip4: OTHER }]),
      bad_binding: () => advert([{ uid: uid(OTHER), hops: 1, ip4: '10.254.0.3' }]),
      other_overlay: () => ({ ...advert([own([])]), overlay: 'elsewhere' }),
    };
    const names = Object.keys(kinds);
    const total = 20_000;
    // Sent in rounds of 100 that the receiver finishes before the next (loopback UDP would drop a flood).
    for (let i = 0; i < total; i += 100) {
      for (let j = i; j < i + 100; j++) send(kinds[names[j % names.length]!]!());
      await until(`${i + 100} datagrams handled`, () => handled() >= i + 100);
    }
    const per = (k: string): number => Math.floor(total / names.length) + (names.indexOf(k) < total % names.length ? 1 : 0);
    const c = r.status().counters;
    expect(handled()).toBe(total);
    expect(c.messages_malformed).toBe(per('garbage') + per('not_an_advert') + per('too_many_routes') + per('mapped_ipv6') + per('default_routes') + per('half_default'));
    expect(c.messages_wrong_sender).toBe(per('wrong_sender'));
    expect(c.messages_bad_mac).toBe(per('unsigned'));
    expect(c.messages_other_overlay).toBe(per('other_overlay'));
    expect(c.subnets_not_granted).toBe(2 * per('overlay_subnet') + 2 * per('slice_of_other'));
    expect(c.routes_dropped_not_member).toBe(8 * per('made_up_members'));
    expect(c.routes_dropped_false_origin).toBe(per('false_origin'));
    expect(c.route_bindings_refused).toBe(per('bad_binding'));
    expect(Object.keys(r.channel!.failures)).toEqual([]); // no handler threw
    // Bounded: only members are learned, within the caps.
    const sizes = r.router!.learnedSizes();
    expect(sizes.total).toBeLessThanOrEqual(3);
    expect(r.status().learned).toMatchObject({ cap_total: 128, cap_per_neighbour: 64 });
    // Nothing hostile reached the datapath: no subnet at all (the neighbour never advertised its grant).
    expect(calls.filter((x) => x.m === 'set_remote_subnet')).toEqual([]);
    // And the channel still works: the neighbour's real grant is installed.
    send(advert([own(['10.44.0.0/24'])]));
    await until('the granted subnet', () => r.status().subnets.some((s) => s.subnet === '10.44.0.0/24'));
  }, 120_000);
});
