// The RPC server over a real loopback UDP socket, with a scripted handler (the lab tests drive the
// real datapath behind it, including 10,000 hostile datagrams).
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MsgType, RPC_VERSION, encodeControl, encodeDatagram, type RpcRequest } from '@tincan/protocol';
import { Counters } from '../src/counters.js';
import { RpcError, RpcServer } from '../src/rpc-server.js';

describe('RpcServer', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tincan-rpc-test-'));
  const tokenFile = join(dir, 'rpc.token');
  const counters = new Counters();
  const injected: Buffer[] = [];
  let server: RpcServer;
  let token: string;
  let client: dgram.Socket;
  const answers: Record<string, unknown>[] = [];

  beforeAll(async () => {
    server = await RpcServer.start({ address: '127.0.0.1', port: 0 }, tokenFile, counters, pino({ level: 'silent' }));
    server.setHandler({
      async handle(req: RpcRequest) {
        if (req.m === 'echo') {
          if (req.data === 'fail') throw new RpcError('bad_state', 'asked to fail');
          if (req.data === 'crash') throw new Error('boom');
          if (req.data === 'huge') return { data: 'x'.repeat(70_000) };
          return { data: req.data ?? '' };
        }
        return {};
      },
      inject(frame) {
        injected.push(Buffer.from(frame));
      },
    });
    token = readFileSync(tokenFile, 'utf8').trim();
    client = dgram.createSocket('udp4');
    client.on('message', (m) => answers.push(JSON.parse(m.subarray(2).toString()) as Record<string, unknown>));
    await new Promise<void>((r) => client.bind(0, '127.0.0.1', r));
  });

  afterAll(() => {
    client.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function ask(datagram: Buffer): Promise<Record<string, unknown> | undefined> {
    const before = answers.length;
    client.send(datagram, server.endpoint.port, '127.0.0.1');
    for (let i = 0; i < 50 && answers.length === before; i++) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 20)); // a second answer would arrive by now
    expect(answers.length - before).toBeLessThanOrEqual(1);
    return answers[before];
  }

  it('writes a 0600 token file and refuses non-loopback addresses', async () => {
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
    expect(token).toMatch(/^[0-9a-f]{48}$/);
    await expect(RpcServer.start({ address: '0.0.0.0', port: 0 }, join(dir, 'x'), counters, pino({ level: 'silent' })))
      .rejects.toThrow(/loopback/);
  });

  it('answers every request exactly once: ok, handler errors with their code, internal errors', async () => {
    expect(await ask(encodeControl({ tid: 1, token, m: 'echo', data: 'hi' }))).toEqual({ tid: 1, ok: true, result: { data: 'hi' } });
    expect(await ask(encodeControl({ tid: 2, token, m: 'echo', data: 'fail' }))).toMatchObject({ tid: 2, ok: false, error: { code: 'bad_state' } });
    expect(await ask(encodeControl({ tid: 3, token, m: 'echo', data: 'crash' }))).toMatchObject({ tid: 3, ok: false, error: { code: 'internal', message: 'boom' } });
    expect(await ask(encodeControl({ tid: 4, token, m: 'echo', data: 'huge' }))).toMatchObject({ tid: 4, ok: false, error: { message: expect.stringContaining('does not fit') } });
  });

  it('rejects bad tokens, bad framing, bad JSON and bad parameters with a reason', async () => {
    expect(await ask(encodeControl({ tid: 5, token: 'nope', m: 'echo' }))).toMatchObject({ tid: 5, error: { code: 'unauthorized' } });
    expect(await ask(encodeControl({ tid: 6, m: 'echo' }))).toMatchObject({ tid: 6, error: { code: 'unauthorized' } });
    expect(await ask(Buffer.from([9, 1, 1]))).toMatchObject({ tid: null, error: { code: 'bad_request', message: expect.stringContaining('version') } });
    expect(await ask(Buffer.from([RPC_VERSION]))).toMatchObject({ tid: null, error: { code: 'bad_request' } });
    expect(await ask(Buffer.concat([Buffer.from([RPC_VERSION, MsgType.Control]), Buffer.from('{nope')]))).toMatchObject({ error: { message: 'payload is not JSON' } });
    const bad = await ask(encodeControl({ tid: 7, token, m: 'trim_link', uid: 'xyz' }));
    expect(bad).toMatchObject({ tid: 7, ok: false, error: { code: 'bad_request', message: expect.stringContaining('uid') } });
    expect(counters.rpcUnauthorized).toBe(2);
    expect(counters.rpcBadRequests).toBe(1);
  });

  it('takes injected packets only from the registered controller endpoint', async () => {
    const frame = Buffer.alloc(60, 7);
    client.send(encodeDatagram(MsgType.Packet, frame), server.endpoint.port, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 50));
    expect(injected).toHaveLength(0);
    expect(counters.injectedDropped).toBe(1);
    server.setController({ address: '127.0.0.1', port: (client.address()).port });
    client.send(encodeDatagram(MsgType.Packet, frame), server.endpoint.port, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 50));
    expect(injected).toHaveLength(1);
    expect(injected[0]!.equals(frame)).toBe(true);
  });
});
