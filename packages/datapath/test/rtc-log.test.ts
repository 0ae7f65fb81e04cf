// libdatachannel's own log, through initRtcLog, on a real PeerConnection (no connectivity needed).
import { Writable } from 'node:stream';
import nodeDataChannel from 'node-datachannel';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { initRtcLog } from '../src/link.js';

describe('libdatachannel log', () => {
  afterAll(() => nodeDataChannel.cleanup());

  it('reaches the logger at the pino level matching its own, from the configured level up', async () => {
    const lines: { level: number; rtc: string; msg: string }[] = [];
    const sink = new Writable({ write(chunk: Buffer, _enc, done) { lines.push(JSON.parse(chunk.toString())); done(); } });
    initRtcLog('Debug', pino({ level: 'trace' }, sink));
    const pc = new nodeDataChannel.PeerConnection('rtc-log-test', { iceServers: [] });
    pc.createDataChannel('x', { negotiated: true, id: 0 });
    pc.setLocalDescription();
    await new Promise((r) => setTimeout(r, 300));
    pc.close();
    const byRtc = new Map(lines.map((l) => [l.rtc, l.level]));
    expect(byRtc.get('Info'), 'an Info message (state changes)').toBe(30);
    expect(byRtc.get('Debug'), 'a Debug message').toBe(20);
    expect(lines.every((l) => ['Debug', 'Info', 'Warning', 'Error', 'Fatal'].includes(l.rtc))).toBe(true); // nothing below Debug
  });
});
