import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import type { Logger } from 'pino';
import * as z from 'zod';
import {
  HandshakeRequest,
  MAX_DATAGRAM,
  MsgType,
  RPC_CONTROLLER_TIMEOUT_MS,
  RPC_SEAL_OVERHEAD,
  RPC_VERSION,
  RpcRequest,
  RpcSessionKeys,
  decodeDatagram,
  encodeLegacyControl,
  encodePlain,
  newRpcNonce,
  newRpcToken,
  proofMatches,
  rpcProof,
  sealedSessionId,
  type RpcErrorCode,
  type Endpoint,
  type RpcEvent,
} from '@tincan/protocol';
import type { Counters } from './counters.js';
import { removeTokenFile, writeTokenFile } from './token-file.js';

export type { Endpoint };

/** Who sent a request: its address and port, and its authenticated session. */
export interface RpcCaller extends Endpoint {
  session: number;
}

/** An error a verb handler throws to answer with a specific code. */
export class RpcError extends Error {
  constructor(
    readonly code: RpcErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface RpcHandler {
  /** Answers one validated request of an authenticated session; throws RpcError (or anything) for an error response. */
  handle(req: RpcRequest, from: RpcCaller): Promise<unknown>;
  /** A packet frame the controller injects ([src UID][dst UID][IP packet]). */
  inject(frame: Buffer): void;
}

export interface RpcServerOptions {
  /** The controller is forgotten when its session sent nothing (keepalive or other) this long. */
  controllerTimeoutMs?: number;
  /** A session that sent nothing this long is removed (default 60 s). */
  sessionIdleMs?: number;
}

const LOOPBACK = new Set(['127.0.0.1', '::1']);
/** Sessions at most (the controller, tincanctl runs, tests); the least recently heard goes first. */
const MAX_SESSIONS = 32;
/** Handshakes between hello and auth at most, and how long one waits for its auth. */
const MAX_HALF_OPEN = 64;
const HALF_OPEN_MS = 10_000;
const SESSION_IDLE_MS = 60_000;
/** A sealed answer's largest payload. */
const MAX_SEALED_PAYLOAD = MAX_DATAGRAM - RPC_SEAL_OVERHEAD;

interface HalfOpen {
  clientNonce: string;
  datapathNonce: string;
  endpoint: Endpoint;
  startedMs: number;
}

interface Session {
  keys: RpcSessionKeys;
  /** false once removed: a late answer of its handler goes nowhere. */
  alive: boolean;
  endpoint: Endpoint;
  lastHeardMs: number;
}

/**
 * The datapath's JSON-over-UDP RPC endpoint. It owns the socket and the token, authenticates every
 * client (hello / auth: each side proves it knows the token, then a session key seals every datagram,
 * rpc-auth.ts), validates every datagram against the protocol schemas and answers each request
 * exactly once; it never throws on input. Events and unmapped packets go, sealed, to the session that
 * registered as controller (set_cb_endpoint) until it stops sending keepalives.
 */
export class RpcServer {
  private readonly socket: dgram.Socket;
  private readonly halfOpen = new Map<number, HalfOpen>();
  private readonly sessions = new Map<number, Session>();
  private controller: { id: number; session: Session } | null = null;
  private token: Buffer = Buffer.alloc(0);
  private tokenHex = '';
  private readonly timer: NodeJS.Timeout;
  private readonly controllerTimeoutMs: number;
  private readonly sessionIdleMs: number;
  private readonly onExit = () => removeTokenFile(this.tokenFile, this.tokenHex);

  private constructor(
    private readonly bind: Endpoint,
    private readonly tokenFile: string,
    private readonly counters: Counters,
    private readonly log: Logger,
    opts: RpcServerOptions,
    private handler: RpcHandler | null = null,
  ) {
    this.controllerTimeoutMs = opts.controllerTimeoutMs ?? RPC_CONTROLLER_TIMEOUT_MS;
    this.sessionIdleMs = opts.sessionIdleMs ?? SESSION_IDLE_MS;
    this.socket = dgram.createSocket({ type: bind.address.includes(':') ? 'udp6' : 'udp4' });
    this.socket.on('message', (msg, rinfo) => this.onDatagram(msg, rinfo));
    this.socket.on('error', (err) => this.log.error({ err }, 'rpc socket error'));
    this.timer = setInterval(() => this.expire(), Math.min(1000, Math.max(50, this.controllerTimeoutMs / 4)));
    this.timer.unref();
  }

  /** Binds the socket and writes a fresh token (mode 0600) to `tokenFile`, removed again by close(). */
  static async start(bind: Endpoint, tokenFile: string, counters: Counters, log: Logger, opts: RpcServerOptions = {}): Promise<RpcServer> {
    if (!LOOPBACK.has(bind.address)) {
      throw new Error(`the RPC listens on loopback only (127.0.0.1 or ::1), not ${bind.address}`);
    }
    const server = new RpcServer(bind, tokenFile, counters, log, opts);
    try {
      await new Promise<void>((resolve, reject) => {
        const onError = (err: NodeJS.ErrnoException) =>
          reject(
            err.code === 'EADDRINUSE'
              ? new Error(`${bind.address}:${bind.port} is in use: another tincan-datapath is running, or another process holds the port? (use --rpc)`)
              : err,
          );
        server.socket.once('error', onError);
        server.socket.bind(bind.port, bind.address, () => {
          server.socket.off('error', onError);
          resolve();
        });
      });
      server.token = newRpcToken();
      server.tokenHex = server.token.toString('hex');
      await writeTokenFile(tokenFile, server.tokenHex);
    } catch (err) {
      server.close();
      throw err;
    }
    process.once('exit', server.onExit);
    return server;
  }

  setHandler(handler: RpcHandler): void {
    this.handler = handler;
  }

  get endpoint(): Endpoint {
    const a = this.socket.address();
    return { address: a.address, port: a.port };
  }

  get controllerEndpoint(): Endpoint | null {
    return this.controller?.session.endpoint ?? null;
  }

  /** Authenticated sessions now (get_state counters). */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Makes the caller's session the controller: events and packets go to it, injected packets come from it only. */
  setController(caller: RpcCaller): void {
    const session = this.sessions.get(caller.session);
    if (!session) throw new RpcError('unauthorized', 'no such session');
    this.controller = { id: caller.session, session };
  }

  /** Sends an event to the controller, if one registered. */
  event(e: RpcEvent): void {
    const c = this.controller;
    if (!c) {
      this.counters.eventsDroppedNoController++;
      return;
    }
    this.counters.eventsSent++;
    this.send(c.session, MsgType.Control, Buffer.from(JSON.stringify(e), 'utf8'));
  }

  /** Sends a packet frame to the controller; false if no controller is registered. */
  packet(frame: Buffer): boolean {
    const c = this.controller;
    if (!c) return false;
    this.send(c.session, MsgType.Packet, frame);
    return true;
  }

  close(): void {
    clearInterval(this.timer);
    process.off('exit', this.onExit);
    if (this.tokenHex) removeTokenFile(this.tokenFile, this.tokenHex);
    try {
      this.socket.close();
    } catch {
      // not bound
    }
  }

  // --- sessions --------------------------------------------------------------------------------------

  /** Forgets a controller that stopped sending, sessions idle too long and stale handshakes. */
  private expire(): void {
    const now = Date.now();
    const c = this.controller;
    if (c && now - c.session.lastHeardMs > this.controllerTimeoutMs) {
      this.controller = null;
      const ep = c.session.endpoint;
      this.counters.rpcControllerTimeouts++;
      this.log.warn(
        { controller: `${ep.address}:${ep.port}`, silentMs: now - c.session.lastHeardMs },
        'the controller is gone (no keepalive): no more events or packets go to it',
      );
    }
    for (const [id, s] of this.sessions) if (now - s.lastHeardMs > this.sessionIdleMs) this.dropSession(id);
    for (const [id, h] of this.halfOpen) if (now - h.startedMs > HALF_OPEN_MS) this.halfOpen.delete(id);
  }

  private dropSession(id: number): void {
    const s = this.sessions.get(id);
    if (s) s.alive = false;
    this.sessions.delete(id);
    if (this.controller?.id === id) this.controller = null;
  }

  private newSessionId(): number {
    for (;;) {
      const id = randomInt(1, 0xffff_ffff);
      if (!this.sessions.has(id) && !this.halfOpen.has(id)) return id;
    }
  }

  private hello(req: Extract<HandshakeRequest, { m: 'hello' }>, from: Endpoint): void {
    if (this.halfOpen.size >= MAX_HALF_OPEN) this.halfOpen.delete(this.halfOpen.keys().next().value!);
    const id = this.newSessionId();
    const datapathNonce = newRpcNonce();
    this.halfOpen.set(id, { clientNonce: req.nonce, datapathNonce, endpoint: from, startedMs: Date.now() });
    const proof = rpcProof(this.token, 'datapath', req.nonce, datapathNonce, id);
    this.sendPlain(from, { tid: req.tid, ok: true, result: { session: id, nonce: datapathNonce, proof } });
  }

  private auth(req: Extract<HandshakeRequest, { m: 'auth' }>, from: Endpoint): void {
    const h = this.halfOpen.get(req.session);
    if (!h || h.endpoint.address !== from.address || h.endpoint.port !== from.port) {
      this.counters.rpcHandshakeFailures++;
      this.sendPlain(from, { tid: req.tid, ok: false, session: req.session, error: { code: 'unauthorized', message: `no handshake ${req.session} from this address (expired?): send hello again` } });
      return;
    }
    this.halfOpen.delete(req.session);
    if (!proofMatches(rpcProof(this.token, 'client', h.clientNonce, h.datapathNonce, req.session), req.proof)) {
      this.counters.rpcHandshakeFailures++;
      this.log.warn({ client: `${from.address}:${from.port}` }, 'a client failed to prove it knows the RPC token');
      this.sendPlain(from, { tid: req.tid, ok: false, session: req.session, error: { code: 'unauthorized', message: 'wrong proof: the client does not know this datapath\'s token (a stale token file?)' } });
      return;
    }
    if (this.sessions.size >= MAX_SESSIONS) {
      let oldest: [number, Session] | null = null;
      for (const e of this.sessions) if (e[0] !== this.controller?.id && (!oldest || e[1].lastHeardMs < oldest[1].lastHeardMs)) oldest = e;
      if (oldest) this.dropSession(oldest[0]);
    }
    const session: Session = {
      keys: new RpcSessionKeys(req.session, this.token, 'datapath', h.clientNonce, h.datapathNonce),
      alive: true,
      endpoint: from,
      lastHeardMs: Date.now(),
    };
    this.sessions.set(req.session, session);
    this.counters.rpcHandshakes++;
    this.log.debug({ client: `${from.address}:${from.port}`, session: req.session }, 'RPC session authenticated');
    this.reply(session, from, { tid: req.tid, ok: true, result: {} });
  }

  // --- datagrams -------------------------------------------------------------------------------------

  private onDatagram(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const from: Endpoint = { address: rinfo.address, port: rinfo.port };
    const d = decodeDatagram(msg);
    if (!d.ok) {
      this.counters.rpcBadDatagrams++;
      if (d.legacy) {
        // An old client: one clear error in its own protocol, nothing else (its packets: none).
        this.counters.rpcLegacy++;
        if (msg[1] === MsgType.Control) this.socket.send(encodeLegacyControl({ tid: tidOf(parseJson(msg.subarray(2))), ok: false, error: { code: 'unauthorized', message: d.reason } }), from.port, from.address);
        return;
      }
      this.sendPlain(from, { tid: null, ok: false, error: { code: 'bad_request', message: d.reason } });
      return;
    }
    if (d.type === MsgType.Plain) {
      this.onPlain(d.payload, from);
      return;
    }
    const id = sealedSessionId(msg);
    const session = id === null ? undefined : this.sessions.get(id);
    if (!session || session.endpoint.port !== from.port || session.endpoint.address !== from.address) {
      this.counters.rpcUnauthenticated++;
      if (d.type === MsgType.Packet) this.counters.injectedDropped++;
      else {
        this.sendPlain(from, {
          tid: null, ok: false, ...(id !== null ? { session: id } : {}),
          error: { code: 'unauthorized', message: 'no such session (the datapath restarted, or forgot this client): handshake again (hello, auth; docs/rpc.md)' },
        });
      }
      return;
    }
    const opened = session.keys.open(msg);
    if (!opened.ok) {
      if (opened.reason === 'replay') this.counters.rpcReplayed++;
      else this.counters.rpcUnauthenticated++;
      if (d.type === MsgType.Packet) this.counters.injectedDropped++;
      return;
    }
    session.lastHeardMs = Date.now();
    if (d.type === MsgType.Packet) {
      if (this.controller?.session === session && this.handler) this.handler.inject(opened.payload);
      else this.counters.injectedDropped++;
      return;
    }
    if (d.type !== MsgType.Control) {
      this.counters.rpcBadDatagrams++;
      return;
    }
    this.onRequest(opened.payload, session, id!, from);
  }

  private onPlain(payload: Buffer, from: Endpoint): void {
    const json = parseJson(payload);
    if (json === undefined) {
      this.counters.rpcBadDatagrams++;
      this.sendPlain(from, { tid: null, ok: false, error: { code: 'bad_request', message: 'payload is not JSON' } });
      return;
    }
    const parsed = HandshakeRequest.safeParse(json);
    if (!parsed.success) {
      const m = typeof json === 'object' && json !== null ? (json as { m?: unknown }).m : undefined;
      if (m === 'hello' || m === 'auth') {
        this.counters.rpcBadRequests++;
        this.sendPlain(from, { tid: tidOf(json), ok: false, error: { code: 'bad_request', message: z.prettifyError(parsed.error) } });
      } else {
        this.counters.rpcUnauthorized++;
        this.sendPlain(from, { tid: tidOf(json), ok: false, error: { code: 'unauthorized', message: 'no session: authenticate first (hello, auth; docs/rpc.md, "Authentication")' } });
      }
      return;
    }
    if (parsed.data.m === 'hello') this.hello(parsed.data, from);
    else this.auth(parsed.data, from);
  }

  private onRequest(payload: Buffer, session: Session, id: number, from: Endpoint): void {
    const json = parseJson(payload);
    if (json === undefined) {
      this.counters.rpcBadDatagrams++;
      this.reply(session, from, { tid: null, ok: false, error: { code: 'bad_request', message: 'payload is not JSON' } });
      return;
    }
    const tid = tidOf(json);
    const parsed = RpcRequest.safeParse(json);
    if (!parsed.success) {
      this.counters.rpcBadRequests++;
      this.reply(session, from, { tid, ok: false, error: { code: 'bad_request', message: z.prettifyError(parsed.error) } });
      return;
    }
    this.counters.rpcRequests++;
    const req = parsed.data;
    if (req.m === 'keepalive') {
      this.reply(session, from, { tid: req.tid, ok: true, result: { controller: this.controller?.session === session } });
      return;
    }
    const handler = this.handler;
    if (!handler) {
      this.reply(session, from, { tid: req.tid, ok: false, error: { code: 'bad_state', message: 'datapath is starting' } });
      return;
    }
    let answer: Promise<unknown>;
    try {
      answer = handler.handle(req, { ...from, session: id });
    } catch (err) {
      answer = Promise.reject(err);
    }
    answer.then(
      (result) => this.reply(session, from, { tid: req.tid, ok: true, result: result ?? {} }),
      (err: unknown) => {
        const code: RpcErrorCode = err instanceof RpcError ? err.code : 'internal';
        const message = err instanceof Error ? err.message : String(err);
        if (code === 'internal') this.log.warn({ err, m: req.m }, 'request failed');
        this.reply(session, from, { tid: req.tid, ok: false, error: { code, message } });
      },
    );
  }

  /** An answer sealed in the caller's session (if it still exists: else nothing, it was dropped). */
  private reply(session: Session, to: Endpoint, msg: unknown): void {
    if (!session.alive) return;
    let buf: Buffer;
    try {
      buf = Buffer.from(JSON.stringify(msg), 'utf8');
    } catch (err) {
      buf = Buffer.from(JSON.stringify({ tid: tidOf(msg), ok: false, error: { code: 'internal', message: String(err) } }), 'utf8');
    }
    if (buf.length > MAX_SEALED_PAYLOAD) {
      buf = Buffer.from(JSON.stringify({
        tid: tidOf(msg), ok: false,
        error: { code: 'internal', message: `the answer (${buf.length} bytes) does not fit in one datagram` },
      }), 'utf8');
    }
    this.socket.send(session.keys.seal(RPC_VERSION, MsgType.Control, buf), to.port, to.address);
  }

  private send(session: Session, type: MsgType, payload: Buffer): void {
    const ep = session.endpoint;
    this.socket.send(session.keys.seal(RPC_VERSION, type, payload), ep.port, ep.address);
  }

  private sendPlain(to: Endpoint, msg: unknown): void {
    this.socket.send(encodePlain(msg), to.port, to.address);
  }
}

function parseJson(payload: Buffer): unknown {
  try {
    return JSON.parse(payload.toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

function tidOf(json: unknown): number | null {
  if (typeof json !== 'object' || json === null) return null;
  const t = (json as { tid?: unknown }).tid;
  return typeof t === 'number' && Number.isInteger(t) && t >= 0 ? t : null;
}
