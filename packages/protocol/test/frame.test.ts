import { describe, expect, it } from 'vitest';
import {
  PROBE_ECHO_TYPE, PROBE_LEN, PROBE_TYPE, acceptsCompactFrames, acceptsOffloadFrames, acceptsProbes, advertiseCompactFrames,
  isProbeMessage, readProbe, writeProbe,
} from '../src/index.js';

/** A description as libdatachannel makes it (session part, one application section, CRLF). */
const SDP = [
  'v=0',
  'o=rtc 3216549870 0 IN IP4 127.0.0.1',
  's=-',
  't=0 0',
  'a=group:BUNDLE 0',
  'a=msid-semantic:WMS *',
  'a=fingerprint:sha-256 AA:BB:CC',
  'm=application 9 UDP/DTLS/SCTP webrtc-datachannel',
  'c=IN IP4 0.0.0.0',
  'a=mid:0',
  'a=sendrecv',
  'a=sctp-port:5000',
  'a=max-message-size:262144',
  'a=setup:actpass',
  'a=ice-ufrag:abcd',
  'a=ice-pwd:efghijklmnopqrstuvwxyz',
  'a=candidate:1 1 UDP 2122317823 10.1.0.2 40000 typ host',
  '',
].join('\r\n');

describe('compact-frame capability in the signaled description', () => {
  it('adds a session-level attribute, keeps everything else and the line endings, and reads it back', () => {
    expect(acceptsCompactFrames(SDP)).toBe(false);
    const offered = advertiseCompactFrames(SDP);
    expect(acceptsCompactFrames(offered)).toBe(true);
    const lines = offered.split('\r\n');
    const at = lines.indexOf('a=x-tincan-frame:compact');
    expect(at).toBeGreaterThan(0);
    expect(at).toBeLessThan(lines.findIndex((l) => l.startsWith('m=')));
    expect(offered.replace('a=x-tincan-frame:compact\r\n', '')).toBe(SDP);
    expect(offered).not.toMatch(/[^\r]\n/);
    expect(advertiseCompactFrames(offered)).toBe(offered); // idempotent
  });

  it('works on LF-only descriptions and on ones without a media section', () => {
    const lf = SDP.replace(/\r\n/g, '\n');
    expect(acceptsCompactFrames(advertiseCompactFrames(lf))).toBe(true);
    expect(advertiseCompactFrames(lf)).not.toContain('\r');
    const sessionOnly = 'v=0\r\ns=-\r\nt=0 0';
    expect(acceptsCompactFrames(advertiseCompactFrames(sessionOnly))).toBe(true);
    expect(acceptsCompactFrames(advertiseCompactFrames(''))).toBe(true);
  });

  it('offload (--offload) is advertised next to compact, and counts only with it', () => {
    const offered = advertiseCompactFrames(SDP, { offload: true });
    expect(offered.split('\r\n')).toContain('a=x-tincan-frame:compact offload');
    expect(acceptsCompactFrames(offered)).toBe(true);
    expect(acceptsOffloadFrames(offered)).toBe(true);
    expect(acceptsOffloadFrames(advertiseCompactFrames(SDP))).toBe(false);
    expect(acceptsOffloadFrames(SDP)).toBe(false);
    const session = (line: string) => SDP.replace('a=msid-semantic', `${line}\r\na=msid-semantic`);
    expect(acceptsOffloadFrames(session('a=x-tincan-frame:offload'))).toBe(false); // without compact
    expect(acceptsOffloadFrames(session('a=x-tincan-frame:compact\r\na=x-tincan-frame:offload'))).toBe(true);
    expect(acceptsOffloadFrames(SDP.replace('a=mid:0', 'a=mid:0\r\na=x-tincan-frame:compact offload'))).toBe(false);
  });

  it('takes a list of framings, and only the exact attribute at the session level', () => {
    const session = (line: string) => SDP.replace('a=msid-semantic', `${line}\r\na=msid-semantic`);
    expect(acceptsCompactFrames(session('a=x-tincan-frame:future compact'))).toBe(true);
    expect(acceptsCompactFrames(session('a=x-tincan-frame:compact  '))).toBe(true); // trailing blanks
    for (const no of ['a=x-tincan-frame:compactish', 'a=x-tincan-frame:', 'a=x-tincan-frame', 'a=x-tincan-framex:compact',
      'a=X-TINCAN-FRAME:compact', 'x-tincan-frame:compact', 'a=x-tincan-frame:full']) {
      expect(acceptsCompactFrames(session(no)), no).toBe(false);
    }
    // inside the media section it is not a session-level capability
    expect(acceptsCompactFrames(SDP.replace('a=mid:0', 'a=mid:0\r\na=x-tincan-frame:compact'))).toBe(false);
  });

  it('probe (latency probes echoed) is advertised next to compact (and offload), and counts only with compact', () => {
    const both = advertiseCompactFrames(SDP, { offload: true, probe: true });
    expect(both.split('\r\n')).toContain('a=x-tincan-frame:compact offload probe');
    expect(acceptsProbes(both)).toBe(true);
    expect(acceptsOffloadFrames(both)).toBe(true);
    const probeOnly = advertiseCompactFrames(SDP, { probe: true });
    expect(probeOnly.split('\r\n')).toContain('a=x-tincan-frame:compact probe');
    expect(acceptsProbes(probeOnly)).toBe(true);
    expect(acceptsOffloadFrames(probeOnly)).toBe(false);
    expect(acceptsProbes(advertiseCompactFrames(SDP, { offload: true }))).toBe(false); // an older node
    const session = (line: string) => SDP.replace('a=msid-semantic', `${line}\r\na=msid-semantic`);
    expect(acceptsProbes(session('a=x-tincan-frame:probe'))).toBe(false); // without compact
    expect(acceptsProbes(session('a=x-tincan-frame:compact probes'))).toBe(false);
    expect(acceptsProbes(SDP.replace('a=mid:0', 'a=mid:0\r\na=x-tincan-frame:compact probe'))).toBe(false);
    for (const g of ['', 'a=x-tincan-frame:\u0000probe compact', '\uffff'.repeat(1000)]) expect(acceptsProbes(g)).toBe(false);
  });

  it('never throws on garbage: it is simply no capability', () => {
    for (const g of ['', '\n\n\n', 'm=', 'a=x-tincan-frame:\u0000compact', '\uffff'.repeat(1000), 'a='.repeat(10_000)]) {
      expect(acceptsCompactFrames(g)).toBe(false);
    }
  });
});

