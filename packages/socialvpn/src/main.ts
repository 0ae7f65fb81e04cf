#!/usr/bin/env node
import { socialVpnConfigJsonSchema } from '@tincan/protocol';
import { StateFileError, runController } from '@tincan/controller';
import { loadSocialVpnConfig } from './config.js';
import { SocialVpnController } from './controller.js';

await runController({
  name: 'tincan-socialvpn',
  description: 'TinCan SocialVPN controller: your XMPP friends\' devices mapped into your own private subnet',
  schema: socialVpnConfigJsonSchema,
  load: loadSocialVpnConfig,
  summary: (config) => `subnet ${config.subnet}, ${config.xmpp.jid}`,
  create: (config, logger, connect) => new SocialVpnController({ config, logger, connect }),
  // A state file that cannot be used: restarting will not fix it (exit 2, like a bad config).
  setupExitCode: (err) => (err instanceof StateFileError ? 2 : 1),
});
