import dgram from 'node:dgram';
import { readFile } from 'node:fs/promises';
import {
  HelloResult,
  MsgType,
  PlainResponse,
  RPC_KEEPALIVE_MS,
  RPC_VERSION,
  RpcEvent,
  RpcResponse,
  RpcSessionKeys,
  decodeDatagram,
  encodePlain,
  newRpcNonce,
  parseRpcToken,
  proofMatches,
  rpcProof,
  tokenFilePath,
  type RpcParams,
  type RpcResults,
  type Endpoint,
  type RpcVerb,
  type StateResult,
} from '@tincan/protocol';

export type DatapathAddress = Endpoint;

export interface DatapathClientOptions {
  rpc: DatapathAddress;
  /** The token (hex), or where to read it (defaults to the datapath's file under stateDir). */
  token?: string;
  stateDir?: string;
  /** Per-attempt timeout; each request is sent up to `attempts` times (UDP). */
  timeoutMs?: number;
  attempts?: number;
}

/** The datapath answered with an error response (or, client-side, failed the handshake). */
export class DatapathError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly verb: string,
  ) {
    super(`${verb}: ${message}`);
  }
}

/**
 * The code of a DatapathError thrown when the process at the datapath's address could not prove that
 * it knows the token: not our datapath (another process holds the port) or a stale token file.
 */
export const UNPROVEN_DATAPATH = 'unproven_datapath';
/** The code of a DatapathError thrown when the datapath refused our proof (a stale token file?). */
export const HANDSHAKE_REFUSED = 'handshake_refused';

interface Pending {
  verb: string;
  resolve(v: unknown): void;
  reject(e: Error): void;
}

/**
 * A client of the datapath's JSON-over-UDP RPC. connect() authenticates both ways (hello / auth,
 * docs/rpc.md "Authentication"): nothing but a nonce and a proof goes out before the datapath proved
 * it knows the token, and every later datagram is sealed in the session. One socket sends requests and,
 * once `subscribe()` registered it with set_cb_endpoint, receives events and packet frames (and sends
 * keepalives, so that the datapath knows this controller is alive). Only datagrams from the datapath's
 * address and port that open with the session's key are accepted.
 */
export class DatapathClient {
  private readonly socket: dgram.Socket;
  private readonly pending = new Map<number, Pending>();
  private nextTid = 1;
  private eventHandlers: ((e: RpcEvent) => void)[] = [];
  private packetHandlers: ((frame: Buffer) => void)[] = [];
  private keys: RpcSessionKeys | null = null;
  private keepalive: NodeJS.Timeout | null = null;
  /** Datagrams that were not valid responses, events or packets from the datapath. */
  droppedDatagrams = 0;

  private constructor(
    private readonly rpc: DatapathAddress,
    private readonly timeoutMs: number,
    private readonly attempts: number,
  ) {
    this.socket = dgram.createSocket(rpc.address.includes(':') ? 'udp6' : 'udp4');
    this.socket.on('message', (msg, rinfo) => this.onDatagram(msg, rinfo));
    this.socket.on('error', () => undefined);
  }

  /** Reads the token, binds a socket and authenticates with the datapath (both ways). */
  static async connect(opts: DatapathClientOptions): Promise<DatapathClient> {
    const token = parseRpcToken(
      opts.token ?? (await readFile(tokenFilePath(opts.stateDir ?? '/var/lib/tincan', opts.rpc.port), 'utf8')),
    );
    const c = new DatapathClient(opts.rpc, opts.timeoutMs ?? 5000, opts.attempts ?? 2);
    await new Promise<void>((resolve) => c.socket.bind(0, opts.rpc.address, resolve));
    try {
      await c.handshake(token);
    } catch (err) {
      c.close();
      throw err;
    }
    return c;
  }

  get localPort(): number {
    return this.socket.address().port;
  }

  /** The session id (docs/rpc.md), for logs. */
  get session(): number | null {
    return this.keys?.session ?? null;
  }

  /**
   * Calls one verb and resolves with its result, or rejects with DatapathError / a timeout. get_state
   * reads every page of a large answer (get_state_page) and resolves with the whole state.
   */
  async call<M extends RpcVerb>(m: M, params: RpcParams<M>): Promise<RpcResults[M]> {
    const result = await this.request(m, params);
    if (m === 'get_state') return (await this.restOfState(result as StateResult)) as RpcResults[M];
    return result;
  }

