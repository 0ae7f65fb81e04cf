// A lane process of `tincan-datapath --lanes N`: forked by the primary datapath (lanes/lanes.ts) with
// an IPC channel, never started by hand. It exits when the primary goes away (the IPC channel closes),
// so a killed primary leaves no orphan behind.
import pino from 'pino';
import { LogLevel, terminalDestination } from '@tincan/protocol';
import { LaneWorker } from './lane-worker.js';

const lane = process.env.TINCAN_LANE ?? '?';
// The primary checked the level it was given; an environment it did not check falls back to info.
const level = LogLevel.catch('info').parse(process.env.TINCAN_LOG_LEVEL ?? 'info');
const logger = pino({ name: 'tincan-datapath', level }, terminalDestination(process.stdout, process.env)).child({ lane });

if (!process.send) {
  logger.fatal('a lane process is started by tincan-datapath --lanes, with an IPC channel');
  process.exit(2);
}
const send = process.send.bind(process);
const worker = new LaneWorker((msg) => {
  if (process.connected) send(msg);
}, logger);
process.on('message', (msg) => worker.onMessage(msg));
const stop = (why: string) => {
  logger.info({ why }, 'lane stopping');
  worker.stop();
  process.exit(0);
};
process.on('disconnect', () => stop('primary gone'));
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
