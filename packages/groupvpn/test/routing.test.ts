import { describe, expect, it } from 'vitest';
import { RoutingConfig, uidFromIp4, type Uid } from '@tincan/protocol';
import { ManualClock, Subnet4 } from '@tincan/controller';
import { captureLogger } from '../../controller/test/test-helpers.js';
import { GroupRouting } from '../src/routing.js';
import { recordingSupervisor } from './helpers.js';

/**
 * What GroupRouting installs in the datapath for the routes its neighbours advertise. A fake
 * supervisor records the calls; the real datapath and channel are covered by test/routing.test.ts.
 */
function setup(routing: Partial<RoutingConfig> = {}, grantedSubnets?: (uid: Uid) => string[] | null) {
  const clock = new ManualClock();
  const { supervisor, calls } = recordingSupervisor();
  const mapped = new Map<Uid, string>();
  const linked = new Set<Uid>();
  const self = '10.254.0.1';
  const r = new GroupRouting({
    uid: uidFromIp4(self),
    ip4: self,
    subnet: new Subnet4('10.254.0.1/16'),
    networkId: 'lab',
    vnicName: 'tincan-test0',
    mtu: 1280,
    routing: RoutingConfig.parse(routing),
    supervisor,
    clock,
    log: captureLogger().logger,
    pollIntervalMs: 5_000,
    isMember: () => true,
    memberCert: () => null,
    stateDir: '/nonexistent',
    nodeKey: async () => null,
    mapPeer: async (uid, ip4) => void mapped.set(uid, ip4),
    unmapPeer: (uid) => void mapped.delete(uid),
    linked: (uid) => linked.has(uid),
    peerIp4: (u) => mapped.get(u),
    hostSubnets: () => ['10.1.0.0/24', '2001:db8:18::/64'],
    ...(grantedSubnets ? { grantedSubnets } : {}),
  });
  return { r, clock, calls, mapped, linked };
}

const uid = (ip: string): Uid => uidFromIp4(ip);
const routesOf = (calls: { m: string; params: Record<string, unknown> }[]) =>
  calls.filter((c) => c.m === 'set_route').map((c) => c.params);

describe('GroupRouting', () => {
  it('maps and routes members reached through a neighbour, and withdraws them', async () => {
    const { r, clock, calls, mapped, linked } = setup();
    const [n, far] = [uid('10.254.0.4'), uid('10.254.0.2')];
    linked.add(n);
    r.linkUp(n);
    r.router!.receive(n, [{ uid: n, hops: 0, ip4: '10.254.0.4' }, { uid: far, hops: 1, ip4: '10.254.0.2' }]);
    await clock.advance(10);
    expect(routesOf(calls)).toEqual([{ uid: far, via: n }]);
    expect(mapped.get(far)).toBe('10.254.0.2');
    expect(r.routed(far)).toBe(true);
    r.router!.receive(n, [{ uid: far, hops: 16 }]);
    await clock.advance(10);
    expect(routesOf(calls).at(-1)).toEqual({ uid: far, via: null });
    expect(mapped.has(far)).toBe(false);
    r.stop();
  });

  it('refuses a route whose address is not the one its UID is derived from, or outside the subnet', async () => {
    const { r, clock, calls, mapped } = setup();
    const n = uid('10.254.0.4');
    r.linkUp(n);
    r.router!.receive(n, [
      { uid: uid('10.254.0.2'), hops: 1, ip4: '10.254.0.3' }, // lies about its address
      { uid: uid('192.168.1.1'), hops: 1, ip4: '192.168.1.1' }, // not in the VPN's subnet
    ]);
    await clock.advance(10);
    expect(routesOf(calls)).toEqual([]);
    expect(mapped.size).toBe(0);
    expect(r.status().counters.route_bindings_refused).toBeGreaterThanOrEqual(2);
    r.stop();
  });

  it('installs advertised subnets granted to the member and inside routing.accept only, never over the VPN, our own or the host\'s', async () => {
    const grant = ['10.44.0.0/24', 'fd00:44::/64', '10.50.0.0/16', '10.1.0.0/16', '8.8.0.0/16'];
    const { r, clock, calls } = setup({ advertise: ['10.50.0.0/24'], routers: { '10.254.0.4': grant } });
    const n = uid('10.254.0.4');
    r.linkUp(n);
    r.router!.receive(n, [{
      uid: n, hops: 0, ip4: '10.254.0.4',
      subnets: ['10.44.0.0/24', '10.254.9.0/24', '10.50.0.0/16', '8.8.8.0/24', '0.0.0.0/0', 'fd00:44::/64', '10.1.0.128/25'],
    }]);
    await clock.advance(10);
    const installed = calls.filter((c) => c.m === 'set_remote_subnet').map((c) => c.params.subnet);
    expect(installed.sort()).toEqual(['10.44.0.0/24', 'fd00:44::/64']);
    // Not granted: 10.254.9.0/24, 0.0.0.0/0. Granted but refused here: 10.50.0.0/16 (ours), 8.8.8.0/24
    // (outside routing.accept), 10.1.0.128/25 (this host's own LAN).
    expect(r.status().counters.subnets_not_granted).toBe(2);
    expect(r.status().counters.subnets_refused).toBe(3);
    r.linkClosed(n);
    await clock.advance(10);
    const removed = calls.filter((c) => c.m === 'set_remote_subnet' && c.params.remove).map((c) => c.params.subnet);
    expect(removed.sort()).toEqual(['10.44.0.0/24', 'fd00:44::/64']);
    r.stop();
  });

  it('with a membership CA, the subnets a member\'s certificate grants decide, not routing.routers', async () => {
    const n = uid('10.254.0.4');
    // The config would grant 10.44.0.0/16; the certificate grants 10.60.0.0/24 only.
    const { r, clock, calls } = setup({ routers: { '10.254.0.4': ['10.44.0.0/16'] } }, (u) => (u === n ? ['10.60.0.0/24'] : []));
    r.linkUp(n);
    r.router!.receive(n, [{ uid: n, hops: 0, ip4: '10.254.0.4', subnets: ['10.44.0.0/24', '10.60.0.0/24'] }]);
    await clock.advance(10);
    const installed = calls.filter((c) => c.m === 'set_remote_subnet').map((c) => c.params.subnet);
    expect(installed).toEqual(['10.60.0.0/24']);
    expect(r.status().counters.subnets_not_granted).toBe(1);
    r.stop();
  });

  it('wants a shortcut for routed traffic: any in a mesh, above shortcut_pps when structured; never to denied members', () => {
    const far = uid('10.254.0.2');
    const denied = uid('10.254.0.3');
    const state = (a: number, b: number) => ({ routes: [{ uid: far, via: uid('10.254.0.4'), packets_out: a }, { uid: denied, via: uid('10.254.0.4'), packets_out: b }] });
    const mesh = setup({ deny: ['10.254.0.3'] }).r;
    expect(mesh.shortcuts(state(0, 0) as never)).toEqual([]);
    expect(mesh.shortcuts(state(1, 500) as never)).toEqual([far]);
    expect(mesh.denied(denied)).toBe(true);
    const ring = setup({ topology: 'structured', shortcut_pps: 50 }).r;
    ring.shortcuts(state(0, 0) as never);
    expect(ring.shortcuts(state(100, 0) as never)).toEqual([]); // 20 packets/s over the 5 s poll
    expect(ring.shortcuts(state(400, 0) as never)).toEqual([far]); // 60 packets/s
    mesh.stop();
    ring.stop();
  });
});
