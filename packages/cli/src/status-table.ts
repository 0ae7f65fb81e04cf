import type { StateResult } from '@tincan/protocol';

/** Renders get_state as the human table of `tincanctl status`. */
export function renderStatus(s: StateResult, now = Date.now()): string {
  const lines: string[] = [];
  const n = s.node;
  lines.push(`node     ${n.uid ?? '(no UID yet)'}  vnic ${n.vnic ?? '-'}  ip4 ${n.ip4 ?? '-'}  ip6 ${n.ip6 ?? '-'}  mtu ${n.mtu ?? '-'}${n.offload ? '  offload' : ''}`);
  lines.push(`identity ${n.fingerprint}`);
  lines.push(`xmpp     ${s.xmpp.state}${s.xmpp.jid ? ` as ${s.xmpp.jid}` : ''}${s.xmpp.overlay ? ` overlay ${s.xmpp.overlay}` : ''}  controller ${n.controller ?? 'none'}  up ${n.uptime_s}s`);
  lines.push('');
  // A LANES column only for a datapath with lanes (`--lanes N` > 1): lanes up of the lanes it runs.
  const withLanes = s.links.some((l) => l.lanes !== undefined);
  const rows: string[][] = [['PEER', 'VIRTUAL IP', 'STATE', 'PATH (local/remote)', 'FRAMES', ...(withLanes ? ['LANES'] : []), 'REMOTE ADDRESS', 'RTT', 'RX', 'TX', 'DROPS']];
  for (const l of s.links) {
    const drops = l.stats.drops_backpressure + l.stats.drops_spoofed + l.stats.drops_malformed;
    const lanes = l.lanes ? `${l.lanes.filter((x) => x.up).length}/${l.lanes.length}` : '-';
    rows.push([
      l.uid.slice(0, 12) + (l.jid ? ` ${l.jid.split('/')[0]}` : ''),
      [...l.ip4, ...l.ip6].join(',') || '-',
      // An up link's path health when it is not ok (checking, suspect, repairing).
      l.health !== undefined && l.health !== 'ok' ? `${l.state} ${l.health}` : l.state,
      l.local_candidate ? `${l.local_candidate}/${l.remote_candidate}` : '-',
      l.framing,
      ...(withLanes ? [lanes] : []),
      l.remote_address ?? '-',
      l.rtt_ms === null ? '-' : `${l.rtt_ms.toFixed(1)}ms`,
      `${l.stats.packets_in}p ${bytes(l.stats.bytes_in)}`,
      `${l.stats.packets_out}p ${bytes(l.stats.bytes_out)}`,
      String(drops),
    ]);
  }
  lines.push(...table(rows));
  if (s.links.length === 0) lines.push('(no links)');
  const repaired = s.links.filter((l) => (l.repairs ?? 0) > 0);
  if (repaired.length > 0) {
    lines.push('', 'repaired links (a new link made beside one whose path stopped carrying):');
    for (const l of repaired) {
      const ago = l.last_repair_ms == null ? '' : `, last ${Math.max(0, Math.round((now - l.last_repair_ms) / 1000))}s ago`;
      lines.push(`  ${l.uid.slice(0, 12)}  ${l.repairs} repair${l.repairs === 1 ? '' : 's'}${ago}${l.last_repair_reason ? `: ${l.last_repair_reason}` : ''}`);
    }
  }
  if (s.peers.length > 0) {
    lines.push('', 'online peers (XMPP):');
    for (const p of s.peers) {
      lines.push(`  ${p.uid.slice(0, 12)}  ${p.jid}${p.overlay ? `  overlay ${p.overlay}` : ''}${p.caps ? `  caps ${p.caps.join(',')}` : ''}  heard ${Math.max(0, Math.round((now - p.last_heard_ms) / 1000))}s ago`);
    }
  }
  if (s.transit || s.routes.length > 0 || s.subnets.length > 0) {
    lines.push('', `overlay routes (transit ${s.transit ? 'on' : 'off'}):`);
    for (const r of s.routes) lines.push(`  ${r.uid.slice(0, 12)}  via ${r.via.slice(0, 12)}  ${r.packets_out}p sent`);
    for (const n of s.subnets) lines.push(`  ${n.subnet}  behind ${n.uid.slice(0, 12)}`);
  }
  return lines.join('\n');
}

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
}

