// The RPC server over real loopback UDP sockets, with a scripted handler, driven by the real client
// (DatapathClient) and by raw sockets playing old clients, strangers, squatters and replays. The lab
// tests drive the real datapath behind it, including 10,000 hostile datagrams.
import dgram from 'node:dgram';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  HelloResult,
  LEGACY_RPC_VERSION,
  MsgType,
  RPC_VERSION,
  RpcSessionKeys,
  encodeDatagram,
  encodeLegacyControl,
  encodePlain,
  newRpcNonce,
  rpcProof,
  type RpcRequest,
  type StateResult,
} from '@tincan/protocol';
import { DatapathClient, DatapathError } from '@tincan/controller';
import { Counters } from '../src/counters.js';
import { RpcError, RpcServer, type RpcCaller } from '../src/rpc-server.js';
import { StatePager } from '../src/state-pager.js';
import { bigState } from './big-state.js';

const silent = pino({ level: 'silent' });
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; !cond(); await wait(20)) if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
}

/** A raw UDP socket that records what arrives. */
class Raw {
  readonly got: Buffer[] = [];
  readonly socket = dgram.createSocket('udp4');
  constructor() {
    this.socket.on('message', (m) => this.got.push(m));
  }
  async bind(port = 0): Promise<this> {
    await new Promise<void>((r) => this.socket.bind(port, '127.0.0.1', r));
    return this;
  }
  get port(): number {
    return this.socket.address().port;
  }
  send(b: Buffer, port: number): void {
    this.socket.send(b, port, '127.0.0.1');
  }
  /** Sends and waits for the next datagram (or undefined after 300 ms). */
  async ask(b: Buffer, port: number): Promise<Buffer | undefined> {
    const before = this.got.length;
    this.send(b, port);
    for (let i = 0; i < 30 && this.got.length === before; i++) await wait(10);
    return this.got[before];
  }
  close(): void {
    this.socket.close();
  }
}

const json = (b: Buffer | undefined, skip = 2): Record<string, unknown> | undefined => (b ? (JSON.parse(b.subarray(skip).toString()) as Record<string, unknown>) : undefined);

/** The handshake done by hand (tests need the session's keys to forge, replay and tamper). */
async function rawSession(raw: Raw, port: number, token: Buffer): Promise<RpcSessionKeys> {
  const nonce = newRpcNonce();
  const hello = HelloResult.parse(json(await raw.ask(encodePlain({ tid: 1, m: 'hello', nonce }), port))!.result);
  expect(rpcProof(token, 'datapath', nonce, hello.nonce, hello.session)).toBe(hello.proof);
  const keys = new RpcSessionKeys(hello.session, token, 'client', nonce, hello.nonce);
  const answer = await raw.ask(encodePlain({ tid: 2, m: 'auth', session: hello.session, proof: rpcProof(token, 'client', nonce, hello.nonce, hello.session) }), port);
  const opened = keys.open(answer!);
  expect(opened.ok && JSON.parse(opened.payload.toString())).toEqual({ tid: 2, ok: true, result: {} });
  return keys;
}

const sealed = (keys: RpcSessionKeys, type: MsgType, payload: Buffer | object) =>
  keys.seal(RPC_VERSION, type, Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload)));

function openJson(keys: RpcSessionKeys, b: Buffer | undefined): Record<string, unknown> | undefined {
  if (!b) return undefined;
  const o = keys.open(b);
  return o.ok ? (JSON.parse(o.payload.toString()) as Record<string, unknown>) : undefined;
}

