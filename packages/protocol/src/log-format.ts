import type * as z from 'zod';
import { LogLevel } from './rpc.js';

/** "info", "debug", …: a value of LogLevel. */
export type LogLevelName = z.infer<typeof LogLevel>;

/**
 * How the programs log: pino's JSON lines (one object per line, numeric levels) when stdout is not a
 * terminal (systemd's journal, a pipe, the tests), and a short human-readable line when it is:
 *
 *     12:04:31.207 INFO  groupvpn: member online peer=5f1c0a9e02b4 jid="n2@vpn.example.org"
 *
 * The terminal form is made here from pino's own JSON line (a pino destination that rewrites each
 * line), so both forms carry the same fields. No I/O: the caller hands in where the text goes.
 */

const LEVEL_LABELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const LEVEL_COLORS: Record<number, string> = { 10: '90', 20: '36', 30: '32', 40: '33', 50: '31', 60: '35' };
/** pino's own keys, shown in the line's head or left out. */
const HEAD_KEYS = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name', 'component', 'v']);

function pad2(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

function showValue(v: unknown): string {
  if (typeof v === 'string') return /^[\w.:/@+-]+$/.test(v) ? v : JSON.stringify(v);
  return JSON.stringify(v) ?? String(v);
}

/** One pino JSON line → one (or, with an error's stack, a few) human-readable lines. */
export function formatLogLine(line: string, color = false): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line.endsWith('\n') ? line : `${line}\n`;
  }
  const level = typeof rec.level === 'number' ? rec.level : 30;
  const t = new Date(typeof rec.time === 'number' ? rec.time : Date.now());
  const time = `${pad2(t.getHours())}:${pad2(t.getMinutes())}:${pad2(t.getSeconds())}.${pad2(t.getMilliseconds(), 3)}`;
  const label = (LEVEL_LABELS[level] ?? String(level)).padEnd(5);
  const shownLabel = color ? `\x1b[${LEVEL_COLORS[level] ?? '0'}m${label}\x1b[0m` : label;
  const component = typeof rec.component === 'string' ? `${rec.component}: ` : '';
  const fields: string[] = [];
  const stacks: string[] = [];
  for (const [k, v] of Object.entries(rec)) {
    if (HEAD_KEYS.has(k)) continue;
    if (v !== null && typeof v === 'object' && typeof (v as { stack?: unknown }).stack === 'string') {
      fields.push(`${k}=${showValue((v as { message?: unknown }).message ?? '')}`);
      if (level >= 50) stacks.push(...(v as { stack: string }).stack.split('\n').slice(1).map((s) => `    ${s.trim()}`));
      continue;
    }
    fields.push(`${k}=${showValue(v)}`);
  }
  const msg = typeof rec.msg === 'string' ? rec.msg : '';
  const text = [`${time} ${shownLabel} ${component}${msg}`, ...fields].join(' ');
  return `${[text, ...stacks].join('\n')}\n`;
}

/** A pino destination that writes formatLogLine's text through `write` (for a terminal). */
export function terminalLogStream(write: (text: string) => void, color = false): { write(line: string): void } {
  return { write: (line: string) => write(formatLogLine(line, color)) };
}

/** The log levels `--log-level`, TINCAN_LOG_LEVEL and "log_level" take. */
export const LOG_LEVELS: readonly LogLevelName[] = LogLevel.options;

/** A log level from the command line or the environment; throws a one-line message naming the choices. */
export function parseLogLevel(v: string): LogLevelName {
  const r = LogLevel.safeParse(v);
  if (r.success) return r.data;
  const hint = v === 'warning' ? ' ("warn", not "warning")' : '';
  throw new Error(`expected one of ${LOG_LEVELS.join(', ')}${hint}`);
}

/**
 * A program's pino destination: the terminal form when `out` (process.stdout) is a terminal, in
 * colour unless NO_COLOR is set; undefined otherwise (pino's JSON lines to stdout).
 */
export function terminalDestination(
  out: { isTTY?: boolean; write(text: string): unknown },
  env: Record<string, string | undefined> = {},
): { write(line: string): void } | undefined {
  return out.isTTY ? terminalLogStream((text) => void out.write(text), !env.NO_COLOR) : undefined;
}
