import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SocialVpnState, Uid } from '@tincan/protocol';
import { ManualClock } from '@tincan/controller';
import { captureLogger } from '../../controller/test/test-helpers.js';
import { FakeDatapath, FakeNet, type FakeRosterItem } from '../../controller/test/fake-datapath.js';
import { STATE_FILE, SocialVpnController, type SocialVpnTuning } from '../src/controller.js';
import type { SocialVpnSettings } from '../src/config.js';

export { FakeDatapath, FakeNet };
export { captureLogger, unmappedFrame, logged } from '../../controller/test/test-helpers.js';

export const DOMAIN = 'social.test';

export function jidOf(user: string): string {
  return `${user}@${DOMAIN}`;
}

const stateDirs: string[] = [];

/** A fresh state directory; removeStateDirs() removes them all. */
function tempStateDir(user: string): string {
  const dir = mkdtempSync(join(tmpdir(), `socialvpn-${user}-`));
  stateDirs.push(dir);
  return dir;
}

/**
 * Removes every state directory settings() made: call it in the test file's afterAll. Not at the end
 * of each test: a controller the test left running may still finish a state-file write (which makes
 * the directory again).
 */
export function removeStateDirs(): void {
  for (const dir of stateDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

export function settings(user: string, over: Partial<SocialVpnSettings> = {}): SocialVpnSettings {
  return {
    xmpp: { host: 'xmpp.test', port: 5222, jid: jidOf(user), password: 'pw', mechanism: 'PLAIN' },
    subnet: '172.31.0.0/16',
    vnic: { name: 'tincan0', mtu: 1280 },
    stun: [],
    turn: [],
    max_links: 32,
    idle_timeout_s: 300,
    social_profile: { proactive_links: 4, min_score: 1.5, half_life_days: 7, active_day_packets: 50 },
    own_devices: true,
    datapath: '127.0.0.1:5801',
    state_dir: tempStateDir(user),
    log_level: 'info',
    ...over,
  };
}

export interface SocialNode {
  user: string;
  /** The bare JID. */
  jid: string;
  config: SocialVpnSettings;
  dp: FakeDatapath;
  ctl: SocialVpnController;
  uid: Uid;
  lines: Record<string, unknown>[];
  /** Starts a new controller on the same datapath and state directory (a controller restart). */
  restartController(): Promise<SocialVpnController>;
}

export interface NodeOptions {
  /** Contacts and subscriptions: { bob: 'both', carol: 'to' }. */
  roster?: Record<string, FakeRosterItem['subscription']>;
  config?: Partial<SocialVpnSettings>;
  tuning?: Partial<SocialVpnTuning>;
  /** The XMPP resource (default "tincan"). */
  resource?: string;
  /** Do not start the controller. */
  noStart?: boolean;
  /** A state file to start from (written before the controller is made). */
  state?: SocialVpnState;
}

export function makeRoster(r: Record<string, FakeRosterItem['subscription']>): FakeRosterItem[] {
  return Object.entries(r).map(([u, subscription]) => ({ jid: jidOf(u), subscription }));
}

export async function socialNode(net: FakeNet, clock: ManualClock, user: string, o: NodeOptions = {}): Promise<SocialNode> {
  const config = settings(user, o.config);
  const dp = new FakeDatapath(net, `${jidOf(user)}/${o.resource ?? 'tincan'}`);
  dp.roster = makeRoster(o.roster ?? {});
  if (o.state) writeFileSync(join(config.state_dir, STATE_FILE), JSON.stringify(o.state));
  const { logger, lines } = captureLogger();
  const make = () =>
    new SocialVpnController({
      config,
      connect: async () => dp.port(),
      logger,
      clock,
      tuning: o.tuning ?? {},
      statusFile: null,
      random: () => 0.5,
    });
  const ctl = make();
  const n: SocialNode = {
    user,
    jid: jidOf(user),
    config,
    dp,
    ctl,
    uid: ctl.uid,
    lines,
    restartController: async () => {
      await n.ctl.stop();
      n.ctl = make();
      await n.ctl.start();
      return n.ctl;
    },
  };
  if (!o.noStart) await n.ctl.start();
  return n;
}
