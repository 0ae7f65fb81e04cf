// set_route, set_transit and set_remote_subnet through the real Datapath (RPC handler, forwarding
// table, get_state), with a stand-in vNIC that records kernel route changes instead of making a TUN.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StateResult, uidFromIp4, type RpcRequest } from '@tincan/protocol';
import { Datapath } from '../src/datapath.js';
import type { Vnic, VnicConfig } from '../src/vnic.js';

const LOCAL = uidFromIp4('10.254.0.1');
const PEER = uidFromIp4('10.254.0.2');
const FAR = uidFromIp4('10.254.0.4');
const from = { address: '127.0.0.1', port: 1, session: 1 };

function fakeVnic(config: VnicConfig, routes: string[], log: string[]): Vnic {
  return {
    config,
    name: config.name,
    writeDrops: 0,
    onPackets() {},
    onError() {},
    write() {},
    close() {},
    async addRoute(cidr: string) {
      if (cidr.startsWith('10.66.')) throw new Error('RTNETLINK answers: Invalid argument');
      log.push(`replace ${cidr}`);
      if (!routes.includes(cidr)) routes.push(cidr);
    },
    async removeRoute(cidr: string) {
      log.push(`del ${cidr}`);
      const i = routes.indexOf(cidr);
      if (i < 0) return false;
      routes.splice(i, 1);
      return true;
    },
  } as unknown as Vnic;
}

describe('Datapath routing verbs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tincan-routing-test-'));
  const routes: string[] = [];
  const log: string[] = [];
  let dp: Datapath;
  let tid = 0;

  beforeAll(async () => {
    dp = await Datapath.start({
      rpc: { address: '127.0.0.1', port: 0 },
      stateDir: dir,
      logger: pino({ level: 'silent' }),
      openVnic: async (config) => fakeVnic(config, routes, log),
    });
  });

  afterAll(async () => {
    await dp.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const call = (r: Record<string, unknown>) => dp.handle({ tid: ++tid, ...r } as RpcRequest, from);
  const code = (p: Promise<unknown>) => p.then(() => 'ok', (e: { code?: string }) => e.code ?? 'thrown');

  it('needs set_local_ip before a subnet; routes and transit may come first', async () => {
    expect(await code(call({ m: 'set_remote_subnet', uid: PEER, subnet: '10.44.0.0/24', remove: false }))).toBe('bad_state');
    expect(await call({ m: 'set_route', uid: FAR, via: PEER })).toEqual({});
    expect(await call({ m: 'set_transit', enabled: true })).toEqual({});
    await call({ m: 'set_local_ip', uid: LOCAL, name: 'tincan-t0', ip4: '10.254.0.1/16', ip6: 'fd50::1/64', mtu: 1280 });
    expect(routes).toEqual([]);
  });

  it('refuses routes via the destination itself and routes to or via this node', async () => {
    expect(await code(call({ m: 'set_route', uid: PEER, via: PEER }))).toBe('bad_request');
    expect(await code(call({ m: 'set_route', uid: LOCAL, via: PEER }))).toBe('bad_request');
    expect(await code(call({ m: 'set_route', uid: PEER, via: LOCAL }))).toBe('bad_request');
  });

  it('maps subnets with a kernel route on the vNIC unless the vNIC subnet covers them, and removes them', async () => {
    const subnet = (uid: string, s: string, remove = false) => call({ m: 'set_remote_subnet', uid, subnet: s, remove });
    expect(await subnet(PEER, '10.44.0.0/24')).toEqual({});
    expect(await subnet(PEER, 'FD44::/64')).toEqual({});
    expect(await subnet(PEER, '10.254.9.0/24')).toEqual({}); // inside 10.254.0.0/16: no kernel route
    expect(routes).toEqual(['10.44.0.0/24', 'fd44::/64']);
    expect(await subnet(FAR, '10.44.0.0/24')).toEqual({}); // moves to FAR; the kernel route stays
    expect(routes).toEqual(['10.44.0.0/24', 'fd44::/64']);
    expect(await code(subnet(PEER, '10.254.0.0/24'))).toBe('bad_request'); // holds our own address
    expect(await code(subnet(PEER, '0.0.0.0/0'))).toBe('bad_request');
    expect(await code(subnet(LOCAL, '10.45.0.0/24'))).toBe('bad_request');
    expect(await code(subnet(PEER, '10.66.0.0/24'))).toBe('internal'); // the kernel refused: not mapped
    log.length = 0;
    expect(await subnet(PEER, '10.44.0.0/24', true)).toEqual({}); // FAR's now: nothing to do
    expect(await subnet(FAR, '10.44.0.0/24', true)).toEqual({});
    expect(await subnet(FAR, '10.44.0.0/24', true)).toEqual({}); // again: a no-op
    expect(await subnet(PEER, '10.254.9.0/24', true)).toEqual({});
    expect(log).toEqual(['del 10.44.0.0/24']);
    expect(routes).toEqual(['fd44::/64']);
  });

  it('reports routes, subnets and transit in get_state, in the strict schema', async () => {
    await call({ m: 'set_route', uid: PEER, via: FAR });
    await call({ m: 'set_route', uid: PEER, via: null });
    const state = StateResult.parse(await call({ m: 'get_state', stats: true }));
    expect(state.routes).toEqual([{ uid: FAR, via: PEER, packets_out: 0 }]);
    expect(state.subnets).toEqual([{ subnet: 'fd44::/64', uid: PEER }]);
    expect(state.transit).toBe(true);
    for (const c of ['framesForwarded', 'framesHopLimit', 'framesRouteLoop', 'framesRelayedIn']) expect(state.counters[c]).toBe(0);
    await call({ m: 'set_transit', enabled: false });
    await call({ m: 'set_route', uid: FAR, via: null });
    const after = StateResult.parse(await call({ m: 'get_state', stats: true }));
    expect(after.transit).toBe(false);
    expect(after.routes).toEqual([]);
  });
});

