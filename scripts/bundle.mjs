#!/usr/bin/env node
// Bundles each program of the workspace (after `tsc -b`) into one ES module file under its package's
// dist/bin/: what systemd, the demo, the tests and the benches run. A program loaded from one
// file instead of ~300 modules needs ~18 MB less memory (docs/decisions/0018-bundled-programs.md).
// Native parts stay outside the bundle and load as before: node-datachannel (from node_modules),
// @tincan/tun and @tincan/watchdog (their addons load by a path relative to their own dist/). The
// last two are imported by a relative path (packages/tun/dist/index.js from the bundle's place), so
// a bundle finds them the same way in a checkout and in the installed package (`npm pack`, whose
// layout is the checkout's: docs/decisions/package-carries-built-addons.md).
// The version of the root package.json is compiled in (`--version`: TINCAN_VERSION in @tincan/protocol).
import { build } from 'esbuild';
import { chmodSync, mkdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const VERSION = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;

/** [package, entry in its dist/, program name]. The lane entry sits next to the datapath's (lane-child.ts forks ./lane-main.js). */
const PROGRAMS = [
  ['datapath', 'main.js', 'tincan-datapath'],
  ['datapath', 'lanes/lane-main.js', 'lane-main'],
  ['groupvpn', 'main.js', 'tincan-groupvpn'],
  ['socialvpn', 'main.js', 'tincan-socialvpn'],
  ['cli', 'main.js', 'tincanctl'],
];

// CommonJS dependencies inside an ES module bundle still call require() for Node's built-ins.
const REQUIRE_SHIM = "import { createRequire as __tincanCreateRequire } from 'node:module'; const require = __tincanCreateRequire(import.meta.url);";

const BUILTINS = new Set(builtinModules);
/**
 * `import … from 'node:crypto'` in an ES module goes through Node's ES module facade of the built-in,
 * which reads every export once, lazy getters included: `crypto.webcrypto`, `fs.promises`… load
 * modules that the program never uses (~1.6 MB resident for the ones TinCan imports). The bundle
 * takes each built-in with require() instead (the same object, its lazy getters left alone).
 */
const builtinsByRequire = {
  name: 'builtins-by-require',
  setup(b) {
    b.onResolve({ filter: /^[a-z_:/]+$/ }, (args) => {
      if (args.kind !== 'import-statement') return undefined;
      const name = args.path.replace(/^node:/, '');
      if (!BUILTINS.has(name)) return undefined;
      return { path: name, namespace: 'builtin-by-require' };
    });
    b.onLoad({ filter: /.*/, namespace: 'builtin-by-require' }, (args) => ({
      contents: `module.exports = require(${JSON.stringify(`node:${args.path}`)});`,
      loader: 'js',
    }));
  },
};

/** `@tincan/tun` → `../../../tun/dist/index.js`: a relative import, outside the bundle. */
const nativeByPath = (outdir) => ({
  name: 'native-by-path',
  setup(b) {
    b.onResolve({ filter: /^@tincan\/(tun|watchdog)$/ }, (args) => {
      const target = join(ROOT, 'packages', args.path.slice('@tincan/'.length), 'dist', 'index.js');
      return { path: relative(outdir, target), external: true };
    });
  },
});

await Promise.all(PROGRAMS.map(([pkg, entry, name]) => build({
  entryPoints: [join(ROOT, 'packages', pkg, 'dist', entry)],
  outfile: join(ROOT, 'packages', pkg, 'dist', 'bin', `${name}.js`),
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  external: ['node-datachannel'],
  plugins: [builtinsByRequire, nativeByPath(join(ROOT, 'packages', pkg, 'dist', 'bin'))],
  define: { __TINCAN_VERSION__: JSON.stringify(VERSION) },
  banner: { js: REQUIRE_SHIM },
  // Whitespace and syntax only: function names stay readable in stack traces.
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: 'linked',
  logLevel: 'warning',
})));

// The commands in node_modules/.bin (npm links workspace bins at `npm ci`, before they exist): so
// `npx tincanctl …` and npm scripts find them in a checkout, as after `npm install -g`.
const BIN = join(ROOT, 'node_modules', '.bin');
mkdirSync(BIN, { recursive: true });
for (const [pkg, , name] of PROGRAMS) {
  if (name === 'lane-main') continue;
  const target = join(ROOT, 'packages', pkg, 'dist', 'bin', `${name}.js`);
  chmodSync(target, 0o755);
  rmSync(join(BIN, name), { force: true });
  symlinkSync(relative(BIN, target), join(BIN, name));
}
