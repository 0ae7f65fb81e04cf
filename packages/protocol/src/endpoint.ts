/** A UDP endpoint: the datapath's RPC, or a controller's event socket. */
export interface Endpoint {
  address: string;
  port: number;
}

/** "127.0.0.1:5801" or "[::1]:5801" → { address, port }. */
export function parseEndpoint(s: string): Endpoint {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) throw new Error(`expected address:port, got "${s}"`);
  return { address: (m[1] ?? m[2])!, port };
}