describe('RpcServer', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tincan-rpc-test-'));
  const stateDir = join(dir, 'state');
  const tokenFile = join(stateDir, 'rpc.token');
  const counters = new Counters();
  const injected: Buffer[] = [];
  const pager = new StatePager();
  let big: StateResult;
  let server: RpcServer;
  let token: Buffer;
  let port: number;

  beforeAll(async () => {
    // A state dir left 0755 by someone, and a symbolic link where the token goes: neither followed nor kept.
    mkdirSync(stateDir, { mode: 0o755 });
    chmodSync(stateDir, 0o755);
    writeFileSync(join(dir, 'victim'), 'untouched\n');
    symlinkSync(join(dir, 'victim'), tokenFile);
    server = await RpcServer.start({ address: '127.0.0.1', port: 0 }, tokenFile, counters, silent, { controllerTimeoutMs: 2500 });
    big = bigState(1000, 5000);
    server.setHandler({
      async handle(req: RpcRequest, from: RpcCaller) {
        if (req.m === 'echo') {
          if (req.data === 'fail') throw new RpcError('bad_state', 'asked to fail');
          if (req.data === 'crash') throw new Error('boom');
          if (req.data === 'huge') return { data: 'x'.repeat(70_000) };
          return { data: req.data ?? '' };
        }
        if (req.m === 'set_cb_endpoint') {
          server.setController(from);
          return {};
        }
        if (req.m === 'get_state') return pager.first(from.session, big);
        if (req.m === 'get_state_page') return pager.page(from.session, req.snapshot, req.offset);
        return {};
      },
      inject(frame) {
        injected.push(Buffer.from(frame));
      },
    });
    token = Buffer.from(readFileSync(tokenFile, 'utf8').trim(), 'hex');
    port = server.endpoint.port;
  });

  afterAll(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('writes a fresh 0600 token over a link without following it, forces the state dir to 0700, removes it on close', async () => {
    expect(lstatSync(tokenFile).isSymbolicLink()).toBe(false);
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
    expect(statSync(stateDir).mode & 0o777).toBe(0o700);
    expect(readFileSync(join(dir, 'victim'), 'utf8')).toBe('untouched\n');
    expect(readFileSync(tokenFile, 'utf8')).toMatch(/^[0-9a-f]{64}\n$/);
    // A second server (another port): another token, and its file goes when it closes.
    const other = join(stateDir, 'rpc-2.token');
    const s2 = await RpcServer.start({ address: '127.0.0.1', port: 0 }, other, new Counters(), silent);
    expect(readFileSync(other, 'utf8').trim()).not.toBe(token.toString('hex'));
    s2.close();
    expect(existsSync(other)).toBe(false);
    await expect(RpcServer.start({ address: '0.0.0.0', port: 0 }, join(dir, 'x'), counters, silent)).rejects.toThrow(/loopback/);
    // A state dir that is a symbolic link is refused.
    symlinkSync(stateDir, join(dir, 'linked'));
    await expect(RpcServer.start({ address: '127.0.0.1', port: 0 }, join(dir, 'linked', 'rpc-3.token'), new Counters(), silent)).rejects.toThrow(/symbolic link/);
  });

  it('the real client authenticates both ways; answers: ok, handler errors with their code, internal errors', async () => {
    const c = await DatapathClient.connect({ rpc: server.endpoint, token: token.toString('hex'), timeoutMs: 1000 });
    try {
      expect(await c.call('echo', { data: 'hi' })).toEqual({ data: 'hi' });
      await expect(c.call('echo', { data: 'fail' })).rejects.toMatchObject({ code: 'bad_state' });
      await expect(c.call('echo', { data: 'crash' })).rejects.toMatchObject({ code: 'internal', message: 'echo: boom' });
      await expect(c.call('echo', { data: 'huge' })).rejects.toThrow(/does not fit/);
      expect(counters.rpcHandshakes).toBeGreaterThanOrEqual(1);
    } finally {
      c.close();
    }
  });

  it('refuses unauthenticated, old-protocol and malformed datagrams with a clear error and no secret', async () => {
    const raw = await new Raw().bind();
    try {
      // Plain requests other than the handshake.
      expect(json(await raw.ask(encodePlain({ tid: 5, m: 'echo' }), port))).toMatchObject({ tid: 5, ok: false, error: { code: 'unauthorized', message: expect.stringContaining('hello') } });
      // An old client: token in the request, protocol version 2. Its answer is in its own version.
      const old = await raw.ask(encodeLegacyControl({ tid: 6, token: token.toString('hex'), m: 'get_state' }), port);
      expect(old![0]).toBe(LEGACY_RPC_VERSION);
      expect(json(old)).toMatchObject({ tid: 6, ok: false, error: { code: 'unauthorized', message: expect.stringContaining('protocol version 2') } });
      expect(json(await raw.ask(Buffer.from([9, 1, 1]), port))).toMatchObject({ tid: null, error: { code: 'bad_request', message: expect.stringContaining('version') } });
      expect(json(await raw.ask(Buffer.from([RPC_VERSION]), port))).toMatchObject({ tid: null, error: { code: 'bad_request' } });
      expect(json(await raw.ask(Buffer.concat([Buffer.from([RPC_VERSION, MsgType.Plain]), Buffer.from('{nope')]), port))).toMatchObject({ error: { message: 'payload is not JSON' } });
      expect(json(await raw.ask(encodePlain({ tid: 7, m: 'hello', nonce: 'short' }), port))).toMatchObject({ tid: 7, error: { code: 'bad_request', message: expect.stringContaining('nonce') } });
      // A sealed-looking datagram of no session.
      const fake = Buffer.concat([Buffer.from([RPC_VERSION, MsgType.Control]), Buffer.alloc(40, 1)]);
      expect(json(await raw.ask(fake, port))).toMatchObject({ tid: null, session: 0x01010101, error: { code: 'unauthorized', message: expect.stringContaining('handshake again') } });
      // A client that does not know the token (a stale or guessed one): its auth is refused, no session.
      const nonce = newRpcNonce();
      const hello = HelloResult.parse(json(await raw.ask(encodePlain({ tid: 8, m: 'hello', nonce }), port))!.result);
      const wrong = Buffer.alloc(32, 7);
      const refused = await raw.ask(encodePlain({ tid: 9, m: 'auth', session: hello.session, proof: rpcProof(wrong, 'client', nonce, hello.nonce, hello.session) }), port);
      expect(json(refused)).toMatchObject({ tid: 9, ok: false, error: { code: 'unauthorized', message: expect.stringContaining('wrong proof') } });
      // Nothing that arrived carries the token.
      const hex = token.toString('hex');
      for (const b of raw.got) expect(b.toString('latin1')).not.toContain(hex);
      expect(counters.rpcHandshakeFailures).toBeGreaterThanOrEqual(1);
      expect(counters.rpcLegacy).toBeGreaterThanOrEqual(1);
    } finally {
      raw.close();
    }
  });

  it('drops replayed, tampered and misdirected sealed datagrams', async () => {
    const raw = await new Raw().bind();
    const other = await new Raw().bind();
    try {
      const keys = await rawSession(raw, port, token);
      const echo = sealed(keys, MsgType.Control, { tid: 3, m: 'echo', data: 'once' });
      expect(openJson(keys, await raw.ask(echo, port))).toEqual({ tid: 3, ok: true, result: { data: 'once' } });
      const replays = counters.rpcReplayed;
      expect(await raw.ask(echo, port)).toBeUndefined();
      expect(counters.rpcReplayed).toBe(replays + 1);
      const tampered = sealed(keys, MsgType.Control, { tid: 4, m: 'echo', data: 'twice' });
      tampered[20] = tampered[20]! ^ 1;
      const bad = counters.rpcUnauthenticated;
      expect(await raw.ask(tampered, port)).toBeUndefined();
      // The same session's datagram from another socket: not its session's.
      const stolen = sealed(keys, MsgType.Control, { tid: 5, m: 'echo' });
      expect(json(await other.ask(stolen, port))).toMatchObject({ error: { code: 'unauthorized' } });
      expect(counters.rpcUnauthenticated).toBe(bad + 2);
      // Reordered within the window: still accepted once.
      const a = sealed(keys, MsgType.Control, { tid: 6, m: 'echo', data: 'a' });
      const b = sealed(keys, MsgType.Control, { tid: 7, m: 'echo', data: 'b' });
      expect(openJson(keys, await raw.ask(b, port))).toMatchObject({ tid: 7 });
      expect(openJson(keys, await raw.ask(a, port))).toMatchObject({ tid: 6 });
    } finally {
      raw.close();
      other.close();
    }
  });

  it('takes injected packets only sealed in the controller\'s session', async () => {
    const raw = await new Raw().bind();
    try {
      const keys = await rawSession(raw, port, token);
      const frame = Buffer.alloc(60, 7);
      const dropped = counters.injectedDropped;
      raw.send(encodeDatagram(MsgType.Packet, frame), port); // unsealed
      raw.send(encodeDatagram(MsgType.Packet, frame, LEGACY_RPC_VERSION), port); // the old protocol
      raw.send(sealed(keys, MsgType.Packet, frame), port); // a session, but not the controller's
      await wait(100);
      expect(injected).toHaveLength(0);
      expect(counters.injectedDropped - dropped).toBeGreaterThanOrEqual(2);
      expect(openJson(keys, await raw.ask(sealed(keys, MsgType.Control, { tid: 10, m: 'set_cb_endpoint', address: '127.0.0.1', port: raw.port }), port))).toMatchObject({ ok: true });
      raw.send(sealed(keys, MsgType.Packet, frame), port);
      const forged = sealed(keys, MsgType.Packet, frame);
      forged[forged.length - 1] = forged[forged.length - 1]! ^ 0xff;
      raw.send(forged, port);
      await until('the injected frame', () => injected.length > 0);
      await wait(50);
      expect(injected).toHaveLength(1);
      expect(injected[0]!.equals(frame)).toBe(true);
    } finally {
      raw.close();
      injected.length = 0;
    }
  });

  it('forgets a controller that stopped sending keepalives: no events, no packets, nothing injected from its port', { timeout: 30_000 }, async () => {
    const c = await DatapathClient.connect({ rpc: server.endpoint, token: token.toString('hex'), timeoutMs: 1000 });
    const events: unknown[] = [];
    c.onEvent((e) => events.push(e));
    await c.subscribe();
    const port0 = c.localPort;
    // Alive: its keepalives (every second) keep it the controller well past the timeout.
    await wait(4000);
    expect(server.controllerEndpoint).toEqual({ address: '127.0.0.1', port: port0 });
    server.event({ event: 'xmpp', state: 'online' });
    await until('the event', () => events.length === 1);
    // The controller exits; a squatter takes its port.
    c.close();
    const squatter = await new Raw().bind(port0);
    try {
      // Before the datapath noticed: what the squatter sends injects nothing.
      squatter.send(encodeDatagram(MsgType.Packet, Buffer.alloc(60, 1)), port);
      squatter.send(Buffer.concat([Buffer.from([RPC_VERSION, MsgType.Packet]), Buffer.alloc(100, 3)]), port);
      await until('the datapath forgets its controller', () => server.controllerEndpoint === null);
      expect(counters.rpcControllerTimeouts).toBeGreaterThanOrEqual(1);
      const before = squatter.got.length;
      const dropped = counters.eventsDroppedNoController;
      server.event({ event: 'xmpp', state: 'offline' });
      expect(server.packet(Buffer.alloc(60))).toBe(false);
      squatter.send(encodeDatagram(MsgType.Packet, Buffer.alloc(60, 1)), port);
      await wait(200);
      expect(counters.eventsDroppedNoController).toBe(dropped + 1);
      // What the squatter got: error answers at most, never an event or packet (sealed types).
      for (const b of squatter.got.slice(before)) expect(b[1]).toBe(MsgType.Plain);
      expect(injected).toHaveLength(0);
    } finally {
      squatter.close();
    }
  });

  it('a client of a restarted datapath (unknown session) gets "unauthorized", and a new connect works', async () => {
    const c = await DatapathClient.connect({ rpc: server.endpoint, token: token.toString('hex'), timeoutMs: 1000 });
    try {
      (server as unknown as { sessions: Map<number, unknown> }).sessions.clear(); // as after a restart
      const err = await c.call('echo', {}).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DatapathError);
      expect(err).toMatchObject({ code: 'unauthorized' });
    } finally {
      c.close();
    }
  });

  it('get_state of 1,000 links and 5,000 presences comes whole to the client, a datagram per page', async () => {
    const c = await DatapathClient.connect({ rpc: server.endpoint, token: token.toString('hex'), timeoutMs: 2000 });
    try {
      const s = await c.call('get_state', { stats: true });
      expect(s.more).toBeUndefined();
      expect(s.links).toEqual(big.links);
      expect(s.peers).toEqual(big.peers);
      expect(s.routes).toEqual(big.routes);
      expect(s.subnets).toEqual(big.subnets);
      expect(s.node).toEqual(big.node);
      // A page of no snapshot (expired, or another session's): not_found, with what to do.
      await expect(c.call('get_state_page', { snapshot: 999_999, offset: 0 })).rejects.toMatchObject({ code: 'not_found', message: expect.stringContaining('get_state again') });
    } finally {
      c.close();
    }
  });
});

