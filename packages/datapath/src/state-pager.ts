import type { LinkInfo, PeerInfo, RouteInfo, StatePage, StateResult, SubnetInfo } from '@tincan/protocol';
import { RpcError } from './rpc-server.js';

/**
 * get_state in pages of one datagram each. An answer that fits is sent whole; otherwise the first
 * page carries the node's own state and the first list items, and a snapshot of the lists is kept for
 * the session that asked (one per session, the latest) until it expires, so that get_state_page reads
 * a consistent whole. Pages are cut by the JSON size of their items.
 */
type Item =
  | { list: 'links'; value: LinkInfo }
  | { list: 'peers'; value: PeerInfo }
  | { list: 'routes'; value: RouteInfo }
  | { list: 'subnets'; value: SubnetInfo };

interface Snapshot {
  id: number;
  items: Item[];
  sizes: number[];
  expiresMs: number;
}

/** Bytes of JSON a page may hold: a datagram is 65,507 bytes, less the seal and the answer's envelope. */
export const STATE_PAGE_BYTES = 60_000;
/** A snapshot lives this long after its last read. */
export const STATE_SNAPSHOT_TTL_MS = 30_000;
/** Snapshots kept at most (one per session). */
const MAX_SNAPSHOTS = 32;

export class StatePager {
  private readonly snapshots = new Map<number, Snapshot>();
  private nextId = 1;

  constructor(
    private readonly pageBytes = STATE_PAGE_BYTES,
    private readonly now: () => number = Date.now,
  ) {}

  /** The answer to get_state from `session`: `state` whole, or its first page with `more`. */
  first(session: number, state: StateResult): StateResult {
    this.prune();
    const items: Item[] = [
      ...state.links.map((value) => ({ list: 'links', value }) as const),
      ...state.peers.map((value) => ({ list: 'peers', value }) as const),
      ...state.routes.map((value) => ({ list: 'routes', value }) as const),
      ...state.subnets.map((value) => ({ list: 'subnets', value }) as const),
    ];
    const sizes = items.map((i) => Buffer.byteLength(JSON.stringify(i.value)) + 1);
    const head: StateResult = { ...state, links: [], peers: [], routes: [], subnets: [] };
    // The node's own part, and room for `more`.
    const headBytes = Buffer.byteLength(JSON.stringify(head)) + 100;
    if (headBytes + sizes.reduce((a, b) => a + b, 0) <= this.pageBytes) {
      this.snapshots.delete(session);
      return state;
    }
    const id = this.nextId++;
    const snap: Snapshot = { id, items, sizes, expiresMs: this.now() + STATE_SNAPSHOT_TTL_MS };
    this.snapshots.delete(session);
    this.snapshots.set(session, snap);
    if (this.snapshots.size > MAX_SNAPSHOTS) this.snapshots.delete(this.snapshots.keys().next().value!);
    const page = this.cut(snap, 0, this.pageBytes - headBytes);
    return { ...head, links: page.links, peers: page.peers, routes: page.routes, subnets: page.subnets, more: { snapshot: id, next: page.next ?? items.length, items: items.length } };
  }

  /** get_state_page: the items of `snapshot` from `offset` on, as many as fit. */
  page(session: number, snapshot: number, offset: number): StatePage {
    this.prune();
    const snap = this.snapshots.get(session);
    if (!snap || snap.id !== snapshot) {
      throw new RpcError('not_found', `no snapshot ${snapshot} for this session (expired, or replaced by a later get_state): call get_state again`);
    }
    if (offset > snap.items.length) throw new RpcError('bad_request', `offset ${offset} is past the snapshot's ${snap.items.length} items`);
    snap.expiresMs = this.now() + STATE_SNAPSHOT_TTL_MS;
    return this.cut(snap, offset, this.pageBytes - 100);
  }

  /** Items from `offset` while they fit in `budget` bytes (at least one, so that reading ends). */
  private cut(snap: Snapshot, offset: number, budget: number): StatePage {
    const page: StatePage = { links: [], peers: [], routes: [], subnets: [], next: null };
    let used = 0;
    let i = offset;
    for (; i < snap.items.length; i++) {
      const size = snap.sizes[i]!;
      if (i > offset && used + size > budget) break;
      used += size;
      const item = snap.items[i]!;
      (page[item.list] as unknown[]).push(item.value);
    }
    page.next = i < snap.items.length ? i : null;
    return page;
  }

  private prune(): void {
    const now = this.now();
    for (const [session, snap] of this.snapshots) if (snap.expiresMs <= now) this.snapshots.delete(session);
  }
}
