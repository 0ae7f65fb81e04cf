export {
  GroupVpnController,
  DEFAULT_TUNING,
  STATUS_FILE,
  type GroupVpnControllerOptions,
  type GroupVpnCounters,
  type GroupVpnPeerStatus,
  type GroupVpnStatus,
  type GroupVpnTuning,
} from './controller.js';
export { loadGroupVpnConfig, parseGroupVpnConfig, type GroupVpnSettings } from './config.js';
