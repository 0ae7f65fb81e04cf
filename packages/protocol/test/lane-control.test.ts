import { describe, expect, it } from 'vitest';
import { MAX_LANES, parseLaneControl, sdpFingerprint } from '../src/lane-control.js';

const FP = 'AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89';
const SDP = `v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\na=fingerprint:sha-256 ${FP}\r\na=setup:actpass\r\n`;

describe('lane control messages', () => {
  it('accepts the four messages', () => {
    expect(parseLaneControl(JSON.stringify({ t: 'hello', lanes: 3 }))).toEqual({ t: 'hello', lanes: 3 });
    expect(parseLaneControl(JSON.stringify({ t: 'offer', lane: 1, attempt: 4, sdp: SDP }))).toEqual({ t: 'offer', lane: 1, attempt: 4, sdp: SDP });
    expect(parseLaneControl(JSON.stringify({ t: 'answer', lane: MAX_LANES - 1, attempt: 0, sdp: SDP }))?.t).toBe('answer');
    expect(parseLaneControl(JSON.stringify({ t: 'renew', lane: 2 }))).toEqual({ t: 'renew', lane: 2 });
  });

  it.each([
    ['not JSON', '{"t":"hello",'],
    ['JSON but not an object', '[1,2,3]'],
    ['null', 'null'],
    ['an unknown type', JSON.stringify({ t: 'reboot', lane: 1 })],
    ['no lanes', JSON.stringify({ t: 'hello' })],
    ['zero lanes', JSON.stringify({ t: 'hello', lanes: 0 })],
    ['too many lanes', JSON.stringify({ t: 'hello', lanes: MAX_LANES + 1 })],
    ['fractional lanes', JSON.stringify({ t: 'hello', lanes: 1.5 })],
    ['lane 0 (the primary link itself)', JSON.stringify({ t: 'renew', lane: 0 })],
    ['a lane beyond the maximum', JSON.stringify({ t: 'renew', lane: MAX_LANES })],
    ['a negative attempt', JSON.stringify({ t: 'offer', lane: 1, attempt: -1, sdp: SDP })],
    ['an offer without an SDP', JSON.stringify({ t: 'offer', lane: 1, attempt: 1 })],
    ['an empty SDP', JSON.stringify({ t: 'answer', lane: 1, attempt: 1, sdp: '' })],
    ['an SDP that is not a string', JSON.stringify({ t: 'answer', lane: 1, attempt: 1, sdp: { evil: true } })],
    ['an oversized SDP', JSON.stringify({ t: 'offer', lane: 1, attempt: 1, sdp: 'x'.repeat(20_000) })],
    ['an unknown key', JSON.stringify({ t: 'hello', lanes: 2, extra: 1 })],
    ['a __proto__ key', '{"t":"hello","lanes":2,"__proto__":{"polluted":true}}'],
    ['a huge document', `{"t":"hello","lanes":2,"pad":"${'y'.repeat(100_000)}"}`],
  ])('drops %s', (_what, text) => {
    expect(parseLaneControl(text)).toBeNull();
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('reads the SHA-256 fingerprint of a description, or null', () => {
    expect(sdpFingerprint(SDP)).toBe(FP);
    expect(sdpFingerprint(SDP.replace(FP, FP.toLowerCase()))).toBe(FP);
    expect(sdpFingerprint('v=0\r\na=setup:actpass\r\n')).toBeNull();
    expect(sdpFingerprint('a=fingerprint:sha-1 AB:CD\r\n')).toBeNull();
  });
});