describe('Datapath set_local_ip', () => {
  it('answers a resent set_local_ip from the first call, while the vNIC is still being opened', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tincan-localip-test-'));
    let opens = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const dp = await Datapath.start({
      rpc: { address: '127.0.0.1', port: 0 },
      stateDir: dir,
      logger: pino({ level: 'silent' }),
      openVnic: async (config) => {
        opens++;
        await gate; // a busy machine: the TUN open and `ip` calls take longer than the client waits
        return fakeVnic(config, [], []);
      },
    });
    try {
      const req = { m: 'set_local_ip', uid: LOCAL, name: 'tincan-t1', ip4: '10.254.0.1/16', mtu: 1280 };
      const first = dp.handle({ tid: 1, ...req } as RpcRequest, from);
      const resent = dp.handle({ tid: 1, ...req } as RpcRequest, from);
      const other = dp.handle({ tid: 2, ...req, ip4: '10.254.0.9/16' } as RpcRequest, from);
      await expect(other).rejects.toMatchObject({ code: 'bad_state' });
      release();
      expect(await first).toEqual({ vnic: 'tincan-t1' });
      expect(await resent).toEqual({ vnic: 'tincan-t1' });
      expect(opens).toBe(1);
      // Once open, the same request is still answered, a different one refused.
      expect(await dp.handle({ tid: 3, ...req } as RpcRequest, from)).toEqual({ vnic: 'tincan-t1' });
    } finally {
      await dp.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('Datapath --offload', () => {
  it('opens the vNIC with offload when asked (and without by default)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tincan-offload-test-'));
    const opened: VnicConfig[] = [];
    try {
      for (const offload of [true, undefined]) {
        const dp = await Datapath.start({
          rpc: { address: '127.0.0.1', port: 0 }, stateDir: dir, logger: pino({ level: 'silent' }), ...(offload ? { offload } : {}),
          openVnic: async (config) => {
            opened.push(config);
            return fakeVnic(config, [], []);
          },
        });
        try {
          const req = { m: 'set_local_ip', uid: LOCAL, name: 'tincan-t2', ip4: '10.254.0.1/16', mtu: 1280 };
          await dp.handle({ tid: 1, ...req } as RpcRequest, from);
        } finally {
          await dp.stop();
        }
      }
      expect(opened.map((c) => c.offload)).toEqual([true, false]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
