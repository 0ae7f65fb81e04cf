// vitest globalSetup of the "lab" project: one fresh lab per run (scripts/lab down + up), torn down at
// the end. TINCAN_LAB_REUSE=1 keeps a healthy running lab (scripts/lab up is a no-op then) and leaves
// it up afterwards, for quick edit-test cycles. TINCAN_LAB_DIR moves the lab dir (default /tmp/tincan-lab).
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';

const LAB_SCRIPT = join(resolve(import.meta.dirname, '../..'), 'scripts/lab');
const reuse = process.env.TINCAN_LAB_REUSE === '1';

function lab(...args: string[]): void {
  const t0 = Date.now();
  const r = spawnSync(LAB_SCRIPT, args, { encoding: 'utf8', timeout: 120_000, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
  if (r.error || r.status !== 0) {
    throw new Error(`scripts/lab ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`}):\n${out}`);
  }
  console.log(`[lab] scripts/lab ${args.join(' ')}: ${out.split('\n').pop()} (${Date.now() - t0} ms)`);
}

export default function setup(): () => void {
  if (process.getuid?.() !== 0) {
    throw new Error(
      'The lab tests need root (network namespaces, iptables, prosody/coturn as their own users): ' +
        'run them as root, e.g. `sudo npx vitest run --project lab`.',
    );
  }
  if (!reuse) lab('down'); // no leftovers (impairments, stray processes) from an earlier run
  lab('up');
  return () => {
    if (reuse) {
      console.log('[lab] TINCAN_LAB_REUSE=1: leaving the lab up (scripts/lab down removes it)');
      return;
    }
    lab('down');
  };
}
