// --sctp-send-buffer: its bounds, and its way to lane processes. test/datapath.test.ts checks in the lab
// that a link really holds no more than that in SCTP.
import { describe, expect, it } from 'vitest';
import { LaneInit } from '../src/lanes/lane-ipc.js';
import { VALID_LANE_INIT } from './fixtures/lane-init.js';
import pino from 'pino';
import { DEFAULT_SCTP_SEND_BUFFER, checkSctpSendBuffer } from '../src/link.js';
import { RtcLibrary } from '../src/rtc.js';

describe('--sctp-send-buffer', () => {
  it("takes whole bytes from 16 KiB to 16 MiB, libdatachannel's 1 MiB by default", () => {
    expect(DEFAULT_SCTP_SEND_BUFFER).toBe(1048576);
    for (const good of [16384, 65536, 131072, 1048576, 16777216]) expect(checkSctpSendBuffer(good)).toBe(good);
    for (const bad of [0, 16383, 16777217, 131072.5, -1, NaN, Infinity]) {
      expect(() => checkSctpSendBuffer(bad)).toThrow(/whole number of bytes, 16384–16777216/);
    }
  });

  it('is handed to libdatachannel when the library loads if valid, refused before it otherwise', () => {
    const log = pino({ level: 'silent' });
    expect(() => new RtcLibrary('Warning', log, 1024)).toThrow(/16384/);
    const rtc = new RtcLibrary('Warning', log, DEFAULT_SCTP_SEND_BUFFER);
    expect(() => rtc.get()).not.toThrow();
    rtc.cleanup();
  });

  it('reaches lane processes in their init, validated the same way', () => {
    const init = VALID_LANE_INIT;
    expect(LaneInit.safeParse(init).success).toBe(true);
    expect(LaneInit.safeParse({ ...init, sctpSendBufferBytes: undefined }).success).toBe(false);
    expect(LaneInit.safeParse({ ...init, sctpSendBufferBytes: 1024 }).success).toBe(false);
  });
});