describe('StatePager', () => {
  it('sends a small state whole and cuts a large one into pages under the budget, in order', () => {
    const pager = new StatePager(20_000);
    const small = bigState(3, 3);
    expect(pager.first(1, small)).toBe(small);
    const big = bigState(200, 300);
    const first = pager.first(1, big);
    expect(first.more).toBeDefined();
    expect(Buffer.byteLength(JSON.stringify(first))).toBeLessThan(20_000);
    const links = [...first.links];
    const peers = [...first.peers];
    let offset: number | null = first.more!.next;
    let pages = 1;
    while (offset !== null) {
      const p = pager.page(1, first.more!.snapshot, offset);
      expect(Buffer.byteLength(JSON.stringify(p))).toBeLessThan(20_000);
      links.push(...p.links);
      peers.push(...p.peers);
      offset = p.next;
      pages++;
    }
    expect(pages).toBeGreaterThan(3);
    expect(links).toEqual(big.links);
    expect(peers).toEqual(big.peers);
    // Another session cannot read this session's snapshot; a later get_state replaces it.
    expect(() => pager.page(2, first.more!.snapshot, 0)).toThrow(/no snapshot/);
    const again = pager.first(1, big);
    expect(() => pager.page(1, first.more!.snapshot, 0)).toThrow(/no snapshot/);
    expect(() => pager.page(1, again.more!.snapshot, 1_000_000)).toThrow(/past/);
  });
});

