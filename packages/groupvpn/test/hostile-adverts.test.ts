import { createSocket, type Socket } from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { RoutingConfig, uidFromIp4, type Uid } from '@tincan/protocol';
import { ManualClock, Subnet4 } from '@tincan/controller';
import { captureLogger } from '../../controller/test/test-helpers.js';
import { GroupRouting } from '../src/routing.js';
import { recordingSupervisor } from './helpers.js';

/**
 * Hostile controller datagrams against a real ControllerChannel (UDP) and router, with the
 * controllers on loopback addresses: 127.0.0.1 is the node under test, 127.0.0.2 its neighbour. A
 * fake supervisor records the datapath calls (the lab covers the real one, test/routing.test.ts).
 */
const SELF = '10.254.0.1';
const NEIGHBOUR = '10.254.0.4';
const uid = (ip: string): Uid => uidFromIp4(ip);

async function freePort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function until(what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 2_000 && !ok(); i++) await new Promise((r) => setTimeout(r, 5));
  if (!ok()) throw new Error(`never happened: ${what}`);
}

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

async function setup(routing: Partial<RoutingConfig> = {}, members: Iterable<string> = [NEIGHBOUR, '10.254.0.2', '10.254.0.3']) {
  const port = await freePort();
  const clock = new ManualClock();
  const { supervisor, calls } = recordingSupervisor();
  const memberSet = new Set([...members].map(uid));
  const addresses = new Map<Uid, string>([[uid(SELF), '127.0.0.1'], [uid(NEIGHBOUR), '127.0.0.2']]);
  const r = new GroupRouting({
    uid: uid(SELF),
    ip4: SELF,
    subnet: new Subnet4(`${SELF}/16`),
    networkId: 'lab',
    vnicName: 'tincan-test0',
    mtu: 1280,
    routing: RoutingConfig.parse({ allow_unauthenticated: true, ...routing }),
    supervisor,
    clock,
    log: captureLogger().logger,
    pollIntervalMs: 5_000,
    isMember: (u) => memberSet.has(u),
    memberJid: () => null,
    stateDir: '/nonexistent',
    nodeKey: async () => null,
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
  const sender: Socket = createSocket('udp4');
  await new Promise<void>((res) => sender.bind(port, '127.0.0.2', res));
  cleanup.push(() => sender.close());
  const send = (doc: unknown): void => {
    sender.send(typeof doc === 'string' || Buffer.isBuffer(doc) ? doc : JSON.stringify(doc), port, '127.0.0.1');
  };
  const advert = (routes: unknown[]) => ({ t: 'routes', from: uid(NEIGHBOUR), overlay: 'lab', routes });
  return { r, clock, calls, send, advert, memberSet };
}

describe('controller channel: hostile datagrams', () => {
  it('a route advert with a mapped IPv6 subnet is a counted drop, not a crash', async () => {
    const { r, send, advert } = await setup();
    const ch = r.channel!;
    send(advert([{ uid: uid(NEIGHBOUR), hops: 0, ip4: NEIGHBOUR, subnets: ['::ffff:1.2.3.4/96'] }]));
    // A good advert after it: the channel is still there and still works.
    send(advert([{ uid: uid(NEIGHBOUR), hops: 0, ip4: NEIGHBOUR }]));
    await until('both datagrams handled', () => ch.counters.messages_received + ch.counters.messages_malformed >= 2);
    expect(ch.counters.messages_malformed).toBe(1);
    expect(ch.counters.messages_received).toBe(1);
    expect(r.router!.route(uid(NEIGHBOUR))).toMatchObject({ hops: 1, ip4: NEIGHBOUR });
  });
});
