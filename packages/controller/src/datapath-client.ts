import dgram from 'node:dgram';
import { readFile } from 'node:fs/promises';
import {
  MsgType,
  RpcEvent,
  RpcResponse,
  decodeDatagram,
  encodeControl,
  encodeDatagram,
  tokenFilePath,
  type RpcParams,
  type RpcResults,
  type Endpoint,
  type RpcVerb,
} from '@tincan/protocol';

export type DatapathAddress = Endpoint;

export interface DatapathClientOptions {
  rpc: DatapathAddress;
  /** The token, or where to read it (defaults to the datapath's file under stateDir). */
  token?: string;
  stateDir?: string;
  /** Per-attempt timeout; each request is sent up to `attempts` times (UDP). */
  timeoutMs?: number;
  attempts?: number;
}

/** The datapath answered with an error response. */
export class DatapathError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly verb: string,
  ) {
    super(`${verb}: ${message}`);
  }
}

interface Pending {
  verb: string;
  resolve(v: unknown): void;
  reject(e: Error): void;
}

/**
 * A client of the datapath's JSON-over-UDP RPC. One socket sends requests and, once `subscribe()`
 * registered it with set_cb_endpoint, receives events and packet frames. Only datagrams from the
 * datapath's own address and port are accepted (it holds that port, so nobody else can send from it).
 */
export class DatapathClient {
  private readonly socket: dgram.Socket;
  private readonly pending = new Map<number, Pending>();
  private nextTid = 1;
  private eventHandlers: ((e: RpcEvent) => void)[] = [];
  private packetHandlers: ((frame: Buffer) => void)[] = [];
  /** Datagrams that were not valid responses, events or packets from the datapath. */
  droppedDatagrams = 0;

  private constructor(
    private readonly rpc: DatapathAddress,
    private readonly token: string,
    private readonly timeoutMs: number,
    private readonly attempts: number,
  ) {
    this.socket = dgram.createSocket(rpc.address.includes(':') ? 'udp6' : 'udp4');
    this.socket.on('message', (msg, rinfo) => this.onDatagram(msg, rinfo));
    this.socket.on('error', () => undefined);
  }

  static async connect(opts: DatapathClientOptions): Promise<DatapathClient> {
    const token =
      opts.token ?? (await readFile(tokenFilePath(opts.stateDir ?? '/var/lib/tincan', opts.rpc.port), 'utf8')).trim();
    const c = new DatapathClient(opts.rpc, token, opts.timeoutMs ?? 5000, opts.attempts ?? 2);
    await new Promise<void>((resolve) => c.socket.bind(0, opts.rpc.address, resolve));
    return c;
  }

  get localPort(): number {
    return this.socket.address().port;
  }

  /** Calls one verb and resolves with its result, or rejects with DatapathError / a timeout. */
  call<M extends RpcVerb>(m: M, params: RpcParams<M>): Promise<RpcResults[M]> {
    const tid = this.nextTid++;
    const datagram = encodeControl({ ...params, tid, token: this.token, m });
    return new Promise<RpcResults[M]>((resolve, reject) => {
      let attempt = 0;
      let timer: NodeJS.Timeout;
      const send = () => {
        attempt++;
        this.socket.send(datagram, this.rpc.port, this.rpc.address);
        timer = setTimeout(() => {
          if (attempt < this.attempts) send();
          else {
            this.pending.delete(tid);
            reject(new Error(`${m}: no answer from the datapath at ${this.rpc.address}:${this.rpc.port}`));
          }
        }, this.timeoutMs);
      };
      this.pending.set(tid, {
        verb: m,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as RpcResults[M]);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      send();
    });
  }

  /** Makes this client the datapath's controller endpoint: events and packets come here. */
  async subscribe(): Promise<void> {
    await this.call('set_cb_endpoint', { address: this.rpc.address as '127.0.0.1' | '::1', port: this.localPort });
  }

  onEvent(cb: (e: RpcEvent) => void): void {
    this.eventHandlers.push(cb);
  }

  onPacket(cb: (frame: Buffer) => void): void {
    this.packetHandlers.push(cb);
  }

  /** Injects a frame ([src UID][dst UID][IP packet]) into the datapath. */
  sendPacket(frame: Buffer): void {
    this.socket.send(encodeDatagram(MsgType.Packet, frame), this.rpc.port, this.rpc.address);
  }

  close(): void {
    for (const p of this.pending.values()) p.reject(new Error('client closed'));
    this.pending.clear();
    this.socket.close();
  }

  private onDatagram(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (rinfo.port !== this.rpc.port || rinfo.address !== this.rpc.address) {
      this.droppedDatagrams++;
      return;
    }
    const d = decodeDatagram(msg);
    if (!d.ok) {
      this.droppedDatagrams++;
      return;
    }
    if (d.type === MsgType.Packet) {
      for (const h of this.packetHandlers) h(d.payload);
      return;
    }
    if (d.type !== MsgType.Control) {
      this.droppedDatagrams++;
      return;
    }
    let json: unknown;
    try {
      json = JSON.parse(d.payload.toString('utf8'));
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
    const p = this.pending.get(r.data.tid);
    if (!p) return; // a late answer to a retried request
    this.pending.delete(r.data.tid);
    if (r.data.ok) p.resolve(r.data.result);
    else p.reject(new DatapathError(r.data.error.code, r.data.error.message, p.verb));
  }
}
