/** Traffic of one UTC day with one peer. */
export interface DayTraffic {
  bytes: number;
  packets: number;
}

/** A link's cumulative counters as last counted (to count only what is new, across restarts). */
export interface LinkCounters {
  created_ms: number;
  bytes: number;
  packets: number;
}

export interface TrafficRecord {
  /** "YYYY-MM-DD" (UTC) → traffic that day. */
  days: Record<string, DayTraffic>;
  link: LinkCounters | null;
}

export interface TrafficProfileOptions {
  /** An active day counts half as much after this many days. */
  halfLifeDays: number;
  /** A day is active when at least this many packets went either way. */
  activeDayPackets: number;
  /** Days older than this are forgotten (default: 6 half-lives, at least 7, at most 400). */
  keepDays?: number;
}

const DAY_MS = 86_400_000;

/** "YYYY-MM-DD" of a time (UTC). */
export function utcDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

function dayIndex(day: string): number {
  return Math.floor(Date.parse(`${day}T00:00:00Z`) / DAY_MS);
}

/**
 * Per-peer traffic history for a "social profile" link policy (paper §4.3: proactive links with the
 * peers one communicated with frequently in past sessions). Traffic is fed from the datapath's
 * cumulative link counters (get_state) and kept per UTC day. The activity score of a peer is
 * Σ 0.5^(age in days / halfLifeDays) over its active days (today: age 0). With a 7-day half-life a
 * peer used every day scores about 10, one used once a week about 2, one used once a month under 1.2,
 * one used today only 1.
 */
export class TrafficProfile {
  private readonly records = new Map<string, TrafficRecord>();
  readonly halfLifeDays: number;
  readonly activeDayPackets: number;
  readonly keepDays: number;

  constructor(opts: TrafficProfileOptions, initial?: Record<string, TrafficRecord>) {
    this.halfLifeDays = opts.halfLifeDays;
    this.activeDayPackets = opts.activeDayPackets;
    this.keepDays = opts.keepDays ?? Math.min(400, Math.max(7, Math.ceil(6 * opts.halfLifeDays)));
    for (const [k, r] of Object.entries(initial ?? {})) {
      this.records.set(k, { days: { ...r.days }, link: r.link ? { ...r.link } : null });
    }
  }

  /**
   * Feeds a link's cumulative counters; counts what is new since the last call. A link with another
   * `created_ms` (re-made), or counters that went back, starts over. Returns true if anything new.
   */
  observe(key: string, link: LinkCounters, now: number): boolean {
    const r = this.record(key);
    const last = r.link;
    let bytes = link.bytes;
    let packets = link.packets;
    if (last && last.created_ms === link.created_ms && link.bytes >= last.bytes && link.packets >= last.packets) {
      bytes -= last.bytes;
      packets -= last.packets;
    }
    r.link = { ...link };
    if (bytes <= 0 && packets <= 0) return false;
    this.add(key, bytes, packets, now);
    return true;
  }

  /** Adds traffic to today's record of `key`. */
  add(key: string, bytes: number, packets: number, now: number): void {
    const r = this.record(key);
    const day = utcDay(now);
    const d = r.days[day] ?? { bytes: 0, packets: 0 };
    d.bytes += Math.max(0, bytes);
    d.packets += Math.max(0, packets);
    r.days[day] = d;
    this.prune(r, now);
  }

  /** The activity score of `key` now (0 without history). */
  score(key: string, now: number): number {
    const r = this.records.get(key);
    if (!r) return 0;
    const today = Math.floor(now / DAY_MS);
    let s = 0;
    for (const [day, t] of Object.entries(r.days)) {
      if (t.packets < this.activeDayPackets) continue;
      const age = Math.max(0, today - dayIndex(day));
      if (age > this.keepDays) continue;
      s += 0.5 ** (age / this.halfLifeDays);
    }
    return Math.round(s * 1000) / 1000;
  }

  /** The best `k` of `keys` by score, among those scoring at least `minScore` (ties: smaller key). */
  top(keys: Iterable<string>, k: number, minScore: number, now: number): Set<string> {
    if (k <= 0) return new Set();
    const scored: { key: string; s: number }[] = [];
    for (const key of keys) {
      const s = this.score(key, now);
      if (s > 0 && s >= minScore) scored.push({ key, s });
    }
    scored.sort((a, b) => b.s - a.s || (a.key < b.key ? -1 : 1));
    return new Set(scored.slice(0, k).map((x) => x.key));
  }

  /** Today's traffic and the total kept, for status. */
  summary(key: string, now: number): { today: DayTraffic; total: DayTraffic; active_days: number } {
    const r = this.records.get(key);
    const today = r?.days[utcDay(now)] ?? { bytes: 0, packets: 0 };
    const total = { bytes: 0, packets: 0 };
    let active = 0;
    for (const t of Object.values(r?.days ?? {})) {
      total.bytes += t.bytes;
      total.packets += t.packets;
      if (t.packets >= this.activeDayPackets) active++;
    }
    return { today: { ...today }, total, active_days: active };
  }

  /** Forgets a peer's history (e.g. no longer a friend). */
  forget(key: string): void {
    this.records.delete(key);
  }

  has(key: string): boolean {
    return this.records.has(key);
  }

  keys(): IterableIterator<string> {
    return this.records.keys();
  }

  /** Drops days that fell out of the window; returns true if something was dropped. */
  pruneAll(now: number): boolean {
    let changed = false;
    for (const [k, r] of this.records) {
      if (this.prune(r, now)) changed = true;
      if (Object.keys(r.days).length === 0 && r.link === null) this.records.delete(k);
    }
    return changed;
  }

  toJSON(): Record<string, TrafficRecord> {
    const out: Record<string, TrafficRecord> = {};
    for (const [k, r] of [...this.records].sort(([a], [b]) => (a < b ? -1 : 1))) out[k] = { days: { ...r.days }, link: r.link };
    return out;
  }

  private record(key: string): TrafficRecord {
    let r = this.records.get(key);
    if (!r) {
      r = { days: {}, link: null };
      this.records.set(key, r);
    }
    return r;
  }

  private prune(r: TrafficRecord, now: number): boolean {
    const today = Math.floor(now / DAY_MS);
    let changed = false;
    for (const day of Object.keys(r.days)) {
      const idx = dayIndex(day);
      if (!Number.isFinite(idx) || today - idx > this.keepDays) {
        delete r.days[day];
        changed = true;
      }
    }
    return changed;
  }
}
