#!/usr/bin/env node
import { groupVpnConfigJsonSchema } from '@tincan/protocol';
import { StateFileError, runController } from '@tincan/controller';
import { loadGroupVpnConfig } from './config.js';
import { GROUPVPN_LIVE_KEYS, GroupVpnController } from './controller.js';

await runController({
  name: 'tincan-groupvpn',
  description: 'TinCan GroupVPN controller: one virtual subnet for a group, members admitted by roster, network id and key (pinned, or a membership CA)',
  schema: groupVpnConfigJsonSchema,
  load: loadGroupVpnConfig,
  summary: (config) => `network ${config.network_id}, ${config.vnic.ip4}, ${config.link_policy}`,
  create: (config, logger, connect) => new GroupVpnController({ config, logger, connect }),
  // An unusable key pins file (groupvpn-pins.json): restarting will not fix it (exit 2, like a bad config).
  setupExitCode: (err) => (err instanceof StateFileError ? 2 : 1),
  liveKeys: GROUPVPN_LIVE_KEYS,
});
