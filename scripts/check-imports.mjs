#!/usr/bin/env node
// Enforces the package import rules of docs/architecture.md so the architecture stays visible:
// protocol, tun and watchdog are leaves; datapath and the controllers never import each other; groupvpn and
// socialvpn share only what lives in controller; cli speaks the RPC like any other client.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const allowed = {
  protocol: [],
  tun: [],
  watchdog: [],
  datapath: ['protocol', 'tun', 'watchdog'],
  controller: ['protocol'],
  groupvpn: ['protocol', 'controller'],
  socialvpn: ['protocol', 'controller'],
  cli: ['protocol', 'controller'],
};

function* sources(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) yield* sources(path);
    else if (path.endsWith('.ts')) yield path;
  }
}

let bad = 0;
for (const [pkg, ok] of Object.entries(allowed)) {
  for (const file of sources(join('packages', pkg, 'src'))) {
    for (const m of readFileSync(file, 'utf8').matchAll(/from\s+['"]@tincan\/([a-z0-9-]+)['"]/g)) {
      if (!ok.includes(m[1])) {
        console.error(`${file}: @tincan/${pkg} may not import @tincan/${m[1]}`);
        bad++;
      }
    }
  }
}
if (bad) process.exit(1);
console.log('import rules: ok');
