import { spawn } from 'node:child_process';
import type { GroupNode } from './group-node.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Pings `address` from `node` every `intervalS` for `seconds` while `during` runs (started after 1 s);
 * returns the requests sent, the replies, the longest gap between consecutive replies and the last
 * reply's time (ping's own -D timestamps, in ms).
 */
export async function pingDuring(node: GroupNode, address: string, seconds: number, during: () => Promise<void>, intervalS = 0.1) {
  const child = spawn('ip', ['netns', 'exec', node.ns, 'ping', '-D', '-i', String(intervalS), '-W', '1', '-w', String(seconds), address]);
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  const done = new Promise<void>((r) => { child.once('exit', () => r()); });
  await sleep(1000);
  await during();
  await done;
  const times = [...out.matchAll(/^\[(\d+\.\d+)\].*time=/gm)].map((m) => Number(m[1]) * 1000);
  let maxGap = 0;
  for (let i = 1; i < times.length; i++) maxGap = Math.max(maxGap, times[i]! - times[i - 1]!);
  const sent = Number(/(\d+) packets transmitted/.exec(out)?.[1] ?? 0);
  return { sent, replies: times.length, maxGapMs: Math.round(maxGap), lastMs: times.at(-1) ?? 0 };
}
