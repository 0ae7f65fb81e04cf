import { randomBytes, timingSafeEqual } from 'node:crypto';
import dgram from 'node:dgram';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import * as z from 'zod';
import {
  MAX_DATAGRAM,
  MsgType,
  RpcRequest,
  decodeDatagram,
  encodeControl,
  encodeDatagram,
  type RpcErrorCode,
  type Endpoint,
  type RpcEvent,
} from '@tincan/protocol';
import type { Counters } from './counters.js';

export type { Endpoint };

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
  /** Answers one validated, authorized request; throws RpcError (or anything) for an error response. */
  handle(req: RpcRequest, from: Endpoint): Promise<unknown>;
  /** A packet frame the controller injects ([src UID][dst UID][IP packet]). */
  inject(frame: Buffer): void;
}


const LOOPBACK = new Set(['127.0.0.1', '::1']);

/**
 * The datapath's JSON-over-UDP RPC endpoint. It owns the socket and the token, validates every
 * datagram against the protocol schemas and answers each request exactly once; it never throws on
 * input. Events and unmapped packets go to the controller endpoint registered with set_cb_endpoint.
 */
export class RpcServer {
  private readonly socket: dgram.Socket;
  private controller: Endpoint | null = null;
  private token = '';

  private constructor(
    private readonly bind: Endpoint,
    private readonly counters: Counters,
    private readonly log: Logger,
    private handler: RpcHandler | null = null,
  ) {
    this.socket = dgram.createSocket({ type: bind.address.includes(':') ? 'udp6' : 'udp4' });
    this.socket.on('message', (msg, rinfo) => this.onDatagram(msg, rinfo));
    this.socket.on('error', (err) => this.log.error({ err }, 'rpc socket error'));
  }

  /** Binds the socket and writes a fresh token (mode 0600) to `tokenFile`. */
  static async start(bind: Endpoint, tokenFile: string, counters: Counters, log: Logger): Promise<RpcServer> {
    if (!LOOPBACK.has(bind.address)) {
      throw new Error(`the RPC listens on loopback only (127.0.0.1 or ::1), not ${bind.address}`);
    }
    const server = new RpcServer(bind, counters, log);
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) =>
        reject(
          err.code === 'EADDRINUSE'
            ? new Error(`${bind.address}:${bind.port} is in use: another tincan-datapath is running? (use --rpc)`)
            : err,
        );
      server.socket.once('error', onError);
      server.socket.bind(bind.port, bind.address, () => {
        server.socket.off('error', onError);
        resolve();
      });
    });
    server.token = randomBytes(24).toString('hex');
    await mkdir(dirname(tokenFile), { recursive: true, mode: 0o700 });
    const tmp = `${tokenFile}.${process.pid}.tmp`;
    await writeFile(tmp, `${server.token}\n`, { mode: 0o600 });
    await rename(tmp, tokenFile);
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
    return this.controller;
  }

  setController(ep: Endpoint): void {
    this.controller = ep;
  }

  /** Sends an event to the controller, if one registered. */
  event(e: RpcEvent): void {
    if (!this.controller) {
      this.counters.eventsDroppedNoController++;
      return;
    }
    this.counters.eventsSent++;
    this.socket.send(encodeControl(e), this.controller.port, this.controller.address);
  }

  /** Sends a packet frame to the controller; false if no controller is registered. */
  packet(frame: Buffer): boolean {
    if (!this.controller) return false;
    this.socket.send(encodeDatagram(MsgType.Packet, frame), this.controller.port, this.controller.address);
    return true;
  }

  close(): void {
    this.socket.close();
  }

  private onDatagram(msg: Buffer, from: dgram.RemoteInfo): void {
    const d = decodeDatagram(msg);
    if (!d.ok) {
      this.counters.rpcBadDatagrams++;
      this.reply(from, { tid: null, ok: false, error: { code: 'bad_request', message: d.reason } });
      return;
    }
    if (d.type === MsgType.Packet) {
      const c = this.controller;
      if (c && c.port === from.port && c.address === from.address && this.handler) this.handler.inject(d.payload);
      else this.counters.injectedDropped++;
      return;
    }
    if (d.type !== MsgType.Control) {
      this.counters.rpcBadDatagrams++;
      return;
    }
    let json: unknown;
    try {
      json = JSON.parse(d.payload.toString('utf8'));
    } catch {
      this.counters.rpcBadDatagrams++;
      this.reply(from, { tid: null, ok: false, error: { code: 'bad_request', message: 'payload is not JSON' } });
      return;
    }
    const tid = tidOf(json);
    if (!this.authorized(json)) {
      this.counters.rpcUnauthorized++;
      this.reply(from, { tid, ok: false, error: { code: 'unauthorized', message: 'missing or wrong token' } });
      return;
    }
    const parsed = RpcRequest.safeParse(json);
    if (!parsed.success) {
      this.counters.rpcBadRequests++;
      this.reply(from, { tid, ok: false, error: { code: 'bad_request', message: z.prettifyError(parsed.error) } });
      return;
    }
    this.counters.rpcRequests++;
    const req = parsed.data;
    const handler = this.handler;
    if (!handler) {
      this.reply(from, { tid: req.tid, ok: false, error: { code: 'bad_state', message: 'datapath is starting' } });
      return;
    }
    handler.handle(req, { address: from.address, port: from.port }).then(
      (result) => this.reply(from, { tid: req.tid, ok: true, result: result ?? {} }),
      (err: unknown) => {
        const code: RpcErrorCode = err instanceof RpcError ? err.code : 'internal';
        const message = err instanceof Error ? err.message : String(err);
        if (code === 'internal') this.log.warn({ err, m: req.m }, 'request failed');
        this.reply(from, { tid: req.tid, ok: false, error: { code, message } });
      },
    );
  }

  private authorized(json: unknown): boolean {
    if (typeof json !== 'object' || json === null) return false;
    const t = (json as { token?: unknown }).token;
    if (typeof t !== 'string' || t.length !== this.token.length) return false;
    return timingSafeEqual(Buffer.from(t), Buffer.from(this.token));
  }

  private reply(to: dgram.RemoteInfo, msg: unknown): void {
    let buf: Buffer;
    try {
      buf = encodeControl(msg);
    } catch (err) {
      buf = encodeControl({ tid: tidOf(msg), ok: false, error: { code: 'internal', message: String(err) } });
    }
    if (buf.length > MAX_DATAGRAM) {
      buf = encodeControl({
        tid: tidOf(msg), ok: false,
        error: { code: 'internal', message: `the answer (${buf.length} bytes) does not fit in one datagram` },
      });
    }
    this.socket.send(buf, to.port, to.address);
  }
}

function tidOf(json: unknown): number | null {
  if (typeof json !== 'object' || json === null) return null;
  const t = (json as { tid?: unknown }).tid;
  return typeof t === 'number' && Number.isInteger(t) && t >= 0 ? t : null;
}
