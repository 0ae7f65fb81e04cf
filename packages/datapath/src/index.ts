export { Datapath, type DatapathOptions } from './datapath.js';
export { ForwardingTable, type Peer } from './forwarding-table.js';
export { RpcServer, RpcError, type Endpoint, type RpcHandler } from './rpc-server.js';
