// The lab's namespace names. scripts/lab prefixes every namespace with TINCAN_LAB_PREFIX (default
// tc-); with another prefix and TINCAN_LAB_DIR a second lab (and its test run) works beside the first.

export const NS_PREFIX = process.env.TINCAN_LAB_PREFIX ?? 'tc-';

/** The namespace of lab host `host` (h1, pub, nat1, …). */
export function ns(host: string): string {
  return `${NS_PREFIX}${host}`;
}
