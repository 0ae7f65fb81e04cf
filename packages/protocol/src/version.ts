/** Replaced by the version of the root package.json when scripts/bundle.mjs builds a program. */
declare const __TINCAN_VERSION__: string | undefined;

/** The TinCan release (`--version` of every command); "0.0.0-dev" outside a bundled program. */
export const TINCAN_VERSION: string = typeof __TINCAN_VERSION__ === 'string' ? __TINCAN_VERSION__ : '0.0.0-dev';
