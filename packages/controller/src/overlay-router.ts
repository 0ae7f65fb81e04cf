import { ROUTES_PER_MESSAGE, UNREACHABLE_HOPS, type OverlayRoute, type Uid } from '@tincan/protocol';
import type { Clock, TimerHandle } from './clock.js';

/** The best way this node knows to a destination. */
export interface Route {
  uid: Uid;
  /** The neighbour (a node we have an up link to) the route goes through; `uid` itself if direct. */
  via: Uid;
  /** Overlay hops: 1 for a neighbour. */
  hops: number;
  /** What the destination announced about itself (its virtual IPv4 address, its routed subnets). */
  ip4?: string;
  subnets?: string[];
}

export interface OverlayRouterOptions {
  self: Uid;
  /** Longest usable route, in overlay hops (the original TinCan's multi-hop limit was 10). */
  maxHops?: number;
  /** Full tables go to every neighbour this often (changes go at once, batched). */
  refreshMs?: number;
  /** Routes a neighbour stopped advertising are forgotten after this long. */
  expireMs?: number;
  /** Changes are sent after this delay, so that a burst of changes makes one update. */
  batchMs?: number;
  /**
   * A new neighbour gets our table this long after its link came up: the datapath learns the
   * neighbour's addresses in the same moment, and a message sent before that would not find them.
   */
  greetMs?: number;
  /**
   * The controller's admission predicate: only adverts from members count, and only routes to
   * members are learned and used (asked again on every advert and recompute; call membersChanged()
   * when its answers change).
   */
  isMember(uid: Uid): boolean;
  /**
   * Checks what a route says about its destination (its address binding, its subnets): the route as
   * accepted (subnets it may not route left out), or null to drop it. The hook counts its own refusals.
   */
  vet?(route: OverlayRoute): OverlayRoute | null;
  /** At most this many destinations learned from one neighbour (config routing.max_routes_per_neighbour). */
  maxRoutesPerNeighbour: number;
  /** At most this many learned entries from all neighbours together (config routing.max_routes). */
  maxRoutes: number;
  clock: Clock;
  /** What this node announces about itself (its own entry, hops 0). */
  local(): { ip4?: string; subnets?: string[] };
  /**
   * A neighbour's virtual IPv4 address as the caller already knows it (from making the link), used
   * until the neighbour's own announcement arrives, so that the route we advertise for it is usable
   * at once.
   */
  neighbourIp4?(uid: Uid): string | undefined;
  /** Sends one advertisement (at most ROUTES_PER_MESSAGE routes) to a neighbour. */
  send(neighbour: Uid, routes: OverlayRoute[]): void;
  /** The best routes changed (see routes()). */
  changed(): void;
}

export interface RouterCounters {
  adverts_sent: number;
  adverts_received: number;
  /** From a node we have no up link to: ignored. */
  adverts_not_neighbour: number;
  /** From a neighbour that is not (or no longer) an admitted member: ignored. */
  adverts_not_member: number;
  /** A hop count of 0 for anyone but the sender, or more than 0 for the sender itself. */
  routes_dropped_false_origin: number;
  /** A route to a UID that is not an admitted member. */
  routes_dropped_not_member: number;
  /** Refused by the controller's vet hook (which counts the details). */
  routes_dropped_vetted: number;
  /** A new destination from a neighbour that already gave us maxRoutesPerNeighbour. */
  routes_dropped_neighbour_cap: number;
  /** A new destination while maxRoutes entries are learned. */
  routes_dropped_total_cap: number;
}

interface Learned {
  hops: number;
  ip4?: string;
  subnets?: string[];
  atMs: number;
}

/**
 * Distance-vector routing between controllers: each node tells its neighbours how many
 * overlay hops away every node it knows is; a node's best route to D is through the neighbour that
 * reports D closest. Poison reverse (a route is advertised as unreachable to the neighbour it goes
 * through), a hop limit, triggered updates and expiry keep it loop-free and quick to converge. Works on
 * any link topology: a partial mesh (members that may not or cannot link directly) or the structured
 * ring. Pure logic: the caller carries the messages and applies the routes to the datapath.
 */
export class OverlayRouter {
  readonly maxHops: number;
  private readonly refreshMs: number;
  private readonly expireMs: number;
  private readonly batchMs: number;
  private readonly neighbours = new Set<Uid>();
  /** What each neighbour told us: neighbour → destination → entry. */
  private readonly learned = new Map<Uid, Map<Uid, Learned>>();
  private best = new Map<Uid, Route>();
  /** Destinations we lost: advertised as unreachable until this time, so neighbours drop them now. */
  private readonly withdrawn = new Map<Uid, number>();
  private batchTimer: TimerHandle | null = null;
  private readonly greetings = new Map<Uid, TimerHandle>();
  private refreshTimer: TimerHandle | null = null;
  private stopped = false;
  /** Learned entries in all neighbours' tables together (bounded by maxRoutes). */
  private learnedCount = 0;
  /** Counters for the status file: adverts, and every route dropped, by why. */
  readonly counters: RouterCounters = {
    adverts_sent: 0, adverts_received: 0, adverts_not_neighbour: 0, adverts_not_member: 0,
    routes_dropped_false_origin: 0, routes_dropped_not_member: 0, routes_dropped_vetted: 0,
    routes_dropped_neighbour_cap: 0, routes_dropped_total_cap: 0,
  };

