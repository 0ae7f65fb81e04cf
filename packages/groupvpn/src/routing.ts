import { readFile } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import type { Logger } from 'pino';
import type { KeyObject } from 'node:crypto';
import {
  cidrCovers,
  cidrOverlaps,
  uidFromIp4,
  type ControllerMessage,
  type OverlayRoute,
  type RoutingConfig,
  type StateResult,
  type Uid,
} from '@tincan/protocol';
import {
  ChannelKeyring,
  ControllerChannel,
  OverlayRouter,
  loadNodeKey,
  StructuredTopology,
  errorMessage,
  type Clock,
  type ControllerChannelOptions,
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
  /** The admission predicate: is `uid` an admitted member (or one just gone, within its grace)? */
  isMember(uid: Uid): boolean;
  /** The node certificate the controller trusts for a member (or one just gone, within its grace), or null. */
  memberCert(uid: Uid): string | null;
  /** With a membership CA: the subnets a member's certificate grants it; null without a CA (routing.routers decides). */
  grantedSubnets?(uid: Uid): string[] | null;
  /** The datapath's state directory: the node key (channel authentication) is read from there. */
  stateDir: string;
  /** This node's private key (default: the datapath's node-key.pem in stateDir; tests pass their own). */
  nodeKey?: () => Promise<KeyObject | null>;
  /** A linked member's address as the link's negotiation established it. */
  peerIp4(uid: Uid): string | undefined;
  /** Is there a link to this member (up or being made)? */
  linked(uid: Uid): boolean;
  /** Poll interval of the controller (shortcut rates are measured over it). */
  pollIntervalMs: number;
  refreshMs?: number;
  /** The controllers' channel: port and addresses (tests put it on loopback; default: the vNIC's). */
  channel?: Pick<ControllerChannelOptions, 'port' | 'address' | 'addressOf'>;
  /** The subnets of this host's other interfaces (default: read from the OS each time). */
  hostSubnets?: () => string[];
}

export interface GroupRoutingCounters {
  routes_installed: number;
  route_errors: number;
  subnets_installed: number;
  /** Advertised subnets this node will not install (routing.accept, overlaps with the VPN, the host or another member's). */
  subnets_refused: number;
  /** Advertised subnets outside what routing.routers grants their member: left out of the route. */
  subnets_not_granted: number;
  /** Routes whose address is not the one their UID derives from (dropped). */
  route_bindings_refused: number;
  /** Messages for another overlay (network id): ignored. */
  messages_other_overlay: number;
  shortcuts_wanted: number;
}

export interface RoutingStatus {
  multihop: boolean;
  topology: string;
  channel: string | null;
  structural_links: number;
  routes: { uid: Uid; ip4: string | null; via: Uid; hops: number; subnets: string[] }[];
  subnets: { subnet: string; uid: Uid }[];
  /** Learned routes held now, in all and from the neighbour that gave the most; and the caps. */
  learned: { total: number; max_per_neighbour: number; cap_total: number; cap_per_neighbour: number };
  /** Channel keys: peers whose certificate is known, and whether this node's own key was read. */
  auth: { node_key: boolean; peer_certs: number; allow_unauthenticated: boolean };
  /** Every drop and refusal of routing input, by why (router, channel, subnets, certificates, handler failures). */
  counters: GroupRoutingCounters & Record<string, number>;
}

