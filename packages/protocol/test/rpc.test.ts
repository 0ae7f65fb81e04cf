import { describe, expect, it } from 'vitest';
import {
  MsgType, RPC_VERSION, RpcEvent, RpcRequest, StateResult, decodeDatagram, encodePlain, encodeDatagram, isNetworkCidr,
  parseEndpoint, tokenFilePath,
} from '../src/index.js';



describe('RPC datagram framing', () => {
  it('encodes a 2-byte header (version, type) before the payload', () => {
    const d = encodePlain({ a: 1 });
    expect(d[0]).toBe(RPC_VERSION);
    expect(d[1]).toBe(MsgType.Plain);
    expect(JSON.parse(d.subarray(2).toString())).toEqual({ a: 1 });
    const p = encodeDatagram(MsgType.Packet, Buffer.from([9, 9]));
    expect([...p]).toEqual([RPC_VERSION, MsgType.Packet, 9, 9]);
  });

  it('rejects short datagrams, other versions and unknown types with a reason', () => {
    expect(decodeDatagram(Buffer.alloc(0))).toMatchObject({ ok: false });
    expect(decodeDatagram(Buffer.from([1, 1]))).toMatchObject({ ok: false, reason: expect.stringContaining('version') });
    expect(decodeDatagram(Buffer.from([RPC_VERSION, 9]))).toMatchObject({ ok: false, reason: expect.stringContaining('type') });
    const ok = decodeDatagram(Buffer.from([RPC_VERSION, MsgType.InterController, 7]));
    expect(ok.ok && [...ok.payload]).toEqual([7]);
  });
});

describe('trickle ICE schemas', () => {
  const uid = 'a'.repeat(40);
  const host = { candidate: 'a=candidate:1 1 UDP 2122317823 10.1.0.2 5000 typ host', mid: '0' };
  const srflx = { candidate: 'candidate:2 1 UDP 1678769919 198.18.0.11 5000 typ srflx raddr 0.0.0.0 rport 0', mid: '0' };

  it('create_link takes trickle (default false); add_candidate takes 1–32 candidate lines with a mid', () => {
    const c = RpcRequest.parse({ tid: 1, m: 'create_link', uid });
    expect(c.m === 'create_link' && c.trickle).toBe(false);
    const t = RpcRequest.parse({ tid: 1, m: 'create_link', uid, trickle: true });
    expect(t.m === 'create_link' && t.trickle).toBe(true);
    expect(RpcRequest.safeParse({ tid: 1, m: 'add_candidate', uid, candidates: [host, srflx] }).success).toBe(true);
    const bad = [
      [],
      Array(33).fill(host),
      [{ candidate: 'typ host', mid: '0' }],
      [{ candidate: `${host.candidate}\r\na=fingerprint:sha-256 AA`, mid: '0' }],
      [{ ...host, mid: '' }],
      [{ candidate: host.candidate }],
      [{ ...host, extra: 1 }],
      [{ candidate: `${host.candidate} ${'x'.repeat(600)}`, mid: '0' }],
    ];
    for (const candidates of bad) {
      expect(RpcRequest.safeParse({ tid: 1, m: 'add_candidate', uid, candidates }).success, JSON.stringify(candidates).slice(0, 80)).toBe(false);
    }
  });

  it('the candidate event carries one candidate or the end of gathering', () => {
    expect(RpcEvent.safeParse({ event: 'candidate', uid, candidate: srflx }).success).toBe(true);
    expect(RpcEvent.safeParse({ event: 'candidate', uid, done: true }).success).toBe(true);
    expect(RpcEvent.safeParse({ event: 'candidate', uid, done: false }).success).toBe(false);
    expect(RpcEvent.safeParse({ event: 'candidate', uid: 'x', done: true }).success).toBe(false);
  });
});

