// --sctp-sack-freq (rtc.ts): its bounds, the usrsctp settings each value takes, that RtcLibrary sets them
// in the real node-datachannel addon as the library loads (read back through @tincan/tun's usrsctpSysctl),
// that a setting it cannot reach never leaves the frequency without its burst limit, and the way to lane
// processes. test/sctp-ack.test.ts checks in the lab that a link really acknowledges less often.
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { usrsctpSysctl } from '@tincan/tun';
import { LaneInit } from '../src/lanes/lane-ipc.js';
import { VALID_LANE_INIT } from './fixtures/lane-init.js';
import {
  DEFAULT_SCTP_SACK_FREQ, MAX_SCTP_SACK_FREQ, RtcLibrary, USRSCTP_SACK_FREQ, checkSctpSackFreq, sctpAckSettings, type UsrsctpSettings,
} from '../src/rtc.js';

describe('--sctp-sack-freq', () => {
  it('takes a whole number of packets 1..8, 8 by default', () => {
    expect(DEFAULT_SCTP_SACK_FREQ).toBe(8);
    for (const good of [1, 2, 8, MAX_SCTP_SACK_FREQ]) expect(checkSctpSackFreq(good)).toBe(good);
    for (const bad of [0, -1, 9, 16, 2.5, NaN, Infinity]) expect(() => checkSctpSackFreq(bad), String(bad)).toThrow(/whole number of packets, 1–8/);
    expect(() => new RtcLibrary('Warning', pino({ level: 'silent' }), undefined, 0)).toThrow(/1–8/);
  });

  it("sets nothing at usrsctp's own 2; otherwise byte counting and a burst limit that go with it", () => {
    expect(USRSCTP_SACK_FREQ).toBe(2);
    expect(sctpAckSettings(2)).toBeNull();
    expect(sctpAckSettings(8)).toEqual({ sack_freq_default: 8, L2_abc_variable: 8, max_burst_default: 16 });
    expect(sctpAckSettings(4)).toEqual({ sack_freq_default: 4, L2_abc_variable: 4, max_burst_default: 10 });
    expect(sctpAckSettings(1)).toEqual({ sack_freq_default: 1, L2_abc_variable: 2, max_burst_default: 10 });
    for (let n = 1; n <= MAX_SCTP_SACK_FREQ; n++) {
      const s = sctpAckSettings(n);
      if (s) expect(s.max_burst_default, `burst at ${n}`).toBeGreaterThan(s.sack_freq_default);
    }
  });

  it('sets them in node-datachannel as the library loads, and get_state reads them back', () => {
    expect(usrsctpSysctl.get('sack_freq_default'), 'not loaded yet').toBeNull();
    const rtc = new RtcLibrary('Warning', pino({ level: 'silent' }));
    expect(rtc.sctpState()).toEqual({ sack_freq: null, abc_l: null, max_burst: null });
    try {
      rtc.get();
      expect(usrsctpSysctl.get('sack_freq_default')).toBe(8);
      expect(rtc.sctpState()).toEqual({ sack_freq: 8, abc_l: 8, max_burst: 16 });
      // A link made now takes them: one PeerConnection with a channel starts an SCTP transport later, and
      // the settings stay through its life (preload keeps usrsctp up).
      const pc = new (rtc.get().PeerConnection)('sack-test', { iceServers: [] });
      const dc = pc.createDataChannel('x', { negotiated: true, id: 0 });
      dc.close();
      pc.close();
      expect(usrsctpSysctl.get('sack_freq_default')).toBe(8);
    } finally {
      rtc.cleanup();
    }
  });

  it('leaves the frequency alone when the burst limit cannot be set, and says so', () => {
    const lines: { msg: string; failed?: string }[] = [];
    const sink = new Writable({ write(chunk: Buffer, _e, done) { lines.push(JSON.parse(chunk.toString())); done(); } });
    const set: string[] = [];
    const values = new Map<string, number>([['sack_freq_default', 2], ['L2_abc_variable', 2], ['max_burst_default', 10]]);
    const fake = (failing: string): UsrsctpSettings => ({
      get: (name) => values.get(name) ?? null,
      set: (name, v) => {
        if (name === failing) return false;
        set.push(name);
        values.set(name, v);
        return true;
      },
    });
    const rtc = new RtcLibrary('Warning', pino({ level: 'warn' }, sink), undefined, 8, fake('max_burst_default'));
    try {
      rtc.get();
    } finally {
      rtc.cleanup();
    }
    expect(set).toEqual([]);
    expect(rtc.sctpState()).toEqual({ sack_freq: 2, abc_l: 2, max_burst: 10 });
    expect(lines.find((l) => l.failed === 'max_burst_default')?.msg).toMatch(/could not set usrsctp's settings/);
  });

  it('reaches lane processes in their init, validated the same way', () => {
    const init = VALID_LANE_INIT;
    expect(LaneInit.safeParse(init).success).toBe(true);
    for (const bad of [undefined, 0, 9, 2.5]) expect(LaneInit.safeParse({ ...init, sctpSackFreq: bad }).success, String(bad)).toBe(false);
  });
});