function bytes(n: number): string {
  if (n < 1024) return `${n}B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)}K`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)}M`;
  return `${(n / 1024 ** 3).toFixed(2)}G`;
}

/** Counter names that count refused or dropped input (routing adverts, channel datagrams, handler failures). */
const DROP_COUNTER = /malformed|wrong_sender|bad_mac|no_key|failed|other_overlay|in_use|not_neighbour|not_member|dropped|refused|not_granted/;

/**
 * The controller's drops of hostile or broken input, from its status file (groupvpn-status.json:
 * routing counters; both controllers: datapath handler failures): one line, non-zero ones only; null
 * if there are none or the file says nothing usable.
 */
export function renderControllerDrops(status: unknown): string | null {
  if (typeof status !== 'object' || status === null) return null;
  const st = status as { routing?: { counters?: unknown }; datapath?: { handler_failures?: unknown } };
  const found: string[] = [];
  const add = (counters: unknown, prefix: string, all: boolean): void => {
    if (typeof counters !== 'object' || counters === null) return;
    for (const [k, v] of Object.entries(counters)) {
      if (typeof v === 'number' && v > 0 && (all || DROP_COUNTER.test(k))) found.push(`${prefix}${k}=${v}`);
    }
  };
  add(st.routing?.counters, '', false);
  add(st.datapath?.handler_failures, 'handler_failed ', true);
  return found.length ? `controller drops: ${found.join(', ')}` : null;
}

/** The parts of a controller's status file (groupvpn-status.json, socialvpn-status.json) shown here. */
interface MembershipView {
  mode?: unknown;
  refusals?: unknown;
  pending_keys?: unknown;
  pinned?: unknown;
  members?: unknown;
  own_cert?: unknown;
  expiring?: unknown;
}

/**
 * The "membership" lines of `tincanctl status`, from a controller's status file: who gets in, what
 * was refused and why, key changes waiting for `tincanctl trust accept`, certificate expiry. The file
 * is read defensively: anything unexpected is skipped, never thrown.
 */
export function renderMembership(ctl: string, statusFile: unknown, now = Date.now()): string[] {
  const m = (statusFile as { membership?: MembershipView } | null)?.membership;
  if (!m || typeof m !== 'object') return [];
  const lines = ['', `membership (${ctl}): ${m.mode === 'ca' ? 'membership CA' : 'keys pinned on first use'}${typeof m.pinned === 'number' && m.mode !== 'ca' ? `, ${m.pinned} pinned` : ''}`];
  const members = m.members as { groups?: string[]; jids?: string[]; domains?: string[] } | null | undefined;
  if (members && typeof members === 'object') {
    const parts = [['groups', members.groups], ['jids', members.jids], ['domains', members.domains]]
      .filter(([, v]) => Array.isArray(v) && v.length > 0)
      .map(([k, v]) => `${String(k)} ${(v as string[]).join(',')}`);
    if (parts.length) lines.push(`  members: ${parts.join('; ')}`);
  }
  const own = m.own_cert as { expires_ms?: number | null; problem?: string | null; warning?: string | null } | null | undefined;
  if (own && typeof own === 'object') {
    if (typeof own.problem === 'string') lines.push(`  our certificate: PROBLEM ${own.problem}`);
    else if (typeof own.warning === 'string') lines.push(`  our certificate: WARNING ${own.warning}`);
    else if (typeof own.expires_ms === 'number') lines.push(`  our certificate: valid until ${new Date(own.expires_ms).toISOString()} (${days(own.expires_ms - now)})`);
  }
  if (Array.isArray(m.expiring)) {
    for (const e of m.expiring as { uid?: string; jid?: string; expires_ms?: number }[]) {
      if (typeof e?.uid === 'string' && typeof e.expires_ms === 'number') {
        lines.push(`  WARNING ${e.uid.slice(0, 12)} ${e.jid ?? ''}: its certificate expires ${new Date(e.expires_ms).toISOString()} (${days(e.expires_ms - now)})`);
      }
    }
  }
  if (m.refusals && typeof m.refusals === 'object') {
    const r = Object.entries(m.refusals as Record<string, unknown>).filter(([, n]) => typeof n === 'number' && n > 0);
    lines.push(`  presences refused: ${r.length ? r.map(([k, n]) => `${k} ${String(n)}`).join(', ') : 'none'}`);
  }
  if (Array.isArray(m.pending_keys)) {
    for (const p of m.pending_keys as { jid?: string; uid?: string; fingerprint?: string }[]) {
      if (typeof p?.uid !== 'string') continue;
      lines.push(`  KEY CHANGED ${p.jid ?? '?'} ${p.uid.slice(0, 12)}: new key ${p.fingerprint ?? '?'} refused (tincanctl trust accept ${p.uid.slice(0, 12)})`);
    }
  }
  return lines;
}

function days(ms: number): string {
  if (ms <= 0) return 'expired';
  return ms < 86_400_000 ? `${Math.round(ms / 3_600_000)} h left` : `${Math.round(ms / 86_400_000)} days left`;
}
