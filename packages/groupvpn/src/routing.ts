import { readFile } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import type { Logger } from 'pino';
import {
  cidrContains,
  parseCidr,
  uidFromIp4,
  type ControllerMessage,
  type RoutingConfig,
  type StateResult,
  type Uid,
} from '@tincan/protocol';
import {
  ControllerChannel,
  OverlayRouter,
  StructuredTopology,
  errorMessage,
  type Clock,
  type DatapathSupervisor,
  type Subnet4,
} from '@tincan/controller';

export interface GroupRoutingOptions {
  uid: Uid;
  ip4: string;
  subnet: Subnet4;
  networkId: string;
  vnicName: string;
  mtu: number;
  routing: RoutingConfig;
  supervisor: DatapathSupervisor;
  clock: Clock;
  log: Logger;
  /** Maps a member's addresses in the datapath (idempotent). */
  mapPeer(uid: Uid, ip4: string): Promise<void>;
  /** Removes a member's mapping (no route and no link to it any more). */
  unmapPeer(uid: Uid): void;
  /** A linked member's address as the link's negotiation established it. */
  peerIp4(uid: Uid): string | undefined;
  /** Is there a link to this member (up or being made)? */
  linked(uid: Uid): boolean;
  /** Poll interval of the controller (shortcut rates are measured over it). */
  pollIntervalMs: number;
  refreshMs?: number;
  /** The subnets of this host's other interfaces (default: read from the OS each time). */
  hostSubnets?: () => string[];
}

export interface GroupRoutingCounters {
  routes_installed: number;
  route_errors: number;
  subnets_installed: number;
  subnets_refused: number;
  route_bindings_refused: number;
  shortcuts_wanted: number;
}

export interface RoutingStatus {
  multihop: boolean;
  topology: string;
  channel: string | null;
  structural_links: number;
  routes: { uid: Uid; ip4: string | null; via: Uid; hops: number; subnets: string[] }[];
  subnets: { subnet: string; uid: Uid }[];
  counters: GroupRoutingCounters & Record<string, number>;
}

/**
 * GroupVPN's overlay routing (issue 6): the inter-controller channel, the distance-vector router, the
 * structured topology and router mode, and what they install in the datapath: `set_transit` (this
 * node relays), `set_route` (member → neighbour to send through) with the member's address mapping, and
 * `set_remote_subnet` (a subnet another member routes for). The controller calls in on link and
 * membership changes; everything here is idempotent and re-applied after a datapath restart.
 */
export class GroupRouting {
  readonly router: OverlayRouter | null;
  readonly channel: ControllerChannel | null;
  readonly topology: StructuredTopology | null;
  readonly counters: GroupRoutingCounters = {
    routes_installed: 0, route_errors: 0, subnets_installed: 0, subnets_refused: 0, route_bindings_refused: 0, shortcuts_wanted: 0,
  };
  private readonly deny: Set<Uid>;
  /** What the datapath holds: destination → via, and subnet → member. */
  private readonly installed = new Map<Uid, Uid>();
  private readonly installedSubnets = new Map<string, Uid>();
  /** Routed packets per destination at the last snapshot (shortcut detection). */
  private readonly lastRouted = new Map<Uid, number>();
  private attachedOnce = false;

  constructor(private readonly opts: GroupRoutingOptions) {
    const r = opts.routing;
    this.deny = new Set(r.deny.map(uidFromIp4));
    this.topology = r.topology === 'structured' ? new StructuredTopology(opts.uid) : null;
    if (!r.multihop) {
      this.router = null;
      this.channel = null;
      return;
    }
    const log = opts.log.child({ component: 'routing' });
    this.channel = new ControllerChannel({ uid: opts.uid, mtu: opts.mtu, clock: opts.clock, log, onMessage: (m) => this.onMessage(m) });
    this.router = new OverlayRouter({
      self: opts.uid,
      clock: opts.clock,
      ...(opts.refreshMs !== undefined ? { refreshMs: opts.refreshMs } : {}),
      local: () => ({ ip4: opts.ip4, subnets: r.advertise }),
      neighbourIp4: (uid) => opts.peerIp4(uid),
      send: (to, routes) => this.channel!.send(to, { t: 'routes', from: opts.uid, overlay: opts.networkId, routes }),
      changed: () => this.apply(),
    });
  }

