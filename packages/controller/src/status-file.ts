import type { Logger } from 'pino';
import type { Clock } from './clock.js';
import { PersistentJsonFile } from './state-file.js';

/**
 * A JSON status file a controller keeps current for operators and tools (e.g. groupvpn-status.json):
 * the same atomic, coalesced writer as the state file, readable by anyone (0644) and rewritten at
 * most about once per `minIntervalMs`.
 */
export class StatusFile extends PersistentJsonFile {
  constructor(path: string, clock: Clock, logger: Logger, minIntervalMs = 1_000) {
    super(path, clock, logger, { mode: 0o644, soonMs: minIntervalMs, label: 'status file' });
  }
}
