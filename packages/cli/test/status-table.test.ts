import { describe, expect, it } from 'vitest';
import { StateResult, type LinkInfo } from '@tincan/protocol';
import { renderControllerDrops, renderStatus } from '../src/status-table.js';

const UID_A = 'a'.repeat(40);
const UID_B = 'b'.repeat(40);

function link(uid: string, extra: Partial<LinkInfo> = {}): LinkInfo {
  return {
    uid, jid: null, state: 'up', role: 'offerer', ip4: ['10.254.0.2'], ip6: [],
    local_candidate: 'srflx', remote_candidate: 'host', local_address: null, remote_address: '198.18.0.10:4000',
    rtt_ms: 0.5, queue_delay_ms: null, created_ms: 0, connected_ms: 1, last_rx_ms: 1, last_tx_ms: 1,
    stats: { bytes_in: 2048, bytes_out: 100, packets_in: 2, packets_out: 1, drops_backpressure: 1, drops_spoofed: 2, drops_malformed: 0, compact_in: 0, compact_out: 0, drops_aqm: 0, probes_out: 0, probes_answered: 0, probes_echoed: 0, probes_bad: 0 },
    framing: 'compact',
    ...extra,
  };
}

/** A get_state result, validated by its schema so the test cannot drift from the wire contract. */
function state(links: LinkInfo[], peers: StateResult['peers'] = []): StateResult {
  return StateResult.parse({
    node: { uid: UID_A, vnic: 'tincan0', ip4: '10.254.0.1/16', ip6: null, mtu: 1280, offload: true, fingerprint: 'AB:CD', uptime_s: 5, controller: null },
    xmpp: { state: 'online', jid: 'a@x/y', overlay: 'o' },
    links, peers, routes: [], subnets: [], transit: false, counters: {},
  });
}

const lane = (n: number, up: boolean) => ({ lane: n, up, bytes_in: 0, bytes_out: 0, packets_in: 0, packets_out: 0, drops_aqm: 0, probes_answered: 0 });

describe('tincanctl status table', () => {
  it('shows each link with its path, framing, counters and summed drops, and no LANES column without lanes', () => {
    const out = renderStatus(state([link(UID_B)]));
    const [header, row] = out.split('\n').slice(4);
    expect(header).toMatch(/^PEER\s+VIRTUAL IP\s+STATE\s+PATH \(local\/remote\)\s+FRAMES\s+REMOTE ADDRESS/);
    expect(header).not.toContain('LANES');
    expect(out.split('\n')[0]).toMatch(/mtu 1280  offload$/);
    expect(row).toMatch(/^bbbbbbbbbbbb\s+10\.254\.0\.2\s+up\s+srflx\/host\s+compact\s+198\.18\.0\.10:4000\s+0\.5ms\s+2p 2\.0K\s+1p 100B\s+3$/);
  });

  it('shows a path health other than ok in STATE, and when and why each repaired link was last repaired', () => {
    const now = 100_000;
    const out = renderStatus(state([
      link(UID_B, { health: 'suspect', repairs: 0, last_repair_ms: null, last_repair_reason: null }),
      link('c'.repeat(40), { health: 'ok', repairs: 2, last_repair_ms: now - 7000, last_repair_reason: 'no answer on the path (probes unanswered)' }),
    ]), now);
    expect(out).toMatch(/\nbbbbbbbbbbbb\s+10\.254\.0\.2\s+up suspect\s+srflx/);
    expect(out).toMatch(/\ncccccccccccc\s+10\.254\.0\.2\s+up\s+srflx/);
    expect(out).toContain('\n  cccccccccccc  2 repairs, last 7s ago: no answer on the path (probes unanswered)');
    expect(out).not.toContain('  bbbbbbbbbbbb  0 repairs');
  });

  it('lists the online peers with their overlay and the capabilities they announced', () => {
    const now = Date.now();
    const out = renderStatus(state([], [
      { uid: UID_B, jid: 'b@x/tincan-bbbbbbbb', overlay: 'lab', last_heard_ms: now - 3000, caps: ['trickle'] },
      { uid: 'c'.repeat(40), jid: 'c@x/old', overlay: null, last_heard_ms: now - 9000 },
    ]), now);
    expect(out).toMatch(/\n {2}bbbbbbbbbbbb {2}b@x\/tincan-bbbbbbbb {2}overlay lab {2}caps trickle {2}heard 3s ago\n/);
    expect(out).toMatch(/\n {2}cccccccccccc {2}c@x\/old {2}heard 9s ago/);
  });

  it('shows lanes up of lanes run per link when the datapath runs lanes', () => {
    const out = renderStatus(state([
      link(UID_B, { lanes_up: 1, lanes: [lane(0, true), lane(1, true), lane(2, false)] }),
      link('c'.repeat(40), { state: 'connecting', lanes_up: 0, lanes: [lane(0, false)] }),
    ]));
    const [header, b, c] = out.split('\n').slice(4);
    expect(header).toMatch(/FRAMES\s+LANES\s+REMOTE ADDRESS/);
    expect(b).toMatch(/compact\s+2\/3\s+198\.18\.0\.10:4000/);
    expect(c).toMatch(/compact\s+0\/1\s+198\.18\.0\.10:4000/);
  });
});

describe('renderControllerDrops', () => {
  it('lists the non-zero drop counters of a controller status file, and nothing for garbage', () => {
    const status = {
      routing: { counters: { adverts_received: 9, messages_malformed: 3, messages_bad_mac: 0, routes_dropped_not_member: 40, subnets_not_granted: 2, 'handler_failed controller datagram': 1 } },
      datapath: { handler_failures: { 'signal event': 2 } },
    };
    expect(renderControllerDrops(status)).toBe(
      'controller drops: messages_malformed=3, routes_dropped_not_member=40, subnets_not_granted=2, handler_failed controller datagram=1, handler_failed signal event=2',
    );
    expect(renderControllerDrops({ routing: { counters: { adverts_received: 5 } } })).toBeNull();
    for (const junk of [null, 7, 'x', [], { routing: 'x' }, { routing: { counters: [1, 2] } }]) expect(renderControllerDrops(junk)).toBeNull();
  });
});
