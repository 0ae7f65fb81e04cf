// Compact-frame negotiation on real node-datachannel PeerConnections (no connectivity needed: only the
// descriptions are made and read). The lab test (test/framing.test.ts) runs the connected links.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acceptsCompactFrames, acceptsProbes, uidFromIp4, type SessionDescription } from '@tincan/protocol';
import { DEFAULT_AQM_SETTINGS } from '../src/aqm.js';
import { loadIdentity, type NodeIdentity } from '../src/identity.js';
import { DEFAULT_ICE_PORTS, Link } from '../src/link.js';
import { RtcLibrary } from '../src/rtc.js';

const ATTRIBUTE = /^a=x-tincan-frame:compact\r?$/m;
const strip = (d: SessionDescription): SessionDescription => ({ ...d, sdp: d.sdp.replace(/^a=x-tincan-frame:.*\r?\n/m, '') });

describe('link: compact-frame capability in the signaled descriptions', () => {
  let dir: string;
  let identity: NodeIdentity;
  const rtc = new RtcLibrary('Warning', pino({ level: 'silent' }));
  const links: Link[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tincan-link-framing-'));
    identity = await loadIdentity(dir);
  });

  afterAll(() => {
    for (const l of links) l.close();
    rtc.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  function link(role: 'offerer' | 'answerer', compactFrames: boolean, aqm = false): Link {
    const l = new Link({
      rtc, uid: uidFromIp4(`10.254.0.${links.length + 1}`), jid: null, role, stun: [], turn: [],
      certificatePemFile: identity.certificatePemFile, keyPemFile: identity.keyPemFile,
      rtcMtu: 1500, icePorts: DEFAULT_ICE_PORTS, maxBufferedBytes: 65536, gatherTimeoutMs: 300, excludeAddress: () => false, compactFrames,
      ...(aqm ? { aqm: DEFAULT_AQM_SETTINGS } : {}), logger: pino({ level: 'silent' }),
    }, { onFrame: () => undefined, onCompactFrame: () => undefined, onState: () => undefined });
    links.push(l);
    return l;
  }

  it('offers compact frames, and each side reads the other\'s offer before handing it to libdatachannel', async () => {
    const a = link('offerer', true);
    const offer = await a.localDescription();
    expect(offer.sdp).toMatch(ATTRIBUTE);
    expect(acceptsCompactFrames(offer.sdp)).toBe(true);
    expect(offer.sdp.indexOf('a=x-tincan-frame')).toBeLessThan(offer.sdp.indexOf('\nm='));
    expect(a.peerOffersCompact).toBe(false); // nothing heard yet

    const b = link('answerer', true);
    const answer = await b.localDescription(offer); // libdatachannel takes the attribute without complaint
    expect(b.peerOffersCompact).toBe(true);
    expect(answer.sdp).toMatch(ATTRIBUTE);
    a.acceptAnswer(answer);
    expect(a.peerOffersCompact).toBe(true);
    // Not connected: nothing goes compact until the compact channel is open (and the link up).
    expect(a.sendsCompact).toBe(false);
    expect(a.sendCompact(Buffer.alloc(28))).toBe(false);
    expect(a.info([], []).framing).toBe('full');
    expect(a.info([], []).stats).toMatchObject({ compact_in: 0, compact_out: 0 });
  });

  it('a peer whose description lacks the attribute (an older node) gets full frames, either way round', async () => {
    const a = link('offerer', true);
    const offer = await a.localDescription();
    const b = link('answerer', true);
    const answer = await b.localDescription(strip(offer));
    expect(b.peerOffersCompact).toBe(false);
    expect(answer.sdp).toMatch(ATTRIBUTE); // b still takes them from a
    a.acceptAnswer(strip(answer));
    expect(a.peerOffersCompact).toBe(false);
  });

  it('with compact frames off, neither offers them nor uses a peer\'s offer', async () => {
    const a = link('offerer', false);
    const offer = await a.localDescription();
    expect(offer.sdp).not.toMatch(/x-tincan-frame/);
    const b = link('answerer', true);
    const answer = await b.localDescription(offer);
    expect(b.peerOffersCompact).toBe(false);
    a.acceptAnswer(answer);
    expect(a.peerOffersCompact).toBe(false);
    const c = link('answerer', false);
    const answerC = await c.localDescription(await link('offerer', true).localDescription());
    expect(c.peerOffersCompact).toBe(false);
    expect(answerC.sdp).not.toMatch(/x-tincan-frame/);
  });

  it('with the delay-based limit it also says it echoes probes (and not with compact frames off)', async () => {
    const a = link('offerer', true, true);
    const offer = await a.localDescription();
    expect(offer.sdp).toMatch(/^a=x-tincan-frame:compact probe\r?$/m);
    expect(acceptsProbes(offer.sdp)).toBe(true);
    const b = link('answerer', true);
    expect(acceptsProbes((await b.localDescription(offer)).sdp)).toBe(false); // without it: an older node
    const c = link('offerer', false, true);
    expect((await c.localDescription()).sdp).not.toMatch(/x-tincan-frame/);
  });
});
