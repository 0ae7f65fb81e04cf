// The local UDP ports of the links' ICE agents (link.ts, IcePortRange): handed out in turn from the
// configured range, so that a new link does not take the port of a link closed a moment ago (whose
// TURN allocation lives on at the server: the new Allocate would get 437). Real node-datachannel
// PeerConnections, no servers: only the host candidates' ports of their descriptions are read. The
// lab test (test/trickle.test.ts, "relinking") runs the links through the NATs and TURN.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uidFromIp4 } from '@tincan/protocol';
import { loadIdentity, type NodeIdentity } from '../src/identity.js';
import { DEFAULT_ICE_PORTS, Link, lanePorts, parseIcePortRange, type IcePortRange } from '../src/link.js';
import { RtcLibrary } from '../src/rtc.js';

/** The ports of the host candidates in an SDP. */
function hostPorts(sdp: string): number[] {
  return [...sdp.matchAll(/^a=candidate:\S+ \d+ UDP \d+ \S+ (\d+) typ host/gim)].map((m) => Number(m[1]));
}

describe('link: ICE ports', () => {
  let dir: string;
  let identity: NodeIdentity;
  const rtc = new RtcLibrary('Warning', pino({ level: 'silent' }));

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tincan-link-ports-'));
    identity = await loadIdentity(dir);
  });

  afterAll(() => {
    rtc.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  async function portOfNewLink(icePorts: IcePortRange): Promise<number> {
    const link = new Link({
      rtc, uid: uidFromIp4('10.254.0.1'), jid: null, role: 'offerer', stun: [], turn: [],
      certificatePemFile: identity.certificatePemFile, keyPemFile: identity.keyPemFile,
      rtcMtu: 1500, icePorts, maxBufferedBytes: 65536, gatherTimeoutMs: 300, excludeAddress: () => false, compactFrames: true,
      logger: pino({ level: 'silent' }),
    }, { onFrame: () => undefined, onCompactFrame: () => undefined, onState: () => undefined });
    try {
      const ports = [...new Set(hostPorts((await link.localDescription()).sdp))];
      expect(ports).toHaveLength(1); // one socket per agent, whatever the interfaces
      return ports[0]!;
    } finally {
      link.close();
    }
  }

  it('gives each new link the next port of the range, not the port of the link closed just before', async () => {
    // A range of its own (no other test binds there); links are made and closed one after the other,
    // as a relinking peer does: with the kernel's random ports one repeats a recent one now and then.
    const range = { begin: 47000, end: 47099 };
    const ports: number[] = [];
    for (let i = 0; i < 12; i++) ports.push(await portOfNewLink(range));
    for (const p of ports) expect(p >= range.begin && p <= range.end).toBe(true);
    expect(new Set(ports).size).toBe(ports.length);
    // In turn: each the one after the previous (modulo the range; a port in use would be skipped).
    const size = range.end - range.begin + 1;
    const steps = ports.slice(1).map((p, i) => (p - ports[i]! + size) % size);
    expect(steps.every((s) => s >= 1 && s <= 3)).toBe(true);
  });

  it('parses --ice-ports and refuses anything but two ports in order', () => {
    expect(parseIcePortRange('49152-65535')).toEqual(DEFAULT_ICE_PORTS);
    expect(parseIcePortRange('50000-50000')).toEqual({ begin: 50000, end: 50000 });
    for (const bad of ['', '50000', '60000-50000', '80-9000', '50000-70000', '5e4-6e4', '50000 - 60000x', '-1-5']) {
      expect(() => parseIcePortRange(bad), bad).toThrow(/begin-end/);
    }
  });

  it('splits the range into disjoint shares for the lane processes', () => {
    expect(lanePorts(DEFAULT_ICE_PORTS, 0, 1)).toEqual(DEFAULT_ICE_PORTS);
    const shares = [0, 1, 2].map((lane) => lanePorts({ begin: 50000, end: 50010 }, lane, 3));
    expect(shares).toEqual([{ begin: 50000, end: 50002 }, { begin: 50003, end: 50005 }, { begin: 50006, end: 50010 }]);
    expect(() => lanePorts({ begin: 50000, end: 50001 }, 0, 4)).toThrow(/too short/);
  });
});
