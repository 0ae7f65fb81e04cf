#!/usr/bin/env node
// `npm pack` runs this first (prepack): the tarball carries the built programs and native addons
// (docs/decisions/package-carries-built-addons.md), so refuse to pack a checkout that was not built.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const NEEDED = [
  'packages/datapath/dist/bin/tincan-datapath.js',
  'packages/datapath/dist/bin/lane-main.js',
  'packages/groupvpn/dist/bin/tincan-groupvpn.js',
  'packages/socialvpn/dist/bin/tincan-socialvpn.js',
  'packages/cli/dist/bin/tincanctl.js',
  'packages/tun/dist/index.js',
  'packages/tun/build/Release/tincan_tun.node',
  'packages/watchdog/dist/index.js',
  'packages/watchdog/build/Release/tincan_watchdog.node',
];
const missing = NEEDED.filter((f) => !existsSync(join(ROOT, f)));
if (missing.length) {
  console.error(`npm pack: not built (missing ${missing.join(', ')}): run 'npm ci && npm run build' first`);
  process.exit(1);
}
