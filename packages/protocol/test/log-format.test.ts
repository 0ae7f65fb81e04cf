import { describe, expect, it } from 'vitest';
import { formatLogLine, parseLogLevel, terminalDestination } from '../src/log-format.js';

const time = new Date(2026, 0, 2, 3, 4, 5, 67).getTime();

describe('terminal log lines', () => {
  it('formats a pino line: time, level, component, message, then the other fields', () => {
    const line = JSON.stringify({ level: 40, time, pid: 1, hostname: 'h', name: 'tincan-groupvpn', component: 'groupvpn', peer: '5f1c0a9e02b4', jid: 'n2@vpn example', n: 3, msg: 'member online' });
    expect(formatLogLine(line)).toBe('03:04:05.067 WARN  groupvpn: member online peer=5f1c0a9e02b4 jid="n2@vpn example" n=3\n');
    expect(formatLogLine(line, true)).toContain('\x1b[33mWARN \x1b[0m');
  });

  it('shows an error by its message, with the stack under an error or fatal line only', () => {
    const err = { type: 'Error', message: 'boom', stack: 'Error: boom\n    at f (x.js:1:1)' };
    expect(formatLogLine(JSON.stringify({ level: 50, time, err, msg: 'failed' }))).toBe('03:04:05.067 ERROR failed err=boom\n    at f (x.js:1:1)\n');
    expect(formatLogLine(JSON.stringify({ level: 30, time, err, msg: 'retrying' }))).toBe('03:04:05.067 INFO  retrying err=boom\n');
  });

  it('passes anything that is not JSON through as it is', () => {
    expect(formatLogLine('plain text')).toBe('plain text\n');
  });

  it('terminalDestination: the readable form on a terminal (colour unless NO_COLOR), pino\'s JSON otherwise', () => {
    const out: string[] = [];
    const tty = { isTTY: true, write: (s: string) => out.push(s) };
    expect(terminalDestination({ isTTY: false, write: () => true })).toBeUndefined();
    terminalDestination(tty, { NO_COLOR: '1' })!.write(JSON.stringify({ level: 30, time, msg: 'hi' }));
    terminalDestination(tty, {})!.write(JSON.stringify({ level: 30, time, msg: 'hi' }));
    expect(out).toEqual(['03:04:05.067 INFO  hi\n', '03:04:05.067 \x1b[32mINFO \x1b[0m hi\n']);
  });

  it('parseLogLevel names the choices (and the usual slip)', () => {
    expect(parseLogLevel('debug')).toBe('debug');
    expect(() => parseLogLevel('warning')).toThrow('expected one of fatal, error, warn, info, debug, trace, silent ("warn", not "warning")');
  });
});
