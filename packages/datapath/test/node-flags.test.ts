// The datapath's Node flags (src/node-flags.ts) on its launchers: what lane-child.ts forks the lanes
// with, the systemd unit's and the demo's launch lines (text: they cannot import the list), and a real
// datapath (the bundle `npm run build` writes) started with and without them. The test harness and
// the benches take the list itself; the lab test (test/lanes.test.ts) reads the command lines of a
// running datapath and of its lane process.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DATAPATH_NODE_FLAGS, missingNodeFlags, withNodeFlags } from '../src/node-flags.js';

const ROOT = resolve(import.meta.dirname, '../../..');
const DATAPATH_BUNDLE = join(ROOT, 'packages/datapath/dist/bin/tincan-datapath.js');

describe('datapath node flags', () => {
  it('are node options that size the heap, and name what is missing', () => {
    expect(DATAPATH_NODE_FLAGS).toContain('--optimize-for-size');
    expect(missingNodeFlags([])).toEqual([...DATAPATH_NODE_FLAGS]);
    expect(missingNodeFlags(['--inspect', ...DATAPATH_NODE_FLAGS])).toEqual([]);
    // a lane gets the datapath's own flags and the list's, once each
    expect(withNodeFlags(['--inspect'])).toEqual(['--inspect', ...DATAPATH_NODE_FLAGS]);
    expect(withNodeFlags([...DATAPATH_NODE_FLAGS])).toEqual([...DATAPATH_NODE_FLAGS]);
  });

  it('are on the systemd unit\'s ExecStart, between node and the program', () => {
    const unit = readFileSync(join(ROOT, 'scripts/systemd/tincan-datapath@.service'), 'utf8');
    const exec = unit.split('\n').filter((l) => l.startsWith('ExecStart='));
    expect(exec).toHaveLength(1);
    const words = exec[0]!.slice('ExecStart='.length).split(/\s+/);
    expect(words[0]).toBe('@NODE@');
    const program = words.indexOf('@BIN@/tincan-datapath'); // the installed command (install.sh fills in @BIN@)
    expect(program).toBeGreaterThan(0);
    expect(missingNodeFlags(words.slice(1, program))).toEqual([]);
  });

  it('are on every datapath launch line of scripts/demo, which reads them from the list', () => {
    const demo = readFileSync(join(ROOT, 'scripts/demo'), 'utf8');
    const launches = demo.split('\n').filter((l) => l.includes('/tincan-datapath.js'));
    expect(launches.length).toBeGreaterThanOrEqual(2);
    for (const l of launches) expect(l).toMatch(/ node "\$\{DATAPATH_NODE_FLAGS\[@\]\}" "\$ROOT\/packages\/datapath\/dist\/bin\/tincan-datapath\.js"/);
    expect(demo).toMatch(/read -ra DATAPATH_NODE_FLAGS <<<.*import \{ DATAPATH_NODE_FLAGS \} from '\$ROOT\/packages\/datapath\/dist\/node-flags\.js'/);
  });

  /** Starts the bundled datapath with node flags `flags` until its RPC token exists; its output. */
  async function startOnce(flags: string[]): Promise<string> {
    expect(existsSync(DATAPATH_BUNDLE), `${DATAPATH_BUNDLE} is missing: npm run build`).toBe(true);
    const stateDir = mkdtempSync(join(tmpdir(), 'tincan-node-flags-'));
    const port = 42_000 + Math.floor(Math.random() * 8000);
    const child = spawn(process.execPath, [...flags, DATAPATH_BUNDLE, '--state-dir', stateDir, '--rpc', `127.0.0.1:${port}`, '--log-level', 'warn', '--watchdog', '0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    try {
      const t0 = Date.now();
      while (!existsSync(join(stateDir, `rpc-${port}.token`))) {
        if (child.exitCode !== null) throw new Error(`the datapath exited (${child.exitCode}): ${out}`);
        if (Date.now() - t0 > 15_000) throw new Error(`no RPC token after 15 s: ${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return out;
    } finally {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
      rmSync(stateDir, { recursive: true, force: true });
    }
  }

  it('a datapath started without them says so in its log; with them it does not', async () => {
    const without = await startOnce([]);
    const line = without.split('\n').find((l) => l.includes('"missing"'));
    expect(line, without).toBeDefined();
    const o = JSON.parse(line!) as { level: number; missing: string[]; msg: string };
    expect(o.level).toBe(40);
    expect(o.missing).toEqual([...DATAPATH_NODE_FLAGS]);
    expect(o.msg).toContain('docs/deployment.md');
    const withFlags = await startOnce([...DATAPATH_NODE_FLAGS]);
    expect(withFlags).not.toContain('"missing"');
  });
});