describe('a squatter on the datapath\'s port, the real client and its supervisor', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tincan-rpc-squat-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** Answers every hello with a made-up proof and every sealed datagram with "no such session". */
  function squat(raw: Raw): void {
    raw.socket.on('message', (m, r) => {
      if (m[1] === MsgType.Plain) {
        const j = json(m);
        if (j?.m === 'hello') raw.socket.send(encodePlain({ tid: j.tid, ok: true, result: { session: 42, nonce: newRpcNonce(), proof: newRpcNonce() } }), r.port, r.address);
      } else if (m.length >= 14) {
        raw.socket.send(encodePlain({ tid: null, ok: false, session: m.readUInt32BE(2), error: { code: 'unauthorized', message: 'no such session' } }), r.port, r.address);
      }
    });
  }

  it('gets no password, TURN credential or token; the restarted datapath is attached again', { timeout: 60_000 }, async () => {
    const stateDir = join(dir, 'state');
    const probe = await new Raw().bind();
    const port = probe.port; // a free port for "5801"
    probe.close();
    const tokenFile = join(stateDir, `rpc-${port}.token`);
    const handler = (srv: () => RpcServer) => ({
      async handle(req: RpcRequest, from: RpcCaller) {
        if (req.m === 'set_cb_endpoint') srv().setController(from);
        if (req.m === 'get_state') return { ...bigState(1, 1), node: { ...bigState(0, 0).node, uptime_s: 1 } };
        return {};
      },
      inject() {},
    });
    let dp = await RpcServer.start({ address: '127.0.0.1', port }, tokenFile, new Counters(), silent);
    dp.setHandler(handler(() => dp));
    const { DatapathSupervisor, systemClock } = await import('@tincan/controller');
    let attaches = 0;
    const sup = new DatapathSupervisor({
      connect: () => DatapathClient.connect({ rpc: { address: '127.0.0.1', port }, stateDir, timeoutMs: 300, attempts: 1 }),
      clock: systemClock,
      logger: silent,
      pollIntervalMs: 200,
      retryInitialMs: 100,
      retryMaxMs: 300,
      handlers: { onEvent() {}, onPacket() {}, onState() {}, attach: async () => void attaches++ },
    });
    const secrets = { password: 'xmpp-secret-pw-1', turn: 'turn-secret-cred-2' };
    try {
      await sup.start();
      expect(attaches).toBe(1);
      const oldToken = readFileSync(tokenFile, 'utf8').trim();
      // The datapath stops; a squatter (another local user, in the lab test) takes its port at once.
      dp.close();
      const squatter = await new Raw().bind(port);
      squat(squatter);
      // The controller, still attached in its eyes, sends secrets in its session; then handshakes again.
      await sup.call('register_svc', { xmpp: { host: 'x', jid: 'n@x', password: secrets.password } }).catch(() => undefined);
      await sup.call('create_link', { uid: 'a'.repeat(40), turn: [{ address: 'turn:3478', username: 'u', password: secrets.turn }] }).catch(() => undefined);
      // A clean stop removed the token file: the controller does not even handshake.
      await until('the supervisor finds no token file', () => sup.lastError?.includes('ENOENT') === true);
      expect(squatter.got.some((b) => b[1] === MsgType.Plain)).toBe(false);
      // A crashed datapath leaves its (0600) token file behind: the controller handshakes with the squatter, which cannot prove itself.
      writeFileSync(tokenFile, `${oldToken}\n`, { mode: 0o600 });
      await until('a handshake attempt at the squatter', () => squatter.got.some((b) => b[1] === MsgType.Plain && json(b)?.m === 'hello'));
      await until('the supervisor gives up on the squatter', () => sup.lastError?.includes('could not prove') === true);
      const seen = Buffer.concat(squatter.got).toString('latin1');
      for (const s of [secrets.password, secrets.turn, oldToken, 'password', 'turn']) expect(seen).not.toContain(s);
      // In plain: hellos only (a nonce each); everything else was sealed in the old session.
      for (const b of squatter.got) if (b[1] === MsgType.Plain) expect(Object.keys(json(b)!).sort()).toEqual(['m', 'nonce', 'tid']);
      squatter.close();
      // The real datapath is back (a new token): the controller attaches again by itself.
      dp = await RpcServer.start({ address: '127.0.0.1', port }, tokenFile, new Counters(), silent);
      dp.setHandler(handler(() => dp));
      await until('the controller attached again', () => attaches === 2 && sup.isAttached);
      expect(dp.controllerEndpoint).not.toBeNull();
    } finally {
      sup.stop();
      dp.close();
    }
  });
});
