import type { RpcEvent, RpcParams, RpcResults, RpcVerb } from '@tincan/protocol';

/**
 * What a controller needs from the datapath: the part of DatapathClient it uses. Controllers take
 * this interface, so unit tests can drive them with a fake datapath.
 */
export interface DatapathPort {
  call<M extends RpcVerb>(m: M, params: RpcParams<M>): Promise<RpcResults[M]>;
  /** Registers this client as the datapath's event endpoint (set_cb_endpoint). */
  subscribe(): Promise<void>;
  onEvent(cb: (e: RpcEvent) => void): void;
  onPacket(cb: (frame: Buffer) => void): void;
  sendPacket(frame: Buffer): void;
  close(): void;
  /** The local UDP port events arrive on (compared with get_state's node.controller). */
  readonly localPort?: number;
}

/** The RPC error code of a DatapathError (or anything shaped like one), else null. */
export function rpcErrorCode(err: unknown): string | null {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof (err as { code: unknown }).code === 'string') {
    return (err as { code: string }).code;
  }
  return null;
}

/** True when the datapath answered "unauthorized": it restarted and wrote a new token. */
export function isUnauthorized(err: unknown): boolean {
  return rpcErrorCode(err) === 'unauthorized';
}

/** True when the datapath did not answer at all (no DatapathError code: timeout or socket error). */
export function isNoAnswer(err: unknown): boolean {
  return rpcErrorCode(err) === null;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
