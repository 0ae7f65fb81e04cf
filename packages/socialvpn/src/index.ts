export {
  SocialVpnController,
  DEFAULT_TUNING,
  STATE_FILE,
  STATUS_FILE,
  type SocialVpnControllerOptions,
  type SocialVpnCounters,
  type SocialVpnMappingStatus,
  type SocialVpnStatus,
  type SocialVpnTuning,
} from './controller.js';
export { loadSocialVpnConfig, parseSocialVpnConfig, type SocialVpnSettings } from './config.js';
export { Roster, bareJid, type Subscription } from './roster.js';