describe('RPC request schemas', () => {
  it('accepts each verb with its parameters and fills defaults', () => {
    const uid = 'a'.repeat(40);
    const ok = [
      { m: 'echo', data: 'x' },
      { m: 'set_local_ip', uid, name: 'tincan0', ip4: '10.254.0.1/16', ip6: 'fd50::1/64' },
      { m: 'register_svc', xmpp: { host: 'h', jid: 'n@vpn.test', password: 'p' }, overlay: 'lab' },
      { m: 'register_svc', xmpp: { host: 'h', jid: 'n@vpn.test', password: 'p' }, caps: ['trickle', 'x-later'] },
      { m: 'create_link', uid },
      { m: 'create_link', uid, remote: { type: 'offer', sdp: 'v=0' }, turn: [{ address: 'h:3478', username: 'u', password: 'p' }] },
      { m: 'trim_link', uid },
      { m: 'set_remote_ip', uid, ip4: '10.254.0.2' },
      { m: 'set_route', uid, via: 'b'.repeat(40) },
      { m: 'set_route', uid, via: null },
      { m: 'set_route', uid, via: uid }, // well-formed: the datapath refuses it (bad_request)
      { m: 'set_transit', enabled: true },
      { m: 'set_remote_subnet', uid, subnet: '10.44.0.0/24' },
      { m: 'set_remote_subnet', uid, subnet: 'fd00:44::/64', remove: true },
      { m: 'get_state' },
      { m: 'send_signal', uid, type: 'con_req', data: { any: ['json'] } },
      { m: 'set_cb_endpoint', address: '127.0.0.1', port: 5000 },
      { m: 'set_logging', level: 'debug' },
    ];
    for (const [i, r] of ok.entries()) {
      const parsed = RpcRequest.safeParse({ tid: i, ...r });
      expect(parsed.success, JSON.stringify(r)).toBe(true);
    }
    const sl = RpcRequest.parse({ tid: 1, m: 'set_local_ip', uid, name: 'tincan0' });
    expect(sl.m === 'set_local_ip' && sl.mtu).toBe(1280);
    const x = RpcRequest.parse({ tid: 1, m: 'register_svc', xmpp: { host: 'h', jid: 'n@d', password: 'p' } });
    expect(x.m === 'register_svc' && x.xmpp).toMatchObject({ port: 5222, mechanism: 'SCRAM-SHA-1' });
    const sub = RpcRequest.parse({ tid: 1, m: 'set_remote_subnet', uid, subnet: '10.44.0.0/24' });
    expect(sub.m === 'set_remote_subnet' && sub.remove).toBe(false);
  });

  it('register_svc takes at most 8 capabilities, each a lower-case token', () => {
    const xmpp = { host: 'h', jid: 'n@vpn.test', password: 'p' };
    for (const caps of [['Trickle'], ['has space'], [''], ['x'.repeat(33)], ['a_b'], 'trickle', Array.from({ length: 9 }, (_, i) => `c${i}`)]) {
      expect(RpcRequest.safeParse({ tid: 1, m: 'register_svc', xmpp, caps }).success, JSON.stringify(caps)).toBe(false);
    }
    expect(RpcRequest.safeParse({ tid: 1, m: 'register_svc', xmpp, caps: [] }).success).toBe(true);
  });

  it('validates the routing verbs: via required (null removes), boolean transit, subnets without host bits', () => {
    const uid = 'a'.repeat(40);
    const bad = [
      { m: 'set_route', uid }, // via must be given, null to remove
      { m: 'set_route', uid, via: 'xyz' },
      { m: 'set_route', uid: 'A'.repeat(40), via: null },
      { m: 'set_transit' },
      { m: 'set_transit', enabled: 'yes' },
      { m: 'set_transit', enabled: true, extra: 1 },
      { m: 'set_remote_subnet', uid, subnet: '10.44.0.5/24' }, // host bits set
      { m: 'set_remote_subnet', uid, subnet: '10.44.0.128/24' },
      { m: 'set_remote_subnet', uid, subnet: 'fd00:44::1/64' },
      { m: 'set_remote_subnet', uid, subnet: 'fd00:44:0:0:8000::/64' },
      { m: 'set_remote_subnet', uid, subnet: '10.44.0.0' }, // no prefix length
      { m: 'set_remote_subnet', uid, subnet: '10.44.0.0/33' },
      { m: 'set_remote_subnet', uid, subnet: 'not-a-subnet' },
      { m: 'set_remote_subnet', uid, subnet: '10.44.0.0/24', remove: 'yes' },
      { m: 'set_remote_subnet', subnet: '10.44.0.0/24' },
    ];
    for (const r of bad) expect(RpcRequest.safeParse({ tid: 1, ...r }).success, JSON.stringify(r)).toBe(false);
    const hostBits = RpcRequest.safeParse({ tid: 1, m: 'set_remote_subnet', uid, subnet: '10.44.0.5/24' });
    expect(hostBits.success ? '' : hostBits.error.message).toContain('network address');
  });

  it('tells network CIDRs from host addresses with a prefix', () => {
    for (const c of ['10.44.0.0/24', '10.44.0.5/32', '0.0.0.0/0', '10.44.0.128/25', '192.168.0.0/16', 'fd00:44::/64',
      'fd00:44:0:0:8000::/65', '::/0', 'fd00::1/128', 'fc00::/7']) {
      expect(isNetworkCidr(c), c).toBe(true);
    }
    for (const c of ['10.44.0.1/24', '10.44.0.128/24', '1.0.0.0/0', '10.44.0.1/31', 'fd00:44::1/64', 'fd00:44:0:0:8000::/64',
      'fd00::/7', 'x/24', '10.44.0.0']) {
      expect(isNetworkCidr(c), c).toBe(false);
    }
  });

  it('rejects unknown verbs, extra keys, bad UIDs, bad addresses and non-loopback event endpoints', () => {
    const uid = 'a'.repeat(40);
    const bad = [
      { m: 'reboot' },
      { m: 'echo', extra: 1 },
      { m: 'trim_link', uid: 'xyz' },
      { m: 'set_local_ip', uid, name: 'a name with spaces' },
      { m: 'set_local_ip', uid, name: 'tincan0', ip4: '10.254.0.1' },
      { m: 'set_remote_ip', uid, ip4: '300.1.1.1' },
      { m: 'set_cb_endpoint', address: '192.0.2.1', port: 5000 },
      { m: 'create_link', uid, stun: ['no-port'] },
      { m: 'send_signal', uid, type: 'BAD TYPE', data: 1 },
    ];
    for (const r of bad) expect(RpcRequest.safeParse({ tid: 1, ...r }).success, JSON.stringify(r)).toBe(false);
    expect(RpcRequest.safeParse({ m: 'echo' }).success).toBe(false);
    // The old protocol's token field is refused: requests are authenticated by their session's seal.
    expect(RpcRequest.safeParse({ tid: 1, token: 'a'.repeat(48), m: 'echo' }).success).toBe(false);
    expect(RpcRequest.safeParse({ tid: 1, m: 'echo' }).success).toBe(true);
  });

  it('get_state carries routes, subnets and the transit flag (required)', () => {
    const uid = 'a'.repeat(40);
    const state = {
      node: { uid, vnic: 'tincan0', ip4: '10.254.0.1/16', ip6: null, mtu: 1280, offload: false, fingerprint: 'fp', uptime_s: 1, controller: null },
      xmpp: { state: 'unregistered', jid: null, overlay: null },
      links: [],
      peers: [],
      routes: [{ uid: 'b'.repeat(40), via: 'c'.repeat(40), packets_out: 3 }],
      subnets: [{ subnet: '10.44.0.0/24', uid: 'b'.repeat(40) }],
      transit: true,
      counters: { framesForwarded: 1 },
    };
    expect(StateResult.safeParse(state).success).toBe(true);
    for (const key of ['routes', 'subnets', 'transit'] as const) {
      const { [key]: _, ...without } = state;
      expect(StateResult.safeParse(without).success, key).toBe(false);
    }
    expect(StateResult.safeParse({ ...state, routes: [{ uid, via: null, packets_out: 0 }] }).success).toBe(false);
  });

  it("get_state's memory: optional (older datapaths), strict when present", () => {
    const state = {
      node: { uid: null, vnic: null, ip4: null, ip6: null, mtu: null, offload: true, fingerprint: 'fp', uptime_s: 1, controller: null },
      xmpp: { state: 'unregistered', jid: null, overlay: null },
      links: [], peers: [], routes: [], subnets: [], transit: false, counters: {},
    };
    const memory = {
      rss_bytes: 58e6, malloc_arena_limit: 2, native_heap_trims: 3,
      native_heap: { heap_bytes: 9e6, mmapped_bytes: 4e6, in_use_bytes: 10e6, free_bytes: 3e6 },
    };
    expect(StateResult.safeParse(state).success).toBe(true);
    expect(StateResult.safeParse({ ...state, memory }).success).toBe(true);
    expect(StateResult.safeParse({ ...state, memory: { ...memory, malloc_arena_limit: null, native_heap: null } }).success).toBe(true);
    expect(StateResult.safeParse({ ...state, memory: { ...memory, malloc_arena_limit: 1.5 } }).success).toBe(false);
    expect(StateResult.safeParse({ ...state, memory: { ...memory, extra: 1 } }).success).toBe(false);
    const { native_heap_trims: _, ...withoutTrims } = memory;
    expect(StateResult.safeParse({ ...state, memory: withoutTrims }).success).toBe(false);
  });

  it('validates events', () => {
    expect(RpcEvent.safeParse({ event: 'link', uid: 'b'.repeat(40), state: 'up' }).success).toBe(true);
    expect(RpcEvent.safeParse({ event: 'link', uid: 'b'.repeat(40), state: 'sideways' }).success).toBe(false);
  });
});

