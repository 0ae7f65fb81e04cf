import { describe, expect, it } from 'vitest';
import { uidFromIp4, type RpcEvent } from '@tincan/protocol';
import { ManualClock } from '../src/clock.js';
import type { DatapathPort } from '../src/datapath-port.js';
import { DatapathSupervisor } from '../src/datapath-supervisor.js';
import { captureLogger, logged } from './test-helpers.js';

describe('datapath input handlers', () => {
  it('a handler that throws on an event or packet is a counted drop with one log line per minute, never an exception', async () => {
    const clock = new ManualClock();
    const { logger, lines } = captureLogger();
    let emitEvent: (e: RpcEvent) => void = () => undefined;
    let emitPacket: (f: Buffer) => void = () => undefined;
    const port = {
      onEvent: (cb: (e: RpcEvent) => void) => void (emitEvent = cb),
      onPacket: (cb: (f: Buffer) => void) => void (emitPacket = cb),
      close: () => undefined,
    } as unknown as DatapathPort;
    const handled: string[] = [];
    const sup = new DatapathSupervisor({
      client: port,
      clock,
      logger,
      handlers: {
        onEvent: (e) => {
          if (e.event === 'signal') throw new Error('a bug that a signal reaches');
          handled.push(e.event);
        },
        onPacket: () => {
          throw new TypeError('a bug that a packet reaches');
        },
        attach: async () => undefined,
        onState: () => undefined,
      },
    });
    const signal: RpcEvent = { event: 'signal', uid: uidFromIp4('10.254.0.2'), jid: 'x@y/z', type: 'con_req', data: {} };
    for (let i = 0; i < 100; i++) {
      expect(() => emitEvent(signal)).not.toThrow();
      expect(() => emitPacket(Buffer.alloc(60))).not.toThrow();
    }
    emitEvent({ event: 'xmpp', state: 'online' });
    expect(handled).toEqual(['xmpp']); // later events still get through
    expect(sup.handlerFailures).toEqual({ 'signal event': 100, packet: 100 });
    expect(logged(lines, 'input handler failed: input dropped')).toHaveLength(2);
    await clock.advance(61_000);
    emitEvent(signal);
    expect(logged(lines, 'input handler failed: input dropped').at(-1)).toMatchObject({ handler: 'signal event', suppressed: 99 });
    sup.stop();
  });
});