  /** A config reload: the new `routing.deny`; returns the members denied now and not before. */
  setDeny(ip4s: readonly string[]): Uid[] {
    const next = new Set(ip4s.map(uidFromIp4));
    const added = [...next].filter((uid) => !this.deny.has(uid));
    this.deny.clear();
    for (const uid of next) this.deny.add(uid);
    return added;
  }

  /** Never link to this member directly (config `routing.deny`). */
  denied(uid: Uid): boolean {
    return this.deny.has(uid);
  }

  /** Is (self, uid) a structural link of the structured topology? */
  structural(uid: Uid): boolean {
    return this.topology?.wants(uid) ?? false;
  }

  /** Do we have a multi-hop route to this member (its mapping must stay when a direct link goes)? */
  routed(uid: Uid): boolean {
    const r = this.router?.route(uid);
    return r !== undefined && r.via !== uid;
  }

  /** The membership changed: the ring is recomputed; true if its links did. */
  membersChanged(members: Iterable<Uid>): boolean {
    return this.topology?.update(members) ?? false;
  }

  /** The datapath is (again) ours: relay for others, open the channel, install every route. */
  async attached(): Promise<void> {
    if (!this.router) return;
    await this.opts.supervisor.call('set_transit', { enabled: true });
    this.channel!.open();
    if (!this.attachedOnce) {
      this.attachedOnce = true;
      if (this.opts.routing.advertise.length > 0) this.warnIfNotForwarding();
    }
    this.apply();
  }

  /** The datapath restarted: its links, routes and subnets are gone. */
  datapathRestarted(): void {
    this.installed.clear();
    this.installedSubnets.clear();
    this.lastRouted.clear();
    if (!this.router) return;
    for (const uid of [...this.router.routes().keys()]) if (this.router.isNeighbour(uid)) this.router.neighbourDown(uid);
  }

  linkUp(uid: Uid): void {
    this.router?.neighbourUp(uid);
  }

  linkClosed(uid: Uid): void {
    this.router?.neighbourDown(uid);
    this.channel?.forget(uid);
  }

  /** Packets of our own messages on the link to `uid` (not traffic, for idle trimming). */
  controlPackets(uid: Uid): number {
    return this.channel?.packetsWith(uid) ?? 0;
  }

  /**
   * A get_state snapshot: members that this node sends enough routed traffic to deserve a direct
   * link (structured: over shortcut_pps; mesh: any, as on-demand links are made for any traffic).
   */
  shortcuts(state: StateResult): Uid[] {
    const want: Uid[] = [];
    const threshold = this.topology ? (this.opts.routing.shortcut_pps * this.opts.pollIntervalMs) / 1000 : 1;
    const seen = new Set<Uid>();
    for (const r of state.routes) {
      seen.add(r.uid);
      const before = this.lastRouted.get(r.uid);
      this.lastRouted.set(r.uid, r.packets_out);
      if (before === undefined || r.packets_out - before < threshold) continue;
      if (this.deny.has(r.uid) || this.opts.linked(r.uid)) continue;
      this.counters.shortcuts_wanted++;
      want.push(r.uid);
    }
    for (const uid of [...this.lastRouted.keys()]) if (!seen.has(uid)) this.lastRouted.delete(uid);
    return want;
  }

  stop(): void {
    this.router?.stop();
    this.channel?.close();
  }

  status(): RoutingStatus {
    const routes = this.router
      ? [...this.router.routes().values()].map((r) => ({ uid: r.uid, ip4: r.ip4 ?? null, via: r.via, hops: r.hops, subnets: r.subnets ?? [] }))
      : [];
    routes.sort((a, b) => a.hops - b.hops || (a.uid < b.uid ? -1 : 1));
    return {
      multihop: this.router !== null,
      topology: this.opts.routing.topology,
      channel: this.channel ? (this.channel.bound ? `[${this.channel.address}]:5802` : 'binding') : null,
      structural_links: this.topology?.wanted().size ?? 0,
      routes,
      subnets: [...this.installedSubnets].map(([subnet, uid]) => ({ subnet, uid })),
      counters: { ...this.counters, ...(this.router?.counters ?? {}), ...(this.channel?.counters ?? {}) },
    };
  }

  // ---------------------------------------------------------------------------------------------

  private onMessage(msg: ControllerMessage): void {
    if (msg.overlay !== this.opts.networkId) return;
    this.router?.receive(msg.from, msg.routes);
  }