describe('latency probe codec', () => {
  it('writes and reads probes and echoes, 8 bytes, in place', () => {
    const buf = Buffer.alloc(PROBE_LEN);
    for (const seq of [0, 1, 0x7fffffff, 0xffffffff]) {
      writeProbe(buf, PROBE_TYPE, seq);
      expect(buf[0]).toBe(0xf1);
      expect(isProbeMessage(buf)).toBe(true);
      expect(readProbe(buf, PROBE_TYPE)).toBe(seq);
      expect(readProbe(buf, PROBE_ECHO_TYPE)).toBe(-1); // a probe is no echo
      writeProbe(buf, PROBE_ECHO_TYPE, seq);
      expect(buf[0]).toBe(0xf2);
      expect(readProbe(buf, PROBE_ECHO_TYPE)).toBe(seq);
      expect(readProbe(buf, PROBE_TYPE)).toBe(-1);
    }
  });

  it('cannot be taken for a compact frame, nor a compact frame for a probe', () => {
    const ip4 = Buffer.from([0x45, 0, 0, 20]);
    const ip6 = Buffer.from([0x60, 0, 0, 0]);
    const vnet = Buffer.from([0x01, 0x01, 0, 0]); // [virtio_net_hdr]: flags NEEDS_CSUM, GSO TCPV4
    for (const m of [ip4, ip6, vnet, Buffer.alloc(0)]) expect(isProbeMessage(m)).toBe(false);
    expect(isProbeMessage(Buffer.from([0xf7]))).toBe(true); // claims to be one (then refused as malformed)
  });

  it('refuses malformed ones: wrong length, wrong type, reserved bytes set', () => {
    const ok = Buffer.alloc(PROBE_LEN);
    writeProbe(ok, PROBE_TYPE, 7);
    const bad = [
      ok.subarray(0, 7), Buffer.concat([ok, Buffer.alloc(1)]), Buffer.alloc(0),
      Buffer.from([0xf1, 1, 0, 0, 0, 0, 0, 7]), Buffer.from([0xf1, 0, 0, 0x80, 0, 0, 0, 7]), Buffer.from([0xf3, 0, 0, 0, 0, 0, 0, 7]),
    ];
    for (const m of bad) {
      expect(readProbe(m, PROBE_TYPE)).toBe(-1);
      expect(readProbe(m, PROBE_ECHO_TYPE)).toBe(-1);
    }
  });
});