  constructor(private readonly opts: OverlayRouterOptions) {
    this.maxHops = opts.maxHops ?? 10;
    this.refreshMs = opts.refreshMs ?? 120_000;
    this.expireMs = opts.expireMs ?? 3 * this.refreshMs + 5_000;
    this.batchMs = opts.batchMs ?? 200;
    this.scheduleRefresh();
  }

  /** The current best routes, by destination (neighbours included, with via = themselves). */
  routes(): ReadonlyMap<Uid, Route> {
    return this.best;
  }

  route(uid: Uid): Route | undefined {
    return this.best.get(uid);
  }

  isNeighbour(uid: Uid): boolean {
    return this.neighbours.has(uid);
  }

  /** A link to `uid` is up: it is a neighbour; it gets our whole table (after greetMs). */
  neighbourUp(uid: Uid): void {
    if (uid === this.opts.self || this.neighbours.has(uid)) return;
    this.neighbours.add(uid);
    this.recompute();
    const greet = this.opts.clock.setTimeout(() => {
      this.greetings.delete(uid);
      if (this.neighbours.has(uid)) this.sendTable(uid);
    }, this.opts.greetMs ?? 1_000);
    this.greetings.set(uid, greet);
  }

  /** The link to `uid` is gone: every route through it goes at once. */
  neighbourDown(uid: Uid): void {
    if (!this.neighbours.delete(uid)) return;
    this.learnedCount -= this.learned.get(uid)?.size ?? 0;
    this.learned.delete(uid);
    const greet = this.greetings.get(uid);
    if (greet !== undefined) this.opts.clock.clearTimeout(greet);
    this.greetings.delete(uid);
    this.recompute();
  }

  /**
   * An advertisement from a neighbour. Ignored unless the neighbour is an admitted member; each route
   * is dropped (and counted) if it makes a false zero-hop claim, leads to a non-member, fails the vet
   * hook, or would grow the neighbour's table or the whole over its cap. Withdrawals always apply.
   * Routes are recomputed only if what was learned changed.
   */
  receive(from: Uid, routes: readonly OverlayRoute[]): boolean {
    if (!this.neighbours.has(from)) {
      this.counters.adverts_not_neighbour++;
      return false;
    }
    if (!this.opts.isMember(from)) {
      this.counters.adverts_not_member++;
      return false;
    }
    this.counters.adverts_received++;
    const now = this.opts.clock.now();
    let table = this.learned.get(from);
    if (!table) this.learned.set(from, (table = new Map()));
    let changed = false;
    for (const raw of routes) {
      if (raw.uid === this.opts.self) continue;
      if (raw.hops >= UNREACHABLE_HOPS) {
        if (table.delete(raw.uid)) {
          this.learnedCount--;
          changed = true;
        }
        continue;
      }
      if (raw.uid === from ? raw.hops !== 0 : raw.hops === 0) {
        this.counters.routes_dropped_false_origin++; // only the sender itself is 0 hops from the sender
        continue;
      }
      if (!this.opts.isMember(raw.uid)) {
        this.counters.routes_dropped_not_member++;
        continue;
      }
      const r = this.opts.vet ? this.opts.vet(raw) : raw;
      if (r === null) {
        this.counters.routes_dropped_vetted++;
        continue;
      }
      const old = table.get(r.uid);
      if (!old) {
        if (table.size >= this.opts.maxRoutesPerNeighbour) {
          this.counters.routes_dropped_neighbour_cap++;
          continue;
        }
        if (this.learnedCount >= this.opts.maxRoutes) {
          this.counters.routes_dropped_total_cap++;
          continue;
        }
        this.learnedCount++;
      }
      const subnets = r.subnets?.length ? r.subnets : undefined;
      if (!old || old.hops !== r.hops || old.ip4 !== r.ip4 || (old.subnets ?? []).join() !== (subnets ?? []).join()) changed = true;
      table.set(r.uid, { hops: r.hops, ...(r.ip4 ? { ip4: r.ip4 } : {}), ...(subnets ? { subnets } : {}), atMs: now });
    }
    if (changed) this.recompute();
    return true;
  }

  /** The admission predicate's answers changed (members joined or left): routes are recomputed. */
  membersChanged(): void {
    this.recompute();
  }