  /** Brings the datapath's routes and subnets in line with the router's best routes. */
  private apply(): void {
    const router = this.router;
    if (!router) return;
    const wantRoutes = new Map<Uid, Uid>();
    const wantSubnets = new Map<string, Uid>();
    for (const r of router.routes().values()) {
      if (r.ip4 !== undefined && !(this.opts.subnet.isPeerAddress(r.ip4) && uidFromIp4(r.ip4) === r.uid)) {
        this.counters.route_bindings_refused++; // a GroupVPN UID is SHA-1 of its address: anything else is a lie
        continue;
      }
      for (const s of r.subnets ?? []) {
        if (this.acceptSubnet(s) && !wantSubnets.has(s)) wantSubnets.set(s, r.uid);
      }
      if (r.via === r.uid || r.ip4 === undefined) continue; // a neighbour: its link carries its mapping
      wantRoutes.set(r.uid, r.via);
      void this.opts.mapPeer(r.uid, r.ip4).catch((err: unknown) => this.failed('map', r.uid, err));
    }
    for (const [uid, via] of wantRoutes) {
      if (this.installed.get(uid) === via) continue;
      this.installed.set(uid, via);
      this.counters.routes_installed++;
      this.opts.supervisor.call('set_route', { uid, via }).catch((err: unknown) => this.failed('set_route', uid, err));
    }
    for (const uid of [...this.installed.keys()]) {
      if (wantRoutes.has(uid)) continue;
      this.installed.delete(uid);
      this.opts.supervisor.call('set_route', { uid, via: null }).catch((err: unknown) => this.failed('set_route', uid, err));
      if (!this.opts.linked(uid)) this.opts.unmapPeer(uid);
    }
    for (const [subnet, uid] of wantSubnets) {
      if (this.installedSubnets.get(subnet) === uid) continue;
      this.installedSubnets.set(subnet, uid);
      this.counters.subnets_installed++;
      this.opts.supervisor.call('set_remote_subnet', { uid, subnet }).catch((err: unknown) => this.failed('set_remote_subnet', uid, err));
    }
    for (const [subnet, uid] of [...this.installedSubnets]) {
      if (wantSubnets.has(subnet)) continue;
      this.installedSubnets.delete(subnet);
      this.opts.supervisor
        .call('set_remote_subnet', { uid, subnet, remove: true })
        .catch((err: unknown) => this.failed('set_remote_subnet', uid, err));
    }
  }

  private failed(what: string, uid: Uid, err: unknown): void {
    this.counters.route_errors++;
    this.opts.log.debug({ peer: uid.slice(0, 12), what, err: errorMessage(err) }, 'routing: datapath call failed');
  }

  /**
   * A subnet another member advertises is installed only inside `routing.accept`, outside the VPN's
   * own subnet, our own advertised subnets and every subnet of this host's other interfaces (a member
   * must not be able to pull the underlay's traffic into the VPN).
   */
  private acceptSubnet(s: string): boolean {
    const r = this.opts.routing;
    const ok =
      r.accept.some((a) => contains(a, s)) &&
      !overlaps(s, this.opts.subnet.cidr) &&
      !r.advertise.some((own) => overlaps(s, own)) &&
      !(this.opts.hostSubnets ?? (() => this.hostSubnets()))().some((h) => overlaps(s, h));
    if (!ok) this.counters.subnets_refused++;
    return ok;
  }

  private hostSubnets(): string[] {
    const out: string[] = [];
    for (const [name, addrs] of Object.entries(networkInterfaces())) {
      if (name === this.opts.vnicName) continue;
      for (const a of addrs ?? []) if (a.cidr && !a.internal) out.push(a.cidr);
    }
    return out;
  }

  private warnIfNotForwarding(): void {
    readFile('/proc/sys/net/ipv4/ip_forward', 'utf8')
      .then((v) => {
        if (v.trim() !== '1') {
          this.opts.log.warn(
            { advertise: this.opts.routing.advertise },
            'router mode: this host does not forward IPv4 (net.ipv4.ip_forward=0); the advertised subnets will not be reachable',
          );
        }
      })
      .catch(() => undefined);
  }
}

/** Does CIDR `outer` contain CIDR `inner` entirely? */
function contains(outer: string, inner: string): boolean {
  const o = parseCidr(outer);
  const i = parseCidr(inner);
  return o.family === i.family && i.prefix >= o.prefix && cidrContains(outer, i.address);
}

function overlaps(a: string, b: string): boolean {
  return contains(a, b) || contains(b, a);
}
