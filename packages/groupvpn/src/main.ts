#!/usr/bin/env node
import { groupVpnConfigJsonSchema } from '@tincan/protocol';
import { runController } from '@tincan/controller';
import { loadGroupVpnConfig } from './config.js';
import { GROUPVPN_LIVE_KEYS, GroupVpnController } from './controller.js';

await runController({
  name: 'tincan-groupvpn',
  description: 'TinCan GroupVPN controller: one virtual subnet for a group, members admitted by network id over XMPP',
  schema: groupVpnConfigJsonSchema,
  load: loadGroupVpnConfig,
  summary: (config) => `network ${config.network_id}, ${config.vnic.ip4}, ${config.link_policy}`,
  create: (config, logger, connect) => new GroupVpnController({ config, logger, connect }),
  liveKeys: GROUPVPN_LIVE_KEYS,
});