describe('endpoints', () => {
  it('parses address:port forms', () => {
    expect(parseEndpoint('127.0.0.1:5801')).toEqual({ address: '127.0.0.1', port: 5801 });
    expect(parseEndpoint('[::1]:5801')).toEqual({ address: '::1', port: 5801 });
    expect(() => parseEndpoint('127.0.0.1')).toThrow();
    expect(() => parseEndpoint('127.0.0.1:0')).toThrow();
    expect(() => parseEndpoint('127.0.0.1:70000')).toThrow();
    expect(tokenFilePath('/var/lib/tincan/', 5801)).toBe('/var/lib/tincan/rpc-5801.token');
  });
});

describe('links that survive: repair and health on the RPC', () => {
  const uid = 'a'.repeat(40);
  it('create_link repair and trim_link spare are booleans, false by default; garbage is refused', () => {
    const ok = RpcRequest.safeParse({ tid: 1, m: 'create_link', uid, repair: true });
    expect(ok.success && ok.data.m === 'create_link' && ok.data.repair).toBe(true);
    const d = RpcRequest.safeParse({ tid: 1, m: 'trim_link', uid });
    expect(d.success && d.data.m === 'trim_link' && d.data.spare).toBe(false);
    for (const bad of ['yes', 1, null, {}]) {
      expect(RpcRequest.safeParse({ tid: 1, m: 'create_link', uid, repair: bad }).success).toBe(false);
      expect(RpcRequest.safeParse({ tid: 1, m: 'trim_link', uid, spare: bad }).success).toBe(false);
    }
  });

  it('link_health events carry a known health only; link events a literal repair flag', () => {
    expect(RpcEvent.safeParse({ event: 'link_health', uid, health: 'suspect', reason: 'no answer to probes' }).success).toBe(true);
    for (const health of ['dead', '', 1, null]) expect(RpcEvent.safeParse({ event: 'link_health', uid, health }).success).toBe(false);
    expect(RpcEvent.safeParse({ event: 'link_health', uid: 'zz', health: 'ok' }).success).toBe(false);
    expect(RpcEvent.safeParse({ event: 'link_health', uid, health: 'ok', extra: 1 }).success).toBe(false);
    expect(RpcEvent.safeParse({ event: 'link', uid, state: 'failed', repair: true }).success).toBe(true);
    expect(RpcEvent.safeParse({ event: 'link', uid, state: 'failed', repair: false }).success).toBe(false);
  });
});
