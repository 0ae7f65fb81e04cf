// vitest setupFiles of the "lab" project: after each test file, no process of that file may be left
// running in a lab host or router namespace (the servers' namespace is the lab's own). A datapath,
// controller, iperf3 or ping left behind would hold ports, XMPP sessions and CPU in the files that
// run after it and fail them instead; so it is killed here and fails the file that left it.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll } from 'vitest';

const LAB_DIR = process.env.TINCAN_LAB_DIR ?? '/tmp/tincan-lab';

interface LabHosts {
  hosts: Record<string, { namespace: string; role: string }>;
}

function pidsIn(namespace: string): number[] {
  try {
    return execFileSync('ip', ['netns', 'pids', namespace], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number);
  } catch {
    return []; // the namespace is gone
  }
}

function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
  } catch {
    return ''; // exited meanwhile
  }
}

afterAll(() => {
  const lab = JSON.parse(readFileSync(`${LAB_DIR}/lab.json`, 'utf8')) as LabHosts;
  const strays: string[] = [];
  for (const [host, h] of Object.entries(lab.hosts)) {
    if (h.role === 'server') continue;
    for (const pid of pidsIn(h.namespace)) {
      const cmd = commandLine(pid);
      if (!cmd) continue;
      strays.push(`${host}: pid ${pid}: ${cmd.slice(0, 200)}`);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // exited meanwhile
      }
    }
  }
  if (strays.length > 0) throw new Error(`processes left running in the lab (killed now):\n${strays.join('\n')}`);
});
