import type { Logger } from 'pino';
import { SocialVpnState, type Uid } from '@tincan/protocol';
import { readStateFileSync, type AddressPool, type Subnet4, type TrafficProfile } from '@tincan/controller';
import { bareJid, type Roster } from './roster.js';

/** A friend device's address in our subnet, as kept in the state file. */
export interface Mapping {
  /** The owner: the friend's bare JID. */
  jid: string;
  ip4: string;
  since_ms: number;
  last_seen_ms: number;
  peer_keeps?: boolean;
}

/** What socialvpn-state.json is made of: the controller's identity, addresses, roster and history. */
export interface SocialStateParts {
  uid: Uid;
  subnet: Subnet4;
  ip4: string;
  pool: AddressPool;
  mappings: Map<Uid, Mapping>;
  roster: Roster;
  profile: TrafficProfile;
}

/** Reads the state file (null if there is none; StateFileError if it cannot be used). */
export function loadSocialState(path: string): SocialVpnState | null {
  return readStateFileSync(path, (data) => {
    const r = SocialVpnState.safeParse(data);
    if (r.success) return { ok: true, value: r.data };
    const first = r.error.issues[0];
    return { ok: false, problem: first ? `${first.path.map(String).join('.') || '(top level)'}: ${first.message}` : 'invalid' };
  });
}

/** Puts the saved addresses (those that still fit the subnet) and roster back. */
export function restoreSocialState(s: SocialVpnState, into: Omit<SocialStateParts, 'profile'>, log: Logger): void {
  if (s.subnet !== into.subnet.cidr || s.address !== into.ip4) {
    log.warn(
      { was: `${s.address} in ${s.subnet}`, now: `${into.ip4} in ${into.subnet.cidr}` },
      'the subnet or own address changed: friends\' addresses that do not fit any more get new ones',
    );
  }
  const entries = Object.entries(s.mappings).sort(([, a], [, b]) => a.since_ms - b.since_ms);
  for (const [uid, m] of entries) {
    if (uid === into.uid || !into.pool.assign(uid, m.ip4)) {
      log.warn({ peer: uid.slice(0, 12), jid: m.jid, ip4: m.ip4 }, 'a stored address does not fit the subnet: the device gets a new one');
      continue;
    }
    into.mappings.set(uid, { ...m, jid: bareJid(m.jid) });
  }
  if (s.roster) into.roster.load(s.roster.items, s.roster.updated_ms);
}

export function socialStateSnapshot(p: SocialStateParts): SocialVpnState {
  const mappings: SocialVpnState['mappings'] = {};
  for (const [uid, m] of [...p.mappings].sort(([a], [b]) => (a < b ? -1 : 1))) mappings[uid] = { ...m };
  return {
    version: 1,
    uid: p.uid,
    subnet: p.subnet.cidr,
    address: p.ip4,
    next_ip4: p.pool.cursor,
    mappings,
    roster: p.roster.updatedMs === null ? null : { updated_ms: p.roster.updatedMs, items: p.roster.toJSON() },
    traffic: p.profile.toJSON(),
  };
}
