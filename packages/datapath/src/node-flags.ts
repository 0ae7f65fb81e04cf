/**
 * The Node flags a datapath runs with: on node's own command line, before the program
 * (`node --optimize-for-size …/tincan-datapath.js`), because they shape V8's heap, which is set up
 * when the process starts (`v8.setFlagsFromString` later does not resize it). Every launcher passes
 * them: the systemd unit, scripts/demo, the benches and the tests' harness (which take this list);
 * lane processes get them from the datapath that forks them (lanes/lane-child.ts).
 *
 * `--optimize-for-size`: V8 keeps its young generation at its smallest (1 MB) instead of growing it
 * up to 32 MB while a burst of work (start-up, 49 peers' presence) allocates, and collects the old
 * generation's garbage sooner. Measured at N = 50 (docs/architecture.md, "Memory"): ~7 MB less
 * resident per datapath, with TCP throughput and RTT through a link unchanged.
 */
export const DATAPATH_NODE_FLAGS: readonly string[] = ['--optimize-for-size'];

/** The flags of DATAPATH_NODE_FLAGS that `execArgv` (node's own arguments) lacks. */
export function missingNodeFlags(execArgv: readonly string[]): string[] {
  return DATAPATH_NODE_FLAGS.filter((f) => !execArgv.includes(f));
}

/** `execArgv` with the flags of DATAPATH_NODE_FLAGS it lacks appended: what a lane process is forked with. */
export function withNodeFlags(execArgv: readonly string[]): string[] {
  return [...execArgv, ...missingNodeFlags(execArgv)];
}
