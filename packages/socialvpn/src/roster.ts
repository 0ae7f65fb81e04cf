import type { EventOf } from '@tincan/protocol';
import { bareJid } from '@tincan/controller';

export { bareJid };
export type Subscription = EventOf<'roster'>['items'][number]['subscription'];

/**
 * The XMPP roster as the SocialVPN's trust relation (paper §4.3, "only a user's XMPP buddies will be
 * part of a user's social VPN"): a contact is a friend only with a mutual subscription ("both") —
 * each has agreed to see the other's presence. "to", "from", "none" and a removed item are not.
 */
export class Roster {
  private readonly items = new Map<string, Subscription>();
  /** When the roster was last set or changed; null: never heard (nobody is a friend). */
  updatedMs: number | null = null;
  /** Where the current roster came from: the datapath (XMPP), or the state file (after a controller restart). */
  source: 'none' | 'xmpp' | 'state' = 'none';

  /** Loads a persisted roster (state file). */
  load(items: Record<string, Subscription>, updatedMs: number): void {
    this.items.clear();
    for (const [jid, sub] of Object.entries(items)) if (sub !== 'remove') this.items.set(bareJid(jid), sub);
    this.updatedMs = updatedMs;
    this.source = 'state';
  }

  /**
   * Applies a roster event (the full roster, or a push); returns the bare JIDs whose friendship
   * changed (became or stopped being mutual).
   */
  apply(e: Pick<EventOf<'roster'>, 'items' | 'full'>, now: number): { added: string[]; removed: string[] } {
    const before = new Set(this.mutual());
    if (e.full) this.items.clear();
    for (const it of e.items) {
      const jid = bareJid(it.jid);
      if (it.subscription === 'remove') this.items.delete(jid);
      else this.items.set(jid, it.subscription);
    }
    this.updatedMs = now;
    this.source = 'xmpp';
    const after = new Set(this.mutual());
    return {
      added: [...after].filter((j) => !before.has(j)),
      removed: [...before].filter((j) => !after.has(j)),
    };
  }

  isFriend(bare: string): boolean {
    return this.items.get(bare) === 'both';
  }

  subscription(bare: string): Subscription | undefined {
    return this.items.get(bare);
  }

  mutual(): string[] {
    return [...this.items].filter(([, s]) => s === 'both').map(([j]) => j);
  }

  get size(): number {
    return this.items.size;
  }

  toJSON(): Record<string, Subscription> {
    return Object.fromEntries([...this.items].sort(([a], [b]) => (a < b ? -1 : 1)));
  }
}
