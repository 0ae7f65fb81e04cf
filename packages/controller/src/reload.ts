import type { Logger } from 'pino';
import type { LogLevelName } from '@tincan/protocol';

/**
 * Config reload (SIGHUP) helpers: which settings changed between two loaded configs, and a logger
 * whose level can change for every child logger at once.
 */

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * The key paths ("max_links", "routing.deny", "xmpp.password") whose values differ between two
 * configs. Objects are compared key by key; arrays and other values as a whole. Values are never
 * returned (a password may be among them), only where they differ.
 */
export function changedKeys(a: unknown, b: unknown, prefix = ''): string[] {
  if (isPlainObject(a) && isPlainObject(b)) {
    const out: string[] = [];
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      out.push(...changedKeys(a[k], b[k], prefix ? `${prefix}.${k}` : k));
    }
    return out;
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [prefix || '(top level)'];
}

/** Splits changed keys into those in `live` (a key or a key below one) and the others. */
export function splitChanges(changed: readonly string[], live: readonly string[]): { live: string[]; restart: string[] } {
  const isLive = (k: string) => live.some((l) => k === l || k.startsWith(`${l}.`));
  return { live: changed.filter(isLive), restart: changed.filter((k) => !isLive(k)) };
}

/**
 * pino child loggers take their parent's level when they are made and keep it: setLevel() changes
 * the level of the root logger and of every child (and grandchild) still alive.
 */
export class LiveLevel {
  private readonly loggers = new Set<WeakRef<Logger>>();

  /** The pino option that registers each child logger as it is made. */
  readonly onChild = (child: Logger): void => {
    if (this.loggers.size >= 256) this.prune();
    this.loggers.add(new WeakRef(child));
  };

  track(root: Logger): void {
    this.loggers.add(new WeakRef(root));
  }

  setLevel(level: LogLevelName): void {
    for (const ref of this.loggers) {
      const l = ref.deref();
      if (l) l.level = level;
      else this.loggers.delete(ref);
    }
  }

  private prune(): void {
    for (const ref of this.loggers) if (!ref.deref()) this.loggers.delete(ref);
  }
}
