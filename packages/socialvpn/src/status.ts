import type { Uid } from '@tincan/protocol';
import type { DayTraffic, MembershipStatus, OverlayCounters, RefusalCounts, TrickleCounters } from '@tincan/controller';

export interface SocialVpnCounters extends OverlayCounters {
  offers_proactive: number;
  links_trimmed_unfriended: number;
  uid_conflicts: number;
  roster_updates: number;
  mappings_created: number;
  mappings_removed: number;
  mappings_evicted: number;
  address_pool_exhausted: number;
  unmapped_not_friend: number;
  unmapped_offline: number;
}

/** One friend device and its address in our subnet (tincanctl shows these). */
export interface SocialVpnMappingStatus {
  uid: Uid;
  /** The friend (bare JID) the device belongs to. */
  jid: string;
  /** The device's full JID while it is online. */
  device_jid: string | null;
  /** The device's address in *our* subnet (the datapath translates its packets to it). */
  ip4: string;
  ip6: string;
  status: 'online' | 'offline' | 'conflict';
  link: string;
  role: string | null;
  adopted: boolean;
  /** The social profile links this device proactively (a frequent friend). */
  proactive: boolean;
  /** The friend's controller asked to keep the link (it links us proactively). */
  peer_keeps: boolean;
  score: number;
  traffic_today: DayTraffic;
  active_days: number;
  last_active_ms: number | null;
  since_ms: number;
  last_seen_ms: number;
  failures: number;
  retry_at_ms: number | null;
}

export interface SocialVpnStatus {
  updated_ms: number;
  mode: 'social';
  node: { uid: Uid; jid: string; ip4: string; ip6: string; subnet: string; vnic: string };
  policy: {
    link_policy: 'social-profile';
    max_links: number;
    idle_timeout_s: number;
    proactive_links: number;
    min_score: number;
    half_life_days: number;
    active_day_packets: number;
    own_devices: boolean;
  };
  datapath: { status: string; restarts: number; outages: number; last_error: string | null; handler_failures: Record<string, number> };
  xmpp: { state: string; jid: string | null };
  roster: { source: string; updated_ms: number | null; contacts: number; friends: string[] };
  addresses: { used: number; capacity: number };
  links: number;
  mappings: SocialVpnMappingStatus[];
  /** Online TinCan devices that announce a UID claimed by two JIDs at once (none is linked). */
  conflicts: { uid: Uid; jids: string[]; local: boolean }[];
  state_file: { path: string | null; last_error: string | null };
  counters: SocialVpnCounters;
  refusals: RefusalCounts;
  /** Trickle ICE signaling: con_cand sent, candidates sent, applied, buffered and dropped. */
  trickle: TrickleCounters;
  /** Who gets in (docs/security.md): pinned keys, refused key changes, presences refused by reason. */
  membership: MembershipStatus & { refusals: RefusalCounts };
}