  /** Makes this client the datapath's controller endpoint: events and packets come here. */
  async subscribe(): Promise<void> {
    await this.call('set_cb_endpoint', { address: this.rpc.address as '127.0.0.1' | '::1', port: this.localPort });
    if (this.keepalive === null) {
      // The datapath forgets a controller that sends nothing for a few seconds (RPC_CONTROLLER_TIMEOUT_MS).
      this.keepalive = setInterval(() => this.sendSealed(MsgType.Control, Buffer.from(JSON.stringify({ tid: this.nextTid++, m: 'keepalive' }))), RPC_KEEPALIVE_MS);
      this.keepalive.unref();
    }
  }

  onEvent(cb: (e: RpcEvent) => void): void {
    this.eventHandlers.push(cb);
  }

  onPacket(cb: (frame: Buffer) => void): void {
    this.packetHandlers.push(cb);
  }

  /** Injects a frame ([src UID][dst UID][IP packet]) into the datapath. */
  sendPacket(frame: Buffer): void {
    this.sendSealed(MsgType.Packet, frame);
  }

  close(): void {
    if (this.keepalive !== null) clearInterval(this.keepalive);
    this.keepalive = null;
    for (const p of this.pending.values()) p.reject(new Error('client closed'));
    this.pending.clear();
    try {
      this.socket.close();
    } catch {
      // closed already
    }
  }

  // --- the handshake ---------------------------------------------------------------------------------

  private async handshake(token: Buffer): Promise<void> {
    const where = `${this.rpc.address}:${this.rpc.port}`;
    const nonce = newRpcNonce();
    const hello = HelloResult.safeParse(await this.exchange('hello', (tid) => encodePlain({ tid, m: 'hello', nonce })));
    if (!hello.success) throw new DatapathError(UNPROVEN_DATAPATH, `the process at ${where} answered hello with no valid proof: not a tincan-datapath of this version`, 'hello');
    const { session, nonce: theirs, proof } = hello.data;
    if (!proofMatches(rpcProof(token, 'datapath', nonce, theirs, session), proof)) {
      throw new DatapathError(
        UNPROVEN_DATAPATH,
        `the process at ${where} could not prove it knows the RPC token (another process holds the port, or the token file is stale): sending it nothing`,
        'hello',
      );
    }
    this.keys = new RpcSessionKeys(session, token, 'client', nonce, theirs);
    const mine = rpcProof(token, 'client', nonce, theirs, session);
    try {
      await this.exchange('auth', (tid) => encodePlain({ tid, m: 'auth', session, proof: mine }));
    } catch (err) {
      // Not "unauthorized": that code means "our session is gone, handshake again", and this was one.
      if (err instanceof DatapathError) throw new DatapathError(HANDSHAKE_REFUSED, err.message, 'auth');
      throw err;
    }
  }

  /** One handshake message (plain), resent on timeout; resolves with the result of its answer. */
  private exchange(verb: string, datagram: (tid: number) => Buffer): Promise<unknown> {
    const tid = this.nextTid++;
    return this.await(tid, verb, () => this.socket.send(datagram(tid), this.rpc.port, this.rpc.address));
  }

  // --- requests --------------------------------------------------------------------------------------

  private request<M extends RpcVerb>(m: M, params: RpcParams<M>): Promise<RpcResults[M]> {
    const tid = this.nextTid++;
    const payload = Buffer.from(JSON.stringify({ ...params, tid, m }), 'utf8');
    return this.await(tid, m, () => this.sendSealed(MsgType.Control, payload)) as Promise<RpcResults[M]>;
  }

  /** get_state's further pages, appended to its lists. */
  private async restOfState(first: StateResult): Promise<StateResult> {
    const more = first.more;
    if (!more) return first;
    const { more: _, ...state } = first;
    let offset: number | null = more.next;
    while (offset !== null) {
      const page: RpcResults['get_state_page'] = await this.request('get_state_page', { snapshot: more.snapshot, offset });
      state.links.push(...page.links);
      state.peers.push(...page.peers);
      state.routes.push(...page.routes);
      state.subnets.push(...page.subnets);
      if (page.next !== null && page.next <= offset) throw new Error('get_state_page: the datapath\'s pages do not advance');
      offset = page.next;
    }
    return state;
  }

