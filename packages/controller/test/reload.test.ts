import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { LiveLevel, changedKeys, splitChanges } from '../src/reload.js';

describe('config reload helpers', () => {
  it('changedKeys: key paths whose values differ, objects key by key, arrays whole', () => {
    const a = { max_links: 32, xmpp: { host: 'x', password: 'old' }, routing: { deny: ['10.0.0.2'], multihop: true }, stun: [] };
    const b = { max_links: 8, xmpp: { host: 'x', password: 'new' }, routing: { deny: ['10.0.0.2', '10.0.0.3'], multihop: true }, stun: [], extra: 1 };
    expect(changedKeys(a, b).sort()).toEqual(['extra', 'max_links', 'routing.deny', 'xmpp.password']);
    expect(changedKeys(a, structuredClone(a))).toEqual([]);
    // Where, never what: a changed password shows up as its key only.
    expect(JSON.stringify(changedKeys(a, b))).not.toContain('new');
  });

  it('splitChanges: a live key covers the keys below it', () => {
    expect(splitChanges(['log_level', 'routing.deny', 'routing.topology', 'vnic.ip4', 'turn'], ['log_level', 'routing.deny', 'turn'])).toEqual({
      live: ['log_level', 'routing.deny', 'turn'],
      restart: ['routing.topology', 'vnic.ip4'],
    });
  });

  it('LiveLevel.setLevel reaches child and grandchild loggers made before it', () => {
    const lines: Record<string, unknown>[] = [];
    const levels = new LiveLevel();
    const root = pino({ level: 'info', onChild: levels.onChild }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
    levels.track(root);
    const child = root.child({ component: 'signaling' });
    const grandchild = child.child({ peer: 'ab' });
    grandchild.debug('hidden');
    expect(lines).toEqual([]);
    levels.setLevel('debug');
    grandchild.debug('shown');
    child.debug('shown too');
    root.debug('and here');
    expect(lines.map((l) => l.msg)).toEqual(['shown', 'shown too', 'and here']);
    levels.setLevel('warn');
    child.info('hidden again');
    expect(lines).toHaveLength(3);
  });
});
