import { defineConfig } from 'vitest/config';

// Two projects: "unit" (per-package tests, fast, parallel) and "lab" (end-to-end tests that start
// real processes inside the network-namespace lab; one lab per run, files run one after another).
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          // and the benchmark scripts' own helpers (plain ESM, like the scripts)
          include: ['packages/*/test/**/*.test.ts', 'scripts/**/*.test.mjs'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'lab',
          include: ['test/**/*.test.ts'],
          globalSetup: ['test/harness/global-setup.ts'],
          setupFiles: ['test/harness/stray-processes.ts'],
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