  private await(tid: number, verb: string, send: () => void): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      let attempt = 0;
      let timer: NodeJS.Timeout;
      const again = () => {
        attempt++;
        send();
        timer = setTimeout(() => {
          if (attempt < this.attempts) again();
          else {
            this.pending.delete(tid);
            reject(new Error(`${verb}: no answer from the datapath at ${this.rpc.address}:${this.rpc.port}`));
          }
        }, this.timeoutMs);
      };
      this.pending.set(tid, {
        verb,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      again();
    });
  }

  private sendSealed(type: MsgType, payload: Buffer): void {
    const keys = this.keys;
    if (!keys) return;
    this.socket.send(keys.seal(RPC_VERSION, type, payload), this.rpc.port, this.rpc.address);
  }

  // --- what arrives ----------------------------------------------------------------------------------

  private onDatagram(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (rinfo.port !== this.rpc.port || rinfo.address !== this.rpc.address) {
      this.droppedDatagrams++;
      return;
    }
    const d = decodeDatagram(msg);
    if (!d.ok) {
      if (d.legacy) {
        // A datapath of the old protocol: it answers our version with an error; say what it is.
        this.failAll('unsupported', 'the datapath speaks the old RPC (protocol version 2, a token in every request): update tincan-datapath');
      } else this.droppedDatagrams++;
      return;
    }
    if (d.type === MsgType.Plain) {
      this.onPlain(d.payload);
      return;
    }
    const keys = this.keys;
    const opened = keys && msg.readUInt32BE(2) === keys.session ? keys.open(msg) : null;
    if (!opened?.ok) {
      this.droppedDatagrams++;
      return;
    }
    if (opened.type === MsgType.Packet) {
      for (const h of this.packetHandlers) h(opened.payload);
      return;
    }
    if (opened.type !== MsgType.Control) {
      this.droppedDatagrams++;
      return;
    }
    let json: unknown;
    try {
      json = JSON.parse(opened.payload.toString('utf8'));
    } catch {
      this.droppedDatagrams++;
      return;
    }
    if (typeof json === 'object' && json !== null && 'event' in json) {
      const e = RpcEvent.safeParse(json);
      if (!e.success) {
        this.droppedDatagrams++;
        return;
      }
      for (const h of this.eventHandlers) h(e.data);
      return;
    }
    const r = RpcResponse.safeParse(json);
    if (!r.success || r.data.tid === null) {
      this.droppedDatagrams++;
      return;
    }
    this.settle(r.data.tid, r.data);
  }

  /** Handshake answers, and the datapath's errors about our session (it restarted: handshake again). */
  private onPlain(payload: Buffer): void {
    let json: unknown;
    try {
      json = JSON.parse(payload.toString('utf8'));
    } catch {
      this.droppedDatagrams++;
      return;
    }
    const r = PlainResponse.safeParse(json);
    if (!r.success) {
      this.droppedDatagrams++;
      return;
    }
    const a = r.data;
    if (a.ok) {
      // Only hello is answered plain with a result.
      const p = this.pending.get(a.tid);
      if (p?.verb === 'hello') this.settle(a.tid, a);
      else this.droppedDatagrams++;
      return;
    }
    if (a.tid !== null && this.pending.get(a.tid)?.verb === 'auth') {
      this.settle(a.tid, a);
      return;
    }
    if (this.keys && a.session === this.keys.session) {
      // Our session is unknown to the datapath: every request in flight fails the same way.
      this.failAll(a.error.code, a.error.message);
      return;
    }
    if (a.tid !== null && this.pending.get(a.tid)?.verb === 'hello') {
      this.settle(a.tid, a);
      return;
    }
    this.droppedDatagrams++;
  }

  private settle(tid: number, r: RpcResponse | PlainResponse): void {
    const p = this.pending.get(tid);
    if (!p) return; // a late answer to a retried request
    this.pending.delete(tid);
    if (r.ok) p.resolve(r.result);
    else p.reject(new DatapathError(r.error.code, r.error.message, p.verb));
  }

  private failAll(code: string, message: string): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(new DatapathError(code, message, p.verb));
  }
}