/**
 * GroupVPN's overlay routing: the inter-controller channel, the distance-vector router, the
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
    routes_installed: 0, route_errors: 0, subnets_installed: 0, subnets_refused: 0, subnets_not_granted: 0, route_bindings_refused: 0,
    messages_other_overlay: 0, shortcuts_wanted: 0,
  };
  readonly keyring: ChannelKeyring;
  private readonly deny: Set<Uid>;
  /** routing.routers by member UID: the subnets each member may route. */
  private readonly grants: Map<Uid, string[]>;
  /** What the datapath holds: destination → via, and subnet → member. */
  private readonly installed = new Map<Uid, Uid>();
  private readonly installedSubnets = new Map<string, Uid>();
  /** Routed packets per destination at the last snapshot (shortcut detection). */
  private readonly lastRouted = new Map<Uid, number>();
  private attachedOnce = false;

  constructor(private readonly opts: GroupRoutingOptions) {
    const r = opts.routing;
    this.deny = new Set(r.deny.map(uidFromIp4));
    this.grants = new Map(Object.entries(r.routers).map(([ip4, subnets]) => [uidFromIp4(ip4), subnets]));
    this.keyring = new ChannelKeyring(opts.uid);
    this.topology = r.topology === 'structured' ? new StructuredTopology(opts.uid) : null;
    if (!r.multihop) {
      this.router = null;
      this.channel = null;
      return;
    }
    const log = opts.log.child({ component: 'routing' });
    this.channel = new ControllerChannel({
      uid: opts.uid,
      mtu: opts.mtu,
      clock: opts.clock,
      log,
      ...opts.channel,
      channelKey: (peer) => this.channelKey(peer),
      allowUnauthenticated: r.allow_unauthenticated,
      onMessage: (m) => this.onMessage(m),
    });
    this.router = new OverlayRouter({
      self: opts.uid,
      clock: opts.clock,
      isMember: (uid) => opts.isMember(uid),
      vet: (route) => this.vet(route),
      maxRoutesPerNeighbour: r.max_routes_per_neighbour,
      maxRoutes: r.max_routes,
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

  /** The membership changed: routes to non-members go, the ring is recomputed; true if its links did. */
  membersChanged(members: Iterable<Uid>): boolean {
    this.router?.membersChanged();
    return this.topology?.update(members) ?? false;
  }

  /** The key this node shares with `peer` for the controllers' channel, or null while unknown. */
  channelKey(peer: Uid): Buffer | null {
    return this.keyring.key(peer, this.opts.memberCert(peer));
  }

  /** The datapath is (again) ours: relay for others, open the channel, install every route. */
  async attached(): Promise<void> {
    if (!this.router) return;
    await this.opts.supervisor.call('set_transit', { enabled: true });
    if (!this.keyring.hasPrivateKey) {
      this.keyring.setPrivateKey(await (this.opts.nodeKey ?? (() => loadNodeKey(this.opts.stateDir)))());
      if (!this.keyring.hasPrivateKey) {
        this.opts.log.warn(
          { state_dir: this.opts.stateDir, allow_unauthenticated: this.opts.routing.allow_unauthenticated },
          'routing: cannot read the node key (node-key.pem): routes are exchanged only where routing.allow_unauthenticated allows',
        );
      }
    }
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
    const sizes = this.router?.learnedSizes();
    const r = this.opts.routing;
    return {
      multihop: this.router !== null,
      topology: this.opts.routing.topology,
      channel: this.channel ? (this.channel.bound ? `[${this.channel.address}]:5802` : 'binding') : null,
      structural_links: this.topology?.wanted().size ?? 0,
      routes,
      subnets: [...this.installedSubnets].map(([subnet, uid]) => ({ subnet, uid })),
      learned: {
        total: sizes?.total ?? 0,
        max_per_neighbour: Math.max(0, ...(sizes?.perNeighbour.values() ?? [])),
        cap_total: r.max_routes,
        cap_per_neighbour: r.max_routes_per_neighbour,
      },
      auth: { node_key: this.keyring.hasPrivateKey, peer_certs: this.keyring.size, allow_unauthenticated: r.allow_unauthenticated },
      counters: {
        ...this.counters,
        ...(this.router?.counters ?? {}),
        ...(this.channel?.counters ?? {}),
        ...this.keyring.counters,
        ...Object.fromEntries(Object.entries(this.channel?.failures ?? {}).map(([k, v]) => [`handler_failed ${k}`, v])),
      },
    };
  }

  // ---------------------------------------------------------------------------------------------

  private onMessage(msg: ControllerMessage): void {
    if (msg.overlay !== this.opts.networkId) {
      this.counters.messages_other_overlay++;
      return;
    }
    this.router?.receive(msg.from, msg.routes);
  }

  /**
   * What a route claims about its destination, checked before the router learns it: the address must
   * be the one the UID derives from (else the route is dropped), and each subnet must lie inside what
   * the member's membership certificate grants it, or without a CA what routing.routers grants it
   * (others are left out).
   */
  private vet(route: OverlayRoute): OverlayRoute | null {
    if (route.ip4 !== undefined && !(this.opts.subnet.isPeerAddress(route.ip4) && uidFromIp4(route.ip4) === route.uid)) {
      this.counters.route_bindings_refused++;
      return null;
    }
    if (!route.subnets?.length) return route;
    const granted = this.opts.grantedSubnets?.(route.uid) ?? this.grants.get(route.uid) ?? [];
    const subnets = route.subnets.filter((s) => granted.some((g) => cidrCovers(g, s)));
    this.counters.subnets_not_granted += route.subnets.length - subnets.length;
    return { ...route, subnets };
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
        if (wantSubnets.get(s) === r.uid) continue;
        // One router per address: never a slice of (or a cover over) a subnet another member routes.
        const taken = [...wantSubnets].some(([t, owner]) => owner !== r.uid && cidrOverlaps(t, s));
        if (taken) this.counters.subnets_refused++;
        else if (this.acceptSubnet(s)) wantSubnets.set(s, r.uid);
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
      r.accept.some((a) => cidrCovers(a, s)) &&
      !cidrOverlaps(s, this.opts.subnet.cidr) &&
      !r.advertise.some((own) => cidrOverlaps(s, own)) &&
      !(this.opts.hostSubnets ?? (() => this.hostSubnets()))().some((h) => cidrOverlaps(s, h));
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
