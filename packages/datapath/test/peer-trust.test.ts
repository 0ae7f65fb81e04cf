// Link key enforcement (peer-trust.ts): a peer's description must name exactly the trusted certificate.
import { describe, expect, it } from 'vitest';
import { descriptionFingerprints, descriptionKeyMismatch } from '../src/peer-trust.js';

const FP = Array.from({ length: 32 }, (_, i) => (i * 7).toString(16).padStart(2, '0').toUpperCase()).join(':');
const OTHER_FP = FP.replace(/^../, 'FF');
const sdp = (...lines: string[]) => ['v=0', 'o=- 1 1 IN IP4 0.0.0.0', 's=-', 't=0 0', ...lines, 'm=application 9 UDP/DTLS/SCTP webrtc-datachannel', 'a=mid:0'].join('\r\n');

describe('link key enforcement: the fingerprints a description names', () => {
  it('accepts a description naming the trusted SHA-256 fingerprint, in any case, at session or media level', () => {
    expect(descriptionKeyMismatch(sdp(`a=fingerprint:sha-256 ${FP}`), FP)).toBeNull();
    expect(descriptionKeyMismatch(sdp(`a=fingerprint:SHA-256 ${FP.toLowerCase()}`), FP)).toBeNull();
    expect(descriptionKeyMismatch(`${sdp()}\r\na=fingerprint:sha-256 ${FP}\r\n`, FP)).toBeNull();
    expect(descriptionFingerprints(sdp(`a=fingerprint:sha-256 ${FP}`))).toEqual([{ algorithm: 'sha-256', value: FP }]);
  });

  it('refuses none, another, another algorithm, or the trusted one next to another', () => {
    expect(descriptionKeyMismatch(sdp(), FP)).toMatch(/no certificate fingerprint/);
    expect(descriptionKeyMismatch(sdp(`a=fingerprint:sha-256 ${OTHER_FP}`), FP)).toMatch(/another certificate/);
    expect(descriptionKeyMismatch(sdp(`a=fingerprint:sha-1 ${FP.slice(0, 59)}`), FP)).toMatch(/sha-1/);
    expect(descriptionKeyMismatch(sdp(`a=fingerprint:sha-256 ${FP}`, `a=fingerprint:sha-256 ${OTHER_FP}`), FP)).toMatch(/another certificate/);
    expect(descriptionKeyMismatch(`${sdp(`a=fingerprint:sha-256 ${FP}`)}\r\na=fingerprint:sha-256 ${OTHER_FP}`, FP)).toMatch(/another/);
  });

  it('never throws on garbage', () => {
    for (const g of ['', 'a=fingerprint:', 'a=fingerprint:sha-256', '\u0000\r\n\r\na=fingerprint: x y z', 'x'.repeat(10000)]) {
      expect(() => descriptionKeyMismatch(g, FP)).not.toThrow();
      expect(descriptionKeyMismatch(g, FP)).not.toBeNull();
    }
  });
});
