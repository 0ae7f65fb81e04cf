// usrsctpSysctl (native/usrsctp_sysctl.c): its input checks, and its answers when node-datachannel's addon
// is not there or has no such setting. Setting usrsctp inside the real node-datachannel addon is tested in
// @tincan/datapath (test/sctp-ack.test.ts), which depends on it, and end to end in test/sctp-ack.test.ts.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { usrsctpSysctl } from '../src/index.js';

const native = createRequire(import.meta.url)('../build/Release/tincan_tun.node') as {
  usrsctpSysctl: { get(marker: string, name: string): number | null; set(marker: string, name: string, v: number): boolean };
};

describe('usrsctpSysctl', () => {
  it('answers null / false while node-datachannel is not loaded in this process', () => {
    expect(usrsctpSysctl.get('sack_freq_default')).toBeNull();
    expect(usrsctpSysctl.set('sack_freq_default', 8)).toBe(false);
  });

  it('answers null / false for a loaded module without the setting (this addon itself)', () => {
    expect(native.usrsctpSysctl.get('tincan_tun', 'sack_freq_default')).toBeNull();
    expect(native.usrsctpSysctl.set('tincan_tun', 'sack_freq_default', 8)).toBe(false);
  });

  it('refuses names that are not a plain identifier and values that are not uint32', () => {
    for (const bad of ['', 'a;b', '../x', 'sack freq', 'x'.repeat(64)]) {
      expect(() => usrsctpSysctl.get(bad), JSON.stringify(bad)).toThrow(TypeError);
    }
    expect(() => usrsctpSysctl.get(7 as unknown as string)).toThrow(TypeError);
    for (const bad of [-1, 1.5, 2 ** 32, Number.NaN]) {
      expect(() => usrsctpSysctl.set('sack_freq_default', bad), String(bad)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    }
    expect(() => native.usrsctpSysctl.get('', 'sack_freq_default')).toThrow(TypeError);
    expect(() => native.usrsctpSysctl.set('node_datachannel', 'sack_freq_default', '8' as unknown as number)).toThrow(TypeError);
  });
});
