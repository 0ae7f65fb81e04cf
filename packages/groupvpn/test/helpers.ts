import { RoutingConfig, uidFromIp4, type Uid } from '@tincan/protocol';
import { ManualClock, type DatapathSupervisor } from '@tincan/controller';
import { captureLogger } from '../../controller/test/test-helpers.js';
import { FakeDatapath, FakeNet } from '../../controller/test/fake-datapath.js';
import { GroupVpnController, type GroupVpnTuning } from '../src/controller.js';
import type { GroupVpnSettings } from '../src/config.js';

export { FakeDatapath, FakeNet };
export { captureLogger, unmappedFrame, logged as warnings } from '../../controller/test/test-helpers.js';

export function settings(ip4: string, over: Partial<GroupVpnSettings> = {}): GroupVpnSettings {
  return {
    network_id: 'lab',
    xmpp: { host: 'xmpp.test', port: 5222, jid: `${ip4.replace(/\./g, '-')}@vpn.test`, password: 'pw', mechanism: 'PLAIN' },
    vnic: { name: 'tincan0', ip4: `${ip4}/16`, mtu: 1280 },
    stun: [],
    turn: [],
    link_policy: 'on-demand',
    max_links: 32,
    idle_timeout_s: 300,
    datapath: '127.0.0.1:5801',
    state_dir: '/nonexistent',
    log_level: 'info',
    // Overlay routing is exercised by the controller-package router tests and the lab (test/routing.test.ts).
    routing: RoutingConfig.parse({ multihop: false }),
    ...over,
  };
}

export interface TestNode {
  ip4: string;
  uid: Uid;
  dp: FakeDatapath;
  ctl: GroupVpnController;
  lines: Record<string, unknown>[];
  /** Starts a new controller on the same datapath (a controller restart). */
  restartController(): Promise<GroupVpnController>;
}

export const FAST: Partial<GroupVpnTuning> = { pollIntervalMs: 5_000 };

export async function node(
  net: FakeNet,
  clock: ManualClock,
  ip4: string,
  over: Partial<GroupVpnSettings> = {},
  tuning: Partial<GroupVpnTuning> = {},
  /** Adjusts the fake datapath before the controller starts. */
  setupDatapath?: (dp: FakeDatapath) => void,
): Promise<TestNode> {
  const config = settings(ip4, over);
  const dp = new FakeDatapath(net, `${config.xmpp.jid}/tincan`);
  setupDatapath?.(dp);
  const { logger, lines } = captureLogger();
  const make = () =>
    new GroupVpnController({
      config,
      connect: async () => dp.port(),
      logger,
      clock,
      tuning: { ...FAST, ...tuning },
      statusFile: null,
      trustDir: null,
      random: () => 0.5,
    });
  const n: TestNode = {
    ip4,
    uid: uidFromIp4(ip4),
    dp,
    ctl: make(),
    lines,
    restartController: async () => {
      await n.ctl.stop();
      n.ctl = make();
      await n.ctl.start();
      return n.ctl;
    },
  };
  await n.ctl.start();
  return n;
}

/** A supervisor stand-in that records the datapath calls made through it and answers {}. */
export function recordingSupervisor(): { supervisor: DatapathSupervisor; calls: { m: string; params: Record<string, unknown> }[] } {
  const calls: { m: string; params: Record<string, unknown> }[] = [];
  const supervisor = {
    call: async (m: string, params: Record<string, unknown>) => {
      calls.push({ m, params });
      return {};
    },
  } as unknown as DatapathSupervisor;
  return { supervisor, calls };
}
