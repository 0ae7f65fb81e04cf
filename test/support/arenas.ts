import { readFileSync } from 'node:fs';

const ARENA_HEAP = 64n << 20n; // glibc's HEAP_MAX_SIZE on 64-bit

/**
 * The thread arenas a datapath (or lane) process has once its program is loaded, before its arena cap
 * (native-heap.ts) applies: compiling the bundle gives node's 4 V8 platform threads one each, plus one
 * that exists at node's start. With the cap, no later thread (node-datachannel's) adds one; without
 * it, each of them does (9-10 with links).
 */
export const ARENAS_BEFORE_CAP = 5;

/**
 * The glibc malloc arenas of process `pid` besides the main one, read from /proc/PID/maps: each thread
 * arena is a 64 MiB-aligned heap of 64 MiB, a read-write start followed by the reserved (---p) rest.
 * Read from outside the process, so that it does not take the datapath's own word for its arena limit.
 */
export function threadArenas(pid: number): number {
  const maps = readFileSync(`/proc/${pid}/maps`, 'utf8').trim().split('\n').map((line) => {
    const [range = '', perms = ''] = line.split(' ');
    const [start = '0', end = '0'] = range.split('-');
    return { start: BigInt(`0x${start}`), end: BigInt(`0x${end}`), perms };
  });
  let n = 0;
  for (let i = 0; i < maps.length; i++) {
    const m = maps[i]!;
    const next = maps[i + 1];
    if (m.start % ARENA_HEAP !== 0n || !m.perms.startsWith('rw')) continue;
    const whole = m.end - m.start === ARENA_HEAP;
    const withReserve = next !== undefined && next.start === m.end && next.perms === '---p' && next.end - m.start === ARENA_HEAP;
    if (whole || withReserve) n++;
  }
  return n;
}
