// The figures of the setup bench (scripts/bench/setup.mjs) for its result file: setup times of
// direct and relayed links, per signaling mode, against issue 7's targets.
import { median } from './lab-nodes.mjs';
import { figure } from './results.mjs';

const MODE_LABEL = {
  trickle: 'trickle ICE both ways (controllers, after the first link to a peer)',
  answer: 'only the answer trickles (a controller\'s first link to a peer)',
  full: 'whole descriptions (no trickle)',
};

/**
 * writeResults() arguments from the setup times (ms) per mode ({ full, trickle, answer, failed }) of
 * direct and relayed links. The targets are checked on every mode; the baseline of the trickle modes
 * is "full" measured in the same run.
 */
export function setupResults(direct, relayed) {
  const modes = Object.keys(MODE_LABEL).filter((m) => direct[m]?.length || relayed[m]?.length);
  const setupTime = (key, label, times, medianMs, paper) => modes.flatMap((m) => {
    const samples = times[m];
    if (!samples?.length) return [];
    const baseline = m === 'full' || !times.full?.length ? undefined : { label: 'whole descriptions, same run', median: median(times.full) };
    const f = times.failed?.[m] ?? 0;
    const failed = f ? `; ${f} ${f === 1 ? 'setup' : 'setups'} did not come up (not in the samples)` : '';
    return [
      figure({ key: `${key}_${m}_ms`, label: `${label}, ${MODE_LABEL[m]}: setup time`, unit: 'ms', samples, withP99: true, baseline, target: { op: '<=', value: medianMs, text: `median ≤ ${medianMs / 1000} s` }, paper, ...(failed ? { note: failed.slice(2) } : {}) }),
      figure({ key: `${key}_${m}_p99_ms`, label: `${label}, ${MODE_LABEL[m]}: setup time, 99th percentile`, unit: 'ms', samples, withP99: true, target: { op: '<=', value: 2000, of: 'p99', text: 'p99 ≤ 2 s' } }),
    ];
  });
  const n = (times) => modes.map((m) => `${m} ${times[m]?.length ?? 0}`).join(', ');
  return {
    title: 'Link setup time over XMPP signaling: create_link → offer/answer via prosody (and trickled candidates) → ICE, DTLS, SCTP → link up',
    settings: { direct: n(direct), relayed: n(relayed) },
    figures: [
      ...setupTime('direct', 'direct (cone NAT ↔ cone NAT)', direct, 300, 'median 6.3 s, p75 7.8 s (Table 2)'),
      ...setupTime('relayed', 'relayed (symmetric NAT ↔ cone NAT, TURN)', relayed, 1000),
    ],
    plots: ['setup-cdf.svg'],
    csv: ['setup.csv'],
    notes: ['the modes alternate run by run, so they see the same conditions; issue 4 asked for a direct median ≤ 0.5 s, issue 7 for ≤ 0.3 s (the target checked here)'],
  };
}
