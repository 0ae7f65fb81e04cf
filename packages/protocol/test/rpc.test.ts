import { describe, expect, it } from 'vitest';
import {
  MsgType, RPC_VERSION, RpcEvent, RpcRequest, decodeDatagram, encodeControl, encodeDatagram, parseEndpoint, tokenFilePath,
} from '../src/index.js';

const token = 'secret';

describe('RPC datagram framing', () => {
  it('encodes a 2-byte header (version, type) before the payload', () => {
    const d = encodeControl({ a: 1 });
    expect(d[0]).toBe(RPC_VERSION);
    expect(d[1]).toBe(MsgType.Control);
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

describe('RPC request schemas', () => {
  it('accepts each verb with its parameters and fills defaults', () => {
    const uid = 'a'.repeat(40);
    const ok = [
      { m: 'echo', data: 'x' },
      { m: 'set_local_ip', uid, name: 'tincan0', ip4: '10.254.0.1/16', ip6: 'fd50::1/64' },
      { m: 'register_svc', xmpp: { host: 'h', jid: 'n@vpn.test', password: 'p' }, overlay: 'lab' },
      { m: 'create_link', uid },
      { m: 'create_link', uid, remote: { type: 'offer', sdp: 'v=0' }, turn: [{ address: 'h:3478', username: 'u', password: 'p' }] },
      { m: 'trim_link', uid },
      { m: 'set_remote_ip', uid, ip4: '10.254.0.2' },
      { m: 'get_state' },
      { m: 'send_signal', uid, type: 'con_req', data: { any: ['json'] } },
      { m: 'set_cb_endpoint', address: '127.0.0.1', port: 5000 },
      { m: 'set_logging', level: 'debug' },
    ];
    for (const [i, r] of ok.entries()) {
      const parsed = RpcRequest.safeParse({ tid: i, token, ...r });
      expect(parsed.success, JSON.stringify(r)).toBe(true);
    }
    const sl = RpcRequest.parse({ tid: 1, token, m: 'set_local_ip', uid, name: 'tincan0' });
    expect(sl.m === 'set_local_ip' && sl.mtu).toBe(1280);
    const x = RpcRequest.parse({ tid: 1, token, m: 'register_svc', xmpp: { host: 'h', jid: 'n@d', password: 'p' } });
    expect(x.m === 'register_svc' && x.xmpp).toMatchObject({ port: 5222, mechanism: 'SCRAM-SHA-1' });
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
    for (const r of bad) expect(RpcRequest.safeParse({ tid: 1, token, ...r }).success, JSON.stringify(r)).toBe(false);
    expect(RpcRequest.safeParse({ token, m: 'echo' }).success).toBe(false);
    expect(RpcRequest.safeParse({ tid: 1, m: 'echo' }).success).toBe(false);
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