  /** Learned entries: in all, and from each neighbour (bounded by the caps). */
  learnedSizes(): { total: number; perNeighbour: Map<Uid, number> } {
    return { total: this.learnedCount, perNeighbour: new Map([...this.learned].map(([n, t]) => [n, t.size])) };
  }

  /** Re-sends our own entry (our subnets changed, say). */
  localChanged(): void {
    this.scheduleBatch();
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.greetings.values()) this.opts.clock.clearTimeout(t);
    this.greetings.clear();
    if (this.batchTimer !== null) this.opts.clock.clearTimeout(this.batchTimer);
    if (this.refreshTimer !== null) this.opts.clock.clearTimeout(this.refreshTimer);
    this.batchTimer = this.refreshTimer = null;
  }

  // ---------------------------------------------------------------------------------------------

  private recompute(): void {
    const now = this.opts.clock.now();
    const next = new Map<Uid, Route>();
    for (const n of this.neighbours) {
      const self = this.learned.get(n)?.get(n);
      const ip4 = self?.ip4 ?? this.opts.neighbourIp4?.(n);
      next.set(n, { uid: n, via: n, hops: 1, ...(ip4 ? { ip4 } : {}), ...(self?.subnets ? { subnets: self.subnets } : {}) });
    }
    for (const [n, table] of this.learned) {
      for (const [dst, e] of table) {
        if (now - e.atMs > this.expireMs) {
          table.delete(dst);
          this.learnedCount--;
          continue;
        }
        if (dst === n || this.neighbours.has(dst) || !this.opts.isMember(dst)) continue;
        const hops = e.hops + 1;
        if (hops > this.maxHops) continue;
        if (!better(n, hops, next.get(dst), this.best.get(dst)?.via)) continue;
        next.set(dst, { uid: dst, via: n, hops, ...(e.ip4 ? { ip4: e.ip4 } : {}), ...(e.subnets ? { subnets: e.subnets } : {}) });
      }
    }
    for (const [uid, until] of this.withdrawn) if (until <= now || next.has(uid)) this.withdrawn.delete(uid);
    if (sameRoutes(this.best, next)) return;
    for (const uid of this.best.keys()) if (!next.has(uid)) this.withdrawn.set(uid, now + this.expireMs);
    this.best = next;
    this.opts.changed();
    this.scheduleBatch();
  }

  /** Our advertisement for one neighbour: ourselves, then every route (poisoned if through it). */
  private tableFor(neighbour: Uid): OverlayRoute[] {
    const local = this.opts.local();
    const out: OverlayRoute[] = [{ uid: this.opts.self, hops: 0, ...(local.ip4 ? { ip4: local.ip4 } : {}), ...(local.subnets?.length ? { subnets: local.subnets } : {}) }];
    for (const r of this.best.values()) {
      if (r.uid === neighbour) continue;
      const hops = r.via === neighbour ? UNREACHABLE_HOPS : r.hops;
      out.push({ uid: r.uid, hops, ...(r.ip4 ? { ip4: r.ip4 } : {}), ...(r.subnets ? { subnets: r.subnets } : {}) });
    }
    for (const uid of this.withdrawn.keys()) if (uid !== neighbour) out.push({ uid, hops: UNREACHABLE_HOPS });
    return out;
  }

  private sendTable(neighbour: Uid): void {
    const table = this.tableFor(neighbour);
    for (let i = 0; i < table.length; i += ROUTES_PER_MESSAGE) {
      this.counters.adverts_sent++;
      this.opts.send(neighbour, table.slice(i, i + ROUTES_PER_MESSAGE));
    }
  }

  private sendAll(): void {
    for (const n of this.neighbours) this.sendTable(n);
  }

  private scheduleBatch(): void {
    if (this.stopped || this.batchTimer !== null) return;
    this.batchTimer = this.opts.clock.setTimeout(() => {
      this.batchTimer = null;
      this.sendAll();
    }, this.batchMs);
  }

  private scheduleRefresh(): void {
    if (this.stopped) return;
    this.refreshTimer = this.opts.clock.setTimeout(() => {
      this.refreshTimer = null;
      this.recompute(); // expires stale routes
      this.sendAll();
      this.scheduleRefresh();
    }, this.refreshMs);
  }
}

/** Fewest hops wins; on a tie the route in use stays (stability), else the lower neighbour UID. */
function better(via: Uid, hops: number, cur: Route | undefined, inUse: Uid | undefined): boolean {
  if (!cur) return true;
  if (hops !== cur.hops) return hops < cur.hops;
  if (cur.via === inUse) return false;
  if (via === inUse) return true;
  return via < cur.via;
}

function sameRoutes(a: ReadonlyMap<Uid, Route>, b: ReadonlyMap<Uid, Route>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, r] of a) {
    const o = b.get(k);
    if (!o || o.via !== r.via || o.hops !== r.hops || o.ip4 !== r.ip4 || (o.subnets ?? []).join() !== (r.subnets ?? []).join()) return false;
  }
  return true;
}
